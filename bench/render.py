"""Benchmark of the renderer: frames per second for one avatar, batched, concurrent live sessions,
and driving-video reenactment time.

    python bench/render.py --avatar AVATAR_DIR --driver ../shared/data/videos/drive_lp_d19_man_glasses.mp4
    python bench/render.py --avatar AVATAR_DIR --device cpu --seconds 3     # CPU speed at the avatar's size

Goals (issue 5, one H100, 512²): >= 1000 frames/s for one avatar, >= 3000 frames/s batched, >= 16
concurrent sessions at 30 fps each, a 10 s driving clip reenacted in < 10 s. CPU: reported, no goal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def frames_per_second(renderer, batch: int, seconds: float) -> float:
    """Renders (on the device, not copied back) per second at batch size ``batch``."""
    g = torch.Generator().manual_seed(0)
    params = renderer.params(batch, expression=torch.randn(batch, renderer.num_expression, generator=g).numpy() * 0.5)
    for _ in range(3):
        renderer.render(params)
    sync(renderer.device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            renderer.render(params)
        done += 10 * batch
        sync(renderer.device)
    return done / (time.perf_counter() - started)


def graphs_against_eager(renderer, avatar: Path) -> float:
    """Largest difference (0-1 colour) between renders replayed from CUDA graphs and launched one by one."""
    from neuavatar.animate import AvatarRenderer

    eager = AvatarRenderer(avatar, device="cuda", cuda_graphs=False)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in (1, 3, 8, 5):
        params = renderer.params(batch, expression=torch.randn(batch, renderer.num_expression, generator=g).numpy() * 0.5,
                                 rotation=(torch.randn(batch, 3, generator=g) * 0.2).numpy())
        worst = max(worst, float((renderer.render(params) - eager.render(params)).abs().max()))
    return worst


def profile(renderer, steps: int = 20) -> None:
    """Print the operators a batch-1 render spends its time in (host and device)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    params = renderer.params(1)
    for _ in range(3):
        renderer.render(params)
    sync(renderer.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if renderer.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            renderer.render(params)
        sync(renderer.device)
    key = "cuda_time_total" if renderer.device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


def sessions(renderer, count: int, fps: float, seconds: float) -> dict:
    """``count`` live sessions, each submitting head parameters at ``fps`` and reading JPEG frames."""
    from neuavatar.animate.stream import StreamFrame, StreamSession

    renderer.batcher()  # its graphs for every batch size are captured before the clock starts
    latencies: list[float] = []
    received = [0] * count
    lock = threading.Lock()

    elapsed = [0.0] * count
    parts: dict[str, list[float]] = {"queued": [], "render": [], "encode": []}

    def record(k: int, out: StreamFrame) -> None:
        with lock:
            latencies.append(out.timings_ms["total"])
            received[k] += 1
            for part in parts:
                parts[part].append(out.timings_ms[part])

    def client(k: int) -> None:
        with StreamSession(renderer) as session:
            period, start = 1.0 / fps, time.perf_counter()
            i = 0
            while time.perf_counter() - start < seconds:
                session.submit(i, rotation=[0.0, 0.3 * np.sin(i / 15), 0.0])
                i += 1
                out = session.next(timeout=period)
                if isinstance(out, StreamFrame):
                    record(k, out)
                time.sleep(max(0.0, start + i * period - time.perf_counter()))
            while isinstance(out := session.next(timeout=0.5), StreamFrame):  # frames still on their way
                record(k, out)
            elapsed[k] = max(seconds, i * period)  # the time over which the requests were sent

    threads = [threading.Thread(target=client, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    per_session = np.array(received) / np.array(elapsed)
    steps = {k: np.array(v) for k, v in parts.items()} if parts["render"] else {}
    return {"sessions": count, "target_fps": fps, "min_session_fps": float(per_session.min()),
            "mean_session_fps": float(per_session.mean()), "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            **{f"{k}_p50_ms": float(np.percentile(v, 50)) for k, v in steps.items()},
            **{f"{k}_p99_ms": float(np.percentile(v, 99)) for k, v in steps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avatar", type=Path, required=True)
    parser.add_argument("--driver", type=Path, help="a driving clip for the reenactment timing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each throughput measurement runs")
    parser.add_argument("--batches", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--sessions", type=int, nargs="*", default=[16])
    parser.add_argument("--json", type=Path, default=Path("bench/out/render.json"))
    parser.add_argument("--profile", action="store_true", help="print where a batch-1 render spends its time")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd placement (CUDA)")
    args = parser.parse_args()

    from neuavatar.animate import AvatarRenderer
    from neuavatar.animate.reenact import reenact_video

    renderer = AvatarRenderer(args.avatar, device=args.device)
    device = renderer.device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.profile:
        profile(renderer)
    graph_error = graphs_against_eager(renderer, args.avatar) if device.type == "cuda" else None
    rows = [{"what": "one avatar, batch 1", "fps": frames_per_second(renderer, 1, args.seconds)}]
    for b in args.batches:
        rows.append({"what": f"batched, batch {b}", "fps": frames_per_second(renderer, b, args.seconds)})
    if args.compile and device.type == "cuda":
        fused = AvatarRenderer(args.avatar, device="cuda", compile=True)
        for b in (1, *args.batches):
            started = time.perf_counter()
            fused.render(fused.params(b))
            first = time.perf_counter() - started
            rows.append({"what": f"torch.compile, batch {b} (first {first:.0f} s)",
                         "fps": frames_per_second(fused, b, args.seconds)})
    host = time.perf_counter()
    for _ in range(50):
        renderer.render_uint8(renderer.params(1))
    rows.append({"what": "batch 1, copied to the host as uint8", "fps": 50 / (time.perf_counter() - host)})
    live = [sessions(renderer, n, 30.0, args.seconds) for n in args.sessions]
    reenact = None
    if args.driver:
        from neuavatar.animate.reenact import driver_preprocessor

        with tempfile.TemporaryDirectory() as tmp:
            # one-shot, as `neuavatar reenact` runs: preprocessing threads in this process load their models
            cold = reenact_video(renderer, args.driver, Path(tmp) / "cold.mp4", side_by_side=True)
            with driver_preprocessor(renderer.size) as every_core:  # one-shot with worker processes instead
                cold_all = reenact_video(renderer, args.driver, Path(tmp) / "cold_all.mp4", side_by_side=True,
                                         preprocessor=every_core)
            # a service: preprocessing workers kept from one reenactment to the next
            with driver_preprocessor(renderer.size) as preprocessor:
                reenact_video(renderer, args.driver, Path(tmp) / "warm.mp4", preprocessor=preprocessor)
                result = reenact_video(renderer, args.driver, Path(tmp) / "out.mp4", side_by_side=True,
                                       preprocessor=preprocessor)
            reenact = {"driver": args.driver.name, "frames": result.frames, "seconds": result.seconds,
                       "cold_seconds": cold.seconds, "cold_every_core_seconds": cold_all.seconds,
                       "driver_landmark_error_px": result.driver_landmark_error_px}
    report = {"benchmark": "render", "device": name, "size": renderer.size,
              "num_gaussians": len(renderer.avatar.gaussians), "throughput": rows, "sessions": live,
              "reenact": reenact, "graphs_vs_eager_max_diff": graph_error, "goals": {"fps_single": 1000, "fps_batched": 3000, "sessions_at_30fps": 16,
                                            "reenact_10s_clip_seconds": 10}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nrenderer benchmark on {name}, {renderer.size}², {len(renderer.avatar.gaussians)} Gaussians")
    for r in rows:
        print(f"  {r['what']:<40} {r['fps']:>9.1f} frames/s")
    for s in live:
        print(f"  {s['sessions']} sessions at {s['target_fps']:g} fps: slowest {s['min_session_fps']:.1f} fps, "
              f"latency p50 {s['latency_p50_ms']:.1f} ms, p99 {s['latency_p99_ms']:.1f} ms")
        print("    p50 / p99 per step: " + ", ".join(f"{k} {s[f'{k}_p50_ms']:.1f} / {s[f'{k}_p99_ms']:.1f} ms"
                                                  for k in ("queued", "render", "encode") if f"{k}_p50_ms" in s))
    if reenact:
        for name, key in (("one-shot", "cold_seconds"), ("one-shot, worker processes", "cold_every_core_seconds"),
                          ("service", "seconds")):
            times = ", ".join(f"{k} {v:.1f} s" for k, v in reenact[key].items())
            print(f"  reenact {reenact['driver']} ({reenact['frames']} frames), {name}: {times}")
        print(f"  the driver's landmarks, fitted: {reenact['driver_landmark_error_px']:.2f} px from the detected (512²)")
    if graph_error is not None:
        print(f"  CUDA graphs against eager kernels: largest colour difference {graph_error:.2e}")
    print(f"(json: {args.json})")


if __name__ == "__main__":
    main()
