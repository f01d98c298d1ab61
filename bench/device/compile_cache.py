"""What ``torch.compile`` of the avatar's placement costs on first use and buys afterwards, with
inductor's disk cache cold and warm (issue 5: the single-frame path).

Each case runs in a fresh process (as a restarted service would): the time of the first render of
each batch size (compile + CUDA-graph capture), then frames per second at batch 1 and 32.

    python bench/device/compile_cache.py --avatar AVATAR_DIR [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child(avatar: str, mode: str, seconds: float) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from render import frames_per_second

    from neuavatar.animate import AvatarRenderer
    from neuavatar.animate.graphs import GraphedPlacement

    started = time.perf_counter()
    renderer = AvatarRenderer(avatar, device="cuda")
    if mode != "graphs":
        renderer._graphs = GraphedPlacement(renderer.avatar, renderer.rest, compile=True,
                                            dynamic={"static": False, "dynamic": True, "auto": None}[mode])
    load = time.perf_counter() - started
    first = {}
    for b in (1, 2, 4, 8, 16, 32):
        t = time.perf_counter()
        renderer.render(renderer.params(b))
        torch.cuda.synchronize()
        first[b] = time.perf_counter() - t
    fps = {b: frames_per_second(renderer, b, seconds) for b in (1, 32)}
    return {"mode": mode, "load_s": load, "first_render_s": first, "warm_up_s": sum(first.values()), "fps": fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avatar", required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--modes", nargs="*", default=["graphs", "static", "auto", "dynamic"])
    parser.add_argument("--json", type=Path, default=Path("bench/out/compile_cache.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.avatar, args.child, args.seconds)), flush=True)
        return
    rows = []
    for mode in args.modes:
        cache = Path(tempfile.mkdtemp(prefix=f"inductor-{mode}-"))
        for state in (("cold", "warm") if mode != "graphs" else ("-",)):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
            t = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--avatar", args.avatar, "--child", mode, "--seconds",
                                  str(args.seconds)], env=env, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                print(f"{mode} {state}: failed\n{out.stderr[-2000:]}")
                continue
            row = {**json.loads(line[0][7:]), "cache": state, "process_s": time.perf_counter() - t}
            rows.append(row)
            print(f"{mode:<8} {state:<5} warm-up {row['warm_up_s']:6.1f} s (batch 1 {row['first_render_s']['1']:5.1f} s) "
                  f"batch 1 {row['fps']['1']:7.0f} fps   batch 32 {row['fps']['32']:7.0f} fps", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "compile_cache", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
