"""The preprocess stage: video -> dataset (crops, landmarks, alpha, semantic labels, split)."""

from neuavatar.preprocess.options import PreprocessConfig

__all__ = ["PreprocessConfig", "PreprocessResult", "Preprocessor", "preprocess_video"]


def __getattr__(name: str):
    # The pipeline (PyAV, the worker pool) loads on first use; worker processes never need it.
    if name in ("PreprocessResult", "Preprocessor", "preprocess_video"):
        from neuavatar.preprocess import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'neuavatar.preprocess' has no attribute {name!r}")
