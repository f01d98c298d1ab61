"""Parametric head models: one interface (``HeadModel``), several backends.

- ``flame``: FLAME 2020 / 2023 from the user's own licence-gated pickle.
- ``openhead``: the built-in open model, made from MakeHuman's CC0 assets (the default).
"""

from neuavatar.head.model import JOINT_NAMES, HeadModel, HeadOutput, HeadParams, LandmarkEmbedding

__all__ = ["JOINT_NAMES", "HeadModel", "HeadOutput", "HeadParams", "LandmarkEmbedding", "load_flame", "FlameHead",
           "load_openhead", "OpenHead"]


def __getattr__(name: str):
    # The backends load on first use (FLAME's loader needs scipy, the open model its data file).
    if name in ("load_flame", "FlameHead"):
        from neuavatar.head import flame

        return getattr(flame, name)
    if name in ("load_openhead", "OpenHead"):
        from neuavatar.head import openhead

        return getattr(openhead, name)
    raise AttributeError(f"module 'neuavatar.head' has no attribute {name!r}")
