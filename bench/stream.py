"""Benchmark of live reenactment over gRPC on loopback: frames per second per stream and the
latency from head parameters sent to the encoded frame received, measured by the client.

    python bench/stream.py --avatar AVATAR_DIR                    # 1 and 4 streams at 60 fps, then flat out
    python bench/stream.py --avatar AVATAR_DIR --device cpu --fps 10 --streams 1 4

Goal (issue 5, one H100, 512²): >= 60 fps per stream, p99 latency < 25 ms. Each stream asks for
``--fps`` frames per second; "flat out" sends the next request as soon as the last frame arrived.

``--render-clients N`` adds a load row (issue 6): N clients calling RenderFrame back to back while
the largest ``--streams`` count of live streams runs, all against the one renderer:

    python bench/stream.py --avatar AVATAR_DIR --device cpu --fps 10 --streams 4 --render-clients 20
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np


def stream(client, avatar_id: str, fps: float | None, seconds: float, num_expression: int) -> dict:
    """One live session: requests at ``fps`` (None: one in flight at a time) for ``seconds``."""
    from neuavatar.api.client import live_request

    outbox: queue.Queue = queue.Queue()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    arrived = threading.Event()
    rng = np.random.default_rng(0)

    def requests():
        while (item := outbox.get()) is not None:
            yield item

    call = client.live(avatar_id, requests())

    def send(i: int) -> None:
        expression = (rng.standard_normal(num_expression) * 0.3).astype(np.float32)
        sent[i] = time.perf_counter()
        outbox.put(live_request(i, params={"expression": expression, "jaw": [0.1 * np.sin(i / 10), 0, 0],
                                           "rotation": [0, 0.3 * np.sin(i / 15), 0]}))

    def sender() -> None:
        start, i = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            send(i)
            i += 1
            if fps is None:
                arrived.wait(timeout=1.0)
                arrived.clear()
            else:
                time.sleep(max(0.0, start + i / fps - time.perf_counter()))
        time.sleep(0.3)  # let the last frames arrive
        outbox.put(None)

    frames, errors, first_frame = 0, 0, None
    thread = threading.Thread(target=sender)
    for response in call:
        kind = response.WhichOneof("event")
        if kind == "ready":
            thread.start()
        elif kind == "frame":
            now = time.perf_counter()
            latencies.append((now - sent[response.frame.id]) * 1000)
            frames += 1
            first_frame = first_frame or now
            arrived.set()
        else:
            errors += 1
    thread.join()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"frames": frames, "errors": errors, "requested": len(sent), "fps": frames / seconds,
            "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99))}


def load(client, num_expression: int, render_clients: int, streams: int, fps: float, seconds: float) -> dict:
    """``render_clients`` threads calling RenderFrame back to back beside ``streams`` live streams."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def render_loop(k: int) -> None:
        rng = np.random.default_rng(k)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            try:
                client.render_frame("bench", params={"expression": rng.standard_normal(num_expression) * 0.3})
            except Exception:  # noqa: BLE001 - counted: the goal is none
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - t) * 1000)

    results: list[dict] = [{}] * streams

    def stream_loop(k: int) -> None:
        results[k] = stream(client, "bench", fps, seconds, num_expression)

    threads = [threading.Thread(target=render_loop, args=(k,)) for k in range(render_clients)]
    threads += [threading.Thread(target=stream_loop, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"streams": streams, "asked_fps": fps, "min_fps": min(r["fps"] for r in results),
            "latency_p50_ms": float(np.median([r["latency_p50_ms"] for r in results])),
            "latency_p99_ms": max(r["latency_p99_ms"] for r in results), "errors": sum(r["errors"] for r in results),
            "render_clients": render_clients, "render_per_second": len(latencies) / seconds,
            "render_p50_ms": float(np.percentile(lat, 50)), "render_p99_ms": float(np.percentile(lat, 99)),
            "render_errors": errors[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avatar", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fps", type=float, default=60.0, help="frames per second each stream asks for")
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--render-clients", type=int, default=0, help="RenderFrame clients beside the streams")
    parser.add_argument("--json", type=Path, default=Path("bench/out/stream.json"))
    args = parser.parse_args()

    import torch

    from neuavatar.api import ApiSettings, RendererClient, RendererService, ServerThread, mapping_source

    if torch.cuda.is_available() and args.device != "cpu":
        from neuavatar.render.gaussians import _gsplat_available

        _gsplat_available()  # builds gsplat's CUDA code (a minute on a fresh machine), not inside a call
    service = RendererService(mapping_source({"bench": args.avatar}), device=args.device)
    rows = []
    with ServerThread([service], ApiSettings(port=0)) as server:
        with RendererClient(f"127.0.0.1:{server.port}") as client:
            client.render_frame("bench")  # loads the avatar, builds the kernels
            num_expression = service.renderers._items["bench"].num_expression
            stream(client, "bench", args.fps, 1.0, num_expression)  # warm-up: CUDA graphs per batch size
            for count, fps in [(n, args.fps) for n in args.streams] + [(1, None)]:
                results: list[dict] = [{}] * count

                def run(k: int, fps=fps) -> None:
                    results[k] = stream(client, "bench", fps, args.seconds, num_expression)

                threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                rows.append({"streams": count, "asked_fps": fps, "min_fps": min(r["fps"] for r in results),
                             "latency_p50_ms": float(np.median([r["latency_p50_ms"] for r in results])),
                             "latency_p99_ms": max(r["latency_p99_ms"] for r in results),
                             "errors": sum(r["errors"] for r in results)})
            if args.render_clients:
                rows.append(load(client, num_expression, args.render_clients, max(args.streams), args.fps,
                                 args.seconds))
    device = service.renderers._items["bench"].device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = {"benchmark": "stream", "device": name, "rows": rows, "goals": {"fps_per_stream": 60, "p99_ms": 25}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nlive reenactment over gRPC on loopback, {name}")
    print(f"  {'streams':>7} {'asked fps':>9} {'slowest fps':>11} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for r in rows:
        asked = "flat out" if r["asked_fps"] is None else f"{r['asked_fps']:g}"
        print(f"  {r['streams']:>7} {asked:>9} {r['min_fps']:>11.1f} {r['latency_p50_ms']:>7.1f} "
              f"{r['latency_p99_ms']:>7.1f} {r['errors']:>6}")
    for r in (r for r in rows if "render_clients" in r):
        print(f"  load: {r['render_clients']} RenderFrame clients, {r['render_per_second']:.1f} frames/s in all, "
              f"p50 {r['render_p50_ms']:.0f} ms, p99 {r['render_p99_ms']:.0f} ms, {r['render_errors']} errors; "
              f"beside {r['streams']} streams at {r['asked_fps']:g} fps: slowest {r['min_fps']:.1f} fps, "
              f"p99 {r['latency_p99_ms']:.0f} ms, {r['errors']} errors")
    print(f"(json: {args.json})")


if __name__ == "__main__":
    main()
