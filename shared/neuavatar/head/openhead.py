"""The built-in open head model ("openhead"): NeuAvatar's default, no download, no licence gate.

Made from MakeHuman's CC0 assets by ``neuavatar.head.openhead_build`` (and its landmark embedding
by ``neuavatar.head.openhead_register``); the arrays ship in ``head/data/openhead.npz``. See
``docs/head_model.md``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from neuavatar.errors import ConfigError
from neuavatar.head.model import HeadModel, LandmarkEmbedding

__all__ = ["OpenHead", "load_openhead", "OPENHEAD_FILE"]

OPENHEAD_FILE = "openhead.npz"


@lru_cache(maxsize=2)
def _arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class OpenHead(HeadModel):
    """The built-in head: 4,851 vertices (face, cranium, ears, neck, eyeballs, teeth, tongue), up to
    100 identity components (PCA of MakeHuman's head targets and macro axes, coefficients ~ N(0, 1)),
    49 expressions (ARKit face units without the jaw's three), articulated jaw, neck and eyes."""

    name = "openhead"


def load_openhead(num_shape: int = 100, num_expression: int | None = None, path: Path | None = None) -> OpenHead:
    """Load the built-in head model.

    Args:
        num_shape: identity components to keep (the first ones explain the most).
        num_expression: expression units to keep (all 49 by default, in ``expression_names`` order).
        path: an alternative ``openhead.npz`` (for development).

    Raises:
        ConfigError: for more components than the model has, or a model file without its landmark
            embedding (run ``python -m neuavatar.head.openhead_register``).
    """
    path = Path(path) if path is not None else resources.files("neuavatar.head") / "data" / OPENHEAD_FILE
    z = _arrays(str(path))
    if "landmark_faces" not in z:
        raise ConfigError(f"{path} has no landmark embedding; run `python -m neuavatar.head.openhead_register`")
    s_max, e_max = z["shape_basis"].shape[2], z["expression_basis"].shape[2]
    num_expression = e_max if num_expression is None else num_expression
    if not (0 <= num_shape <= s_max and 0 <= num_expression <= e_max):
        raise ConfigError(f"the open head model has {s_max} identity and {e_max} expression components; asked for "
                          f"{num_shape} and {num_expression}")
    t = lambda k: torch.from_numpy(np.ascontiguousarray(z[k]))  # noqa: E731
    regions = {k[len("region_"):]: t(k) for k in z if k.startswith("region_")}
    return OpenHead(
        template=t("template"), faces=t("faces").long(), uvs=t("uvs"), face_uvs=t("face_uvs").long(),
        shape_basis=t("shape_basis")[..., :num_shape], expression_basis=t("expression_basis")[..., :num_expression],
        joint_regressor=t("joint_regressor"), lbs_weights=t("lbs_weights"),
        landmarks_mediapipe=LandmarkEmbedding(t("landmark_faces").long(), t("landmark_barycentric")),
        regions=regions, expression_names=tuple(str(n) for n in z["expression_names"][:num_expression]),
    )
