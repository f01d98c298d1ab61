"""The avatar (a refined head mesh dressed in bound Gaussians) and its staged training."""

from neuavatar.avatar.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from neuavatar.avatar.config import STAGES, AvatarConfig, schedule_value
from neuavatar.avatar.model import Avatar, AvatarImages
from neuavatar.avatar.pipeline import TrainResult, load_avatar, train_avatar

__all__ = ["Avatar", "AvatarImages", "AvatarConfig", "STAGES", "schedule_value", "train_avatar", "TrainResult",
           "load_avatar", "load_checkpoint", "save_checkpoint", "CHECKPOINT_VERSION"]
