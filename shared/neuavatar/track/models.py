"""Which head model a tracker uses, from its options."""

from __future__ import annotations

from pathlib import Path

from neuavatar.errors import ConfigError
from neuavatar.head.model import HeadModel
from neuavatar.track.options import TrackerOptions

__all__ = ["load_head_model"]


def load_head_model(options: TrackerOptions) -> HeadModel:
    """The head model ``options.head_model`` names: ``openhead`` or a FLAME pickle's path.

    Raises:
        ConfigError: an unknown name, or FLAME without the landmark embedding it needs.
        InputError: a FLAME file that cannot be used (see ``neuavatar.head.flame``).
    """
    num_expression = options.num_expression or None
    if options.head_model == "openhead":
        from neuavatar.head.openhead import load_openhead

        return load_openhead(num_shape=options.num_shape, num_expression=num_expression)
    path = Path(options.head_model)
    if path.suffix != ".pkl":
        raise ConfigError(f"head_model must be 'openhead' or the path of a FLAME .pkl file, got {options.head_model!r}")
    from neuavatar.head.flame import load_flame

    return load_flame(path, num_shape=options.num_shape, num_expression=num_expression or 100,
                      landmarks_npz=Path(options.flame_landmarks) if options.flame_landmarks else None)
