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

import importlib
from typing import TYPE_CHECKING

# Exported names load on first use, so that importing one submodule (as worker processes do) does
# not import every stage.
_EXPORTS = {
    "Dataset": "neuavatar.dataset",
    "NeuAvatarError": "neuavatar.errors",
    "InputError": "neuavatar.errors",
    "ConfigError": "neuavatar.errors",
    "DatasetError": "neuavatar.errors",
    "OutputExistsError": "neuavatar.errors",
    "PreprocessConfig": "neuavatar.preprocess",
    "PreprocessResult": "neuavatar.preprocess",
    "Preprocessor": "neuavatar.preprocess",
    "preprocess_video": "neuavatar.preprocess",
}
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
    "Preprocessor",
    "preprocess_video",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'neuavatar' has no attribute {name!r}")


if TYPE_CHECKING:
    from neuavatar.dataset import Dataset
    from neuavatar.errors import ConfigError, DatasetError, InputError, NeuAvatarError, OutputExistsError
    from neuavatar.preprocess import PreprocessConfig, Preprocessor, PreprocessResult, preprocess_video
