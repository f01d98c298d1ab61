"""Benchmark of avatar training: held-out quality and time to a servable checkpoint.

For each video: preprocess (512x512, all frames), track, and train with the preset's settings;
report PSNR, SSIM, MS-SSIM and L1 on the held-out last 15% of frames (beside the mean-image
baseline; "refined": the PSNR once the frozen avatar has refined those frames' tracking, with
``eval_refine_steps`` set), training time (dataset + tracking -> checkpoint: loading, the three stages, evaluation
and writing), and peak GPU memory.

    python bench/train.py --videos ../shared/data/videos/train_*.mp4 --sample-seconds 60 --json bench/out/train.json
    python bench/train.py --preset cpu-smoke --frames 375 --videos ...   # a 15 s clip on 2 CPU cores

Goals (issue 4): on one H100 at 512², PSNR >= 29 dB and SSIM >= 0.95 held out; a 1-minute 25 fps
clip trains in <= 2 minutes; peak GPU memory <= 16 GB. On 2 CPU cores, `cpu-smoke` trains a 15 s
clip in under 10 minutes and beats the mean-image baseline clearly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import tomllib
from dataclasses import asdict, replace
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, nargs="*", default=[])
    parser.add_argument("--sample-seconds", type=float, default=0, help="also the bundled sample, this long")
    parser.add_argument("--preset", default="gpu")
    parser.add_argument("--frames", type=int, default=0, help="use only the first N frames of each video")
    parser.add_argument("--steps", type=int, nargs=3, help="override the training steps per stage")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE;...",
                        help="also train each video with these settings changed (TOML values), e.g. "
                             "'no-refine:lr_tracking=[0,0,0]'; repeatable")
    parser.add_argument("--skip-default", action="store_true", help="train only the --variant settings")
    parser.add_argument("--split", choices=("tail", "interleaved"), default="tail",
                        help="which frames validate: the last 15%% (the goal's), or every 7th (a diagnostic: "
                             "how well the avatar does on expressions and poses like its training frames')")
    parser.add_argument("--track-variant", metavar="NAME:KEY=VALUE;...",
                        help="track with these tracker options changed (TOML values) instead of the preset's, "
                             "e.g. 'photo:photometric_steps=[300,300]'")
    parser.add_argument("--work", type=Path, help="keep datasets, trackings and avatars here (default: a temp dir)")
    parser.add_argument("--pictures", type=Path, help="copy each avatar's side_by_side.png here")
    parser.add_argument("--json", type=Path, default=Path("bench/out/train.json"))
    args = parser.parse_args()

    from neuavatar import Preprocessor
    from neuavatar.avatar import train_avatar
    from neuavatar.config import from_dict
    from neuavatar.presets import PRESETS
    from neuavatar.track import track_dataset

    preset = PRESETS[args.preset]
    train_config = replace(preset.train, steps=tuple(args.steps)) if args.steps else preset.train
    variants = {"default": train_config}
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        overrides = tomllib.loads(settings.replace(";", "\n"))
        variants[name] = from_dict(type(train_config), {**asdict(train_config), **overrides}, where=f"variant {name}")
    if args.skip_default and len(variants) > 1:
        del variants["default"]
    preprocess_config = replace(preset.preprocess, max_frames=args.frames, split=args.split)
    track_options, track_label = preset.track, ""
    if args.track_variant:
        track_label, _, settings = args.track_variant.partition(":")
        overrides = tomllib.loads(settings.replace(";", "\n"))
        track_options = from_dict(type(track_options), {**asdict(track_options), **overrides},
                                  where=f"tracking {track_label}")
    work = args.work or Path(tempfile.mkdtemp(prefix="neuavatar-train-"))
    videos = list(args.videos)
    if args.sample_seconds:
        from neuavatar.sample import make_sample

        videos.append(make_sample(work / f"sample_{args.sample_seconds:g}s.mp4", seconds=args.sample_seconds))
    rows = []
    with Preprocessor(preprocess_config) as preprocessor:
        for video in videos:
            d = work / (video.stem if args.split == "tail" else f"{video.stem}_{args.split}")
            prepared = preprocessor.process(video, d / "dataset")
            tracking_dir = d / (f"tracking_{track_label}" if track_label else "tracking")
            tracked = track_dataset(prepared.dataset_dir, tracking_dir, track_options, overlay=False)
            for variant, config in variants.items():
                if track_label:
                    variant = f"{track_label}+{variant}"
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                result = train_avatar(prepared.dataset_dir, tracked.tracking_dir, d / f"avatar_{variant}", config,
                                      overwrite=True)
                wall = time.perf_counter() - started
                m = result.metrics
                keys = ("psnr", "ssim", "ms_ssim", "l1", "baseline_psnr", "baseline_ssim", "train_psnr",
                        "outline_error_share", "train_seconds", "load_seconds", "num_gaussians", "size", "device")
                row = {"video": video.name, "variant": variant, "split": args.split, "frames": m["train_frames"] + m["eval_frames"],
                       "train_frames": m["train_frames"], "eval_frames": m["eval_frames"], **{k: m[k] for k in keys},
                       "wall_seconds": wall, "peak_gpu_memory_gb": m.get("peak_gpu_memory_gb"),
                       **{k: m[k] for k in ("psnr_refined", "ssim_refined", "eval_tracking_correction",
                                            "train_tracking_correction") if k in m}}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.pictures:
                    args.pictures.mkdir(parents=True, exist_ok=True)
                    shutil.copy(result.avatar_dir / "side_by_side.png",
                                args.pictures / f"{video.stem[:28]}_{variant}_sbs.png")

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"benchmark": "train", "device": device, "torch": torch.__version__, "preset": args.preset, "split": args.split,
              "track_variant": args.track_variant,
              "steps": list(train_config.steps), "variants": args.variant, "goals": {"psnr": 29.0, "ssim": 0.95, "seconds_1min_clip": 120,
                                                           "peak_gpu_memory_gb": 16}, "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\navatar training benchmark on {device} (preset {args.preset}, steps {list(train_config.steps)})")
    head = (f"{'video':<28} {'variant':<12} {'frames':>6} {'PSNR':>6} {'SSIM':>6} {'MS-SSIM':>7} {'L1':>6} {'base':>6} "
            f"{'fit':>6} {'edge%':>5} {'refined':>7} {'train s':>7} {'wall s':>7} {'GPU GB':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        gb = r["peak_gpu_memory_gb"]
        refined = f"{r['psnr_refined']:.2f}" if "psnr_refined" in r else "-"
        print(f"{r['video'][:28]:<28} {r['variant'][:12]:<12} {r['frames']:>6} {r['psnr']:>6.2f} {r['ssim']:>6.4f} {r['ms_ssim']:>7.4f} "
              f"{r['l1']:>6.4f} {r['baseline_psnr']:>6.2f} {r['train_psnr']:>6.2f} {100 * r['outline_error_share']:>5.0f} "
              f"{refined:>7} {r['train_seconds']:>7.1f} {r['wall_seconds']:>7.1f} "
              f"{(f'{gb:.1f}' if gb else '-'):>6}")
    print(f"(json: {args.json})")


if __name__ == "__main__":
    main()
