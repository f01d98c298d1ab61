"""The preprocess stage: video -> dataset (crops, landmarks, alpha, semantic labels, split)."""

from neuavatar.preprocess.options import PreprocessConfig
from neuavatar.preprocess.pipeline import PreprocessResult, preprocess_video

__all__ = ["PreprocessConfig", "PreprocessResult", "preprocess_video"]
