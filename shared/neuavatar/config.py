"""Typed configuration: dataclasses loaded from a file, the environment and flags, in that order.

Each component owns one config dataclass (``PreprocessConfig``, ...). This module turns plain data
into those dataclasses with type checks and readable errors, and back into plain data so that the
resolved config can be saved beside every output.

Precedence, lowest first: the dataclass defaults, a preset, a TOML or JSON file, environment
variables (``NEUAVATAR_<SECTION>_<FIELD>``, e.g. ``NEUAVATAR_PREPROCESS_SIZE=256``), command-line
flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from neuavatar.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_file", "env_overrides", "merge", "resolve_config", "save_config",
           "resolve_device"]

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready data: paths become strings, tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, checking every value against its field's type.

    Raises:
        ConfigError: for an unknown key or a value of the wrong type; the message names the key
            and ``where`` the value came from.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid ones: {', '.join(fields)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ validation
        raise ConfigError(f"{where}: {e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where=where)
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (``.json``) settings file into a dict.

    Raises:
        ConfigError: if the file is missing or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return data


def env_overrides(cls: type, prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings for ``cls`` found in environment variables named ``prefix + FIELD`` (upper case).

    Nested dataclass fields use a further ``_`` level: ``NEUAVATAR_RUN_PREPROCESS_SIZE``.
    """
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name.upper()
        if dataclasses.is_dataclass(hints[f.name]):
            nested = env_overrides(hints[f.name], key + "_", environ)
            if nested:
                found[f.name] = nested
        elif key in environ:
            raw = environ[key]
            origin = get_origin(hints[f.name])
            found[f.name] = json.loads(raw) if origin is tuple and raw.startswith("[") else raw
    return found


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values in ``override`` win, nested tables merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_config(cls: type[T], *, base: T | None = None, file: Path | None = None, env_prefix: str | None = None,
                   environ: Mapping[str, str] | None = None) -> T:
    """``cls`` from its defaults (or ``base``), then ``file``, then the environment.

    Flags are applied afterwards by the CLI, which uses the result as its defaults.
    """
    data = to_dict(base if base is not None else cls())
    if file is not None:
        data = merge(data, load_file(file))
    if env_prefix is not None:
        data = merge(data, env_overrides(cls, env_prefix, environ))
    return from_dict(cls, data, where=str(file) if file else cls.__name__)


def save_config(cfg: Any, path: Path) -> None:
    """Write the resolved config as JSON (readable by :func:`load_file`)."""
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def resolve_device(name: str):
    """The ``torch.device`` a ``device`` setting names: ``auto`` takes the GPU when there is one.

    Raises:
        ConfigError: ``cuda`` was asked for and no CUDA GPU is available.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
    return torch.device(name)
