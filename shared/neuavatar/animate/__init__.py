"""Using a trained avatar: manual control, video-to-video reenactment and live streaming."""

from neuavatar.animate.controls import RANGES, Controls
from neuavatar.animate.renderer import PARAM_SIZES, AvatarRenderer

__all__ = ["AvatarRenderer", "Controls", "RANGES", "PARAM_SIZES"]
