"""NeuAvatar: animatable neural head avatars from a monocular video.

Shape letters used in docstrings and comments across the package:

    B  batch            T  frames            V  vertices          F  faces (triangles)
    N  Gaussians        C  channels          H, W  image height and width in pixels
    S  side of a square crop in pixels       L  landmarks (478 MediaPipe or 68 iBUG)

Coordinates in images are continuous pixel coordinates: the centre of pixel (row i, column j)
is at (x, y) = (j + 0.5, i + 0.5).

The services and the CLI import only the names exported here.
"""

__version__ = "0.1.0"

from neuavatar.dataset import Dataset
from neuavatar.errors import ConfigError, DatasetError, InputError, NeuAvatarError, OutputExistsError
from neuavatar.preprocess import PreprocessConfig, PreprocessResult, preprocess_video

__all__ = [
    "__version__",
    "Dataset",
    "NeuAvatarError",
    "InputError",
    "ConfigError",
    "DatasetError",
    "OutputExistsError",
    "PreprocessConfig",
    "PreprocessResult",
    "preprocess_video",
]
