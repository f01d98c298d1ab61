"""Build hook: generate the gRPC modules from proto/ at install time; everything else about the
package is in pyproject.toml.

The generated modules are build outputs, never checked in (.gitignore), so every install must make
them, an editable one included. ``build_proto`` is the first sub-command of ``build``, and both
install paths run build's sub-commands through ``run_command`` (so a failure stops the install
instead of being swallowed, as a failing custom ``build_py`` would be in editable mode):

- a wheel (``pip install .``, ``python -m build``): bdist_wheel -> build -> build_proto, build_py;
  the modules are generated into the source tree and build_py copies them like any module;
- ``pip install -e .``: editable_wheel runs build's sub-commands too; the modules stay in the tree
  (shared/neuavatar/api/_proto/), which the editable install points at.

An sdist carries the generated modules (sdist runs build_proto first), so a wheel built from it
needs no proto/. By hand: ``python setup.py build_proto``. grpcio-tools is a build requirement
(pyproject.toml [build-system]); its protoc writes code for the protobuf runtime pinned there.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "shared" / "neuavatar" / "api" / "_proto"
OUT_PACKAGE = "neuavatar.api._proto"
GENERATED = re.compile(r".*_pb2(_grpc)?\.pyi?$")


def _postprocess(text: str, name: str, source: str, packages: set[str]) -> str:
    """Make one generated file fit its place: imports of sibling modules become relative (protoc
    names them by the .proto's path, ``neuavatar.v1``, which is not where they live), the file
    says what it is and where it came from, the linter skips it, and it declares ``__all__``."""
    for package in packages:
        text = re.sub(rf"^from {re.escape(package)} import ", "from . import ", text, flags=re.M)
        text = re.sub(rf"'{re.escape(package)}\.(\w+_pb2)'", rf"'{OUT_PACKAGE}.\1'", text)  # classes' __module__
    header = f"# Generated from proto/{source} by grpcio-tools at install (setup.py build_proto). Do not edit.\n# ruff: noqa\n"
    if name.endswith("_pb2.py"):
        text += '\n__all__ = ["DESCRIPTOR", *DESCRIPTOR.message_types_by_name, *DESCRIPTOR.enum_types_by_name]\n'
    elif name.endswith("_grpc.py"):
        names = re.findall(r"^(?:class|def) (\w+)", text, flags=re.M)
        text += f"\n__all__ = {names!r}\n"
    return header + text


def generate_proto(proto_dir: Path = PROTO_DIR, out_dir: Path = OUT_DIR) -> list[Path]:
    """Compile every .proto under ``proto_dir`` into ``out_dir`` (flat: message modules, gRPC
    modules and type stubs); remove generated files whose .proto is gone. Returns the outputs.

    Raises:
        RuntimeError: grpcio-tools is missing, protoc fails, or two protos would share a module name.
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:
        raise RuntimeError("generating the gRPC code needs grpcio-tools (a build requirement in pyproject.toml): "
                           "pip install grpcio-tools, or install without --no-build-isolation") from e
    protos = sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))
    packages = {str(Path(p).parent).replace("/", ".") for p in protos}
    outputs: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="neuavatar-proto-") as tmp:
        well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
        args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *protos]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(protos)} (its messages are above)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for proto in protos:
            for made in sorted((Path(tmp) / proto).parent.glob(Path(proto).stem + "_pb2*")):
                target = out_dir / made.name
                if target in outputs:
                    raise RuntimeError(f"two .proto files generate {made.name}; give them distinct names")
                text = _postprocess(made.read_text(), made.name, proto, packages)
                if not target.is_file() or target.read_text() != text:  # leave unchanged files alone
                    target.write_text(text)
                outputs.append(target)
    for stale in out_dir.iterdir():
        if GENERATED.match(stale.name) and stale not in outputs:
            stale.unlink()
    return outputs


class build_proto(Command):
    """``setup.py build_proto``: generate neuavatar/api/_proto from proto/."""

    description = "generate the Python gRPC modules from proto/*.proto (grpcio-tools)"
    user_options: list = []
    editable_mode = False  # set by editable_wheel; the outputs land in the source tree either way

    def initialize_options(self) -> None:
        self.outputs: list[Path] = []

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        if not PROTO_DIR.is_dir():  # building from an sdist, which carries the generated modules
            if not any(GENERATED.match(p.name) for p in OUT_DIR.glob("*_pb2*")):
                raise RuntimeError(f"neither {PROTO_DIR} nor generated modules in {OUT_DIR}: cannot build the API")
            return
        self.outputs = generate_proto()
        self.announce(f"generated {len(self.outputs)} gRPC modules in {OUT_DIR.relative_to(ROOT)}", level=2)

    def get_outputs(self) -> list[str]:
        return []  # written into the package's source; build_py (or the editable install) takes them from there

    def get_output_mapping(self) -> dict[str, str]:
        return {}


class build_with_proto(build):
    sub_commands = [("build_proto", None), *build.sub_commands]


class sdist_with_proto(sdist):
    def run(self) -> None:
        self.run_command("build_proto")
        super().run()


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import generate_proto from it
    setup(cmdclass={"build": build_with_proto, "build_proto": build_proto, "sdist": sdist_with_proto})
