"""Compile the CUDA extensions into a GPU image at build time, then prove they load without a compiler.

``python build_extensions.py build`` (in the CUDA devel stage, no GPU needed): compiles
nvdiffrast's plugin into ``$TORCH_EXTENSIONS_DIR`` and checks that gsplat, installed from its
source release, carries its compiled kernels (``gsplat.csrc``). ``TORCH_CUDA_ARCH_LIST`` names the
GPU architectures to compile for (without it torch would ask a GPU, and there is none at build time).

``python build_extensions.py check`` (after the package is installed): loads both the way the
services do (``neuavatar.render``'s loaders), with ``CUDA_HOME`` pointing nowhere and no nvcc on
PATH, so that a build that would recompile at run time fails here instead of at a first request.
"""

import os
import sys
from pathlib import Path


def build() -> None:
    import torch  # noqa: F401  (before the plugin: it links against torch's libraries)
    from nvdiffrast.torch import ops

    try:
        ops._get_plugin()  # compiles with nvcc + ninja
    except ImportError:
        pass  # compiled, but importable only once its folder is on sys.path: the service's loader does that
    root = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    built = sorted(root.glob("nvdiffrast_plugin*/*.so"))
    if not built:
        sys.exit(f"nvdiffrast's plugin was not compiled into {root}")
    # Only the module is loaded at run time: the objects and ninja files (~30 MB) stay out of the image.
    for path in root.glob("nvdiffrast_plugin*/*"):
        if path.suffix != ".so":
            path.unlink()
    from gsplat import csrc  # noqa: F401  (ImportError: gsplat was installed from a wheel without kernels)

    print("built:", *built, "and gsplat.csrc", sep="\n  ")


def check() -> None:
    if os.environ.get("CUDA_HOME") != "/nonexistent":
        sys.exit("run `check` with CUDA_HOME=/nonexistent, so that any attempt to compile fails")
    from neuavatar.render import _nvdiffrast
    from neuavatar.render.gaussians import _load_gsplat

    _nvdiffrast.load()
    _load_gsplat()
    print("nvdiffrast and gsplat load without compiling")


if __name__ == "__main__":
    {"build": build, "check": check}[sys.argv[1]]()
