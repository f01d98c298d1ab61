"""Video reading: real clips in several codecs and containers, rotation, and every broken-input path."""

from __future__ import annotations

import av
import numpy as np
import pytest

from neuavatar.errors import InputError
from neuavatar.video import probe_video, read_frames

from conftest import ANCHOR, frames_of, shared_video, write_video


def test_probe_real_clip():
    info = probe_video(shared_video(ANCHOR))
    assert (info.width, info.height) == (512, 512)
    assert info.codec == "h264" and info.rotation_deg == 0
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 500


@pytest.mark.parametrize(
    "suffix,codec,options",
    [("mp4", "libx264", {}), ("mp4", "libx265", {"x265-params": "log-level=error"}), ("webm", "libvpx-vp9", {}),
     ("avi", "mpeg4", {}), ("mov", "libx264", {})],
)
def test_codecs_and_containers_decode_to_the_same_pictures(tmp_path, suffix, codec, options):
    frames = frames_of(ANCHOR, 12, 128)
    path = write_video(tmp_path / f"clip.{suffix}", frames, codec=codec, options=options, pix_fmt="yuv420p")
    info = probe_video(path)
    decoded = [f.rgb for f in read_frames(path)]
    assert len(decoded) == 12 and (info.width, info.height) == (128, 128)
    # Lossy codecs: pictures match to within coding noise (mean abs error of a few grey levels).
    err = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, decoded)])
    assert err < 6.0, f"{codec} round trip error {err:.1f}"


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_honoured(tmp_path, rotation):
    upright = frames_of(ANCHOR, 4, 128)
    # Store the frames turned the other way and tag the stream so that players turn them back.
    stored = [np.ascontiguousarray(np.rot90(f, -rotation // 90)) for f in upright]
    path = write_video(tmp_path / "rot.mp4", stored, rotation_deg=rotation)
    info = probe_video(path)
    assert info.rotation_deg == rotation % 360
    out = [f.rgb for f in read_frames(path)]
    err = np.abs(out[0].astype(int) - upright[0].astype(int)).mean()
    assert err < 6.0, "decoded frame is not upright"


def test_non_square_frames_rotated_and_scaled(tmp_path):
    frames = [np.ascontiguousarray(f[:96]) for f in frames_of(ANCHOR, 3, 128)]  # 128 wide, 96 high
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]  # stored 96 wide, 128 high
    path = write_video(tmp_path / "rot.mp4", stored, rotation_deg=90)
    info = probe_video(path)
    assert (info.width, info.height) == (128, 96)
    small = next(read_frames(path, scale_to=(64, 48))).rgb
    assert small.shape == (48, 64, 3)


def test_trimming_and_subsampling(tmp_path):
    path = write_video(tmp_path / "c.mp4", frames_of(ANCHOR, 30, 64), fps=25)
    got = list(read_frames(path, start_seconds=0.4, max_frames=5, step=2))
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [f.source_index for f in got] == [10, 12, 14, 16, 18]
    assert got[0].time_seconds == pytest.approx(0.4)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe_video(tmp_path / "empty.mp4")
    with pytest.raises(InputError, match="directory"):
        probe_video(tmp_path)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n" * 20)
    with pytest.raises(InputError, match="not a readable video"):
        probe_video(path)


def test_audio_only(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in list(s.encode(frame)) + list(s.encode()):
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        probe_video(path)


def test_unsupported_codec(tmp_path):
    good = write_video(tmp_path / "good.mp4", frames_of(ANCHOR, 5, 64))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes().replace(b"avc1", b"zzzz"))  # a sample-entry codec nobody knows
    with pytest.raises(InputError, match="codec"):
        probe_video(bad)


def test_cut_file_without_index(tmp_path):
    good = write_video(tmp_path / "good.mp4", frames_of(ANCHOR, 20, 64))  # index (moov) at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="complete"):
        probe_video(cut)


def test_garbage_inside_the_stream(tmp_path):
    noisy = [np.random.default_rng(i).integers(0, 255, (128, 128, 3), dtype=np.uint8) for i in range(40)]
    good = write_video(tmp_path / "good.mp4", noisy)
    data = bytearray(good.read_bytes())
    mid = len(data) // 3
    data[mid:mid + 4000] = np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt or truncated"):
        list(read_frames(bad))
