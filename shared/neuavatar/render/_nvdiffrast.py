"""The GPU backend: nvdiffrast (PyPI ``diffrp-nvdiffrast``, import name ``nvdiffrast.torch``).

nvdiffrast compiles its CUDA plugin on first use (nvcc + ninja, ~30 s) into
``~/.cache/torch_extensions/<py>_<cu>/nvdiffrast_plugin_*``. With recent torch the compiled
module is not importable until that folder is on ``sys.path``: the loader below triggers the build,
adds the folder and loads again (the second build is a no-op).

Inputs arrive checked by ``neuavatar.render.rasterize``; this module only converts them to what
the plugin needs (float32, contiguous, int32 faces).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "load", "rasterize", "interpolate", "texture", "antialias"]

_lock = threading.Lock()
_module = None
_contexts: dict[int, object] = {}  # CUDA device index -> RasterizeCudaContext


def available() -> bool:
    """True when CUDA is present and ``nvdiffrast.torch`` imports (the plugin may still need building)."""
    if not torch.cuda.is_available():
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def load():
    """``nvdiffrast.torch`` with its CUDA plugin built and loaded.

    Raises:
        RuntimeError: nvdiffrast is not installed, or its plugin does not build or load.
    """
    global _module
    with _lock:
        if _module is not None:
            return _module
        try:
            import nvdiffrast.torch as dr
            from nvdiffrast.torch import ops
        except ImportError as e:
            raise RuntimeError("the nvdiffrast backend needs the `diffrp-nvdiffrast` package "
                               "(pip install diffrp-nvdiffrast; it compiles with nvcc and ninja on first use)") from e
        try:
            ops._get_plugin()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"building nvdiffrast's CUDA plugin failed (it needs nvcc, ninja and a CUDA "
                               f"toolkit torch can find): {e}") from e
        except ImportError:
            # Built but not importable: put the build folders on sys.path and load again.
            folders = _build_folders(ops)
            for folder in reversed(folders):  # this version's folder ends up first on sys.path
                if str(folder) not in sys.path:
                    sys.path.insert(0, str(folder))
            try:
                ops._get_plugin()
            except ImportError as e:
                raise RuntimeError(f"nvdiffrast's CUDA plugin was not importable after building; "
                                   f"looked in {[str(f) for f in folders]}") from e
        _module = dr
        return dr


def _build_folders(ops) -> list[Path]:
    """Folders where torch builds nvdiffrast's plugin: this version's first, then any other, newest first."""
    import nvdiffrast
    from torch.utils import cpp_extension

    name = "nvdiffrast_plugin"  # the name older releases build under
    if hasattr(ops, "sanitize_name"):  # newer ones add the versions, as ops._get_plugin does
        name = ops.sanitize_name(f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    # Private, but it is what nvdiffrast itself calls (it honours TORCH_EXTENSIONS_DIR).
    own = Path(cpp_extension._get_build_directory(name, False))
    others = [f for f in own.parent.glob("nvdiffrast_plugin*") if f.is_dir() and f != own]
    return [own] + sorted(others, key=lambda f: f.stat().st_mtime, reverse=True)


def _context(device: torch.device):
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _contexts:
        _contexts[index] = load().RasterizeCudaContext(device=index)
    return _contexts[index]


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()


def _i32(faces: Tensor, device: torch.device) -> Tensor:
    return faces.to(device=device, dtype=torch.int32).contiguous()


def rasterize(clip: Tensor, faces: Tensor, resolution: tuple[int, int]) -> Tensor:
    dr = load()
    # grad_db=False: the image-space derivatives (second output) are not used, so skip their gradients.
    rast, _ = dr.rasterize(_context(clip.device), _f32(clip), _i32(faces, clip.device), tuple(resolution),
                           grad_db=False)
    return rast


def interpolate(attributes: Tensor, rast: Tensor, faces: Tensor) -> Tensor:
    out, _ = load().interpolate(_f32(attributes), _f32(rast), _i32(faces, rast.device))
    return out


def texture(image: Tensor, uv: Tensor, filter: str, boundary: str) -> Tensor:
    return load().texture(_f32(image), _f32(uv), filter_mode=filter, boundary_mode=boundary)


def antialias(color: Tensor, rast: Tensor, clip: Tensor, faces: Tensor) -> Tensor:
    return load().antialias(_f32(color), _f32(rast), _f32(clip), _i32(faces, clip.device))
