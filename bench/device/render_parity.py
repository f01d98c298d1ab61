"""Does the pure-torch renderer agree with nvdiffrast, and how fast is each? Run on the GPU host.

    PYTHONPATH=$PWD/shared python bench/device/render_parity.py --json out/render_parity.json
    python bench/device/render_parity.py --device cpu --sizes 48 --batches 1 --repeats 3   # smoke test

Two meshes of ~10k triangles (a lumpy lat-long sphere, whose folds make interior silhouettes, and
a soup of random overlapping triangles, which stresses the depth test), at 128, 256 and 512 pixels,
batch 1 and 8. Each op is compared on identical inputs (interpolate, texture and antialias get
nvdiffrast's ``rast``), then the whole rasterize -> interpolate -> antialias chain end to end.
Gradients come from one random cotangent per comparison; "a" and "b" are the gradients w.r.t.

    rasterize: a = clip                    interpolate: a = rast, b = attributes
    texture: a = uv, b = image             antialias: a = clip, b = color
    pipeline: a = clip, b = attributes

Then both backends are timed (median of --repeats after warm-up, CUDA synchronised) on the chain,
forward and forward + backward, at the largest size. Exits 1 when a figure is outside TOLERANCES.
Without CUDA or nvdiffrast only the torch path is timed and parity is skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from parity_common import finish, grad_stats, time_forward_backward

from neuavatar.render import antialias, clip_space, interpolate, rasterize, texture

# Documented parity tolerances. Coverage uses the same 1/16-pixel snapping and fill rule in both
# backends, so triangle ids differ only on depth near-ties (cudaraster quantises depth to 32 bits);
# values are float32 on both sides. Gradients are compared under a cotangent that is zero on the
# pixels whose triangle differs between the backends (and, for the chain, their neighbours).
TOLERANCES = {
    "rasterize": {"ids": 2e-3, "max": 1e-3, "cos_a": 0.99},
    "interpolate": {"max": 1e-4, "cos_a": 0.9999, "rel_a": 1e-3, "cos_b": 0.9999, "rel_b": 1e-3},
    "texture": {"max": 1e-4, "cos_a": 0.9999, "rel_a": 1e-3, "cos_b": 0.9999, "rel_b": 1e-3},
    "antialias": {"max": 1e-4, "cos_a": 0.999, "rel_a": 0.05, "cos_b": 0.9999, "rel_b": 1e-3},
    "pipeline": {"ids": 2e-3, "mean": 1e-3, "cos_a": 0.99, "rel_a": 0.15, "cos_b": 0.99, "rel_b": 0.15},
}


# ------------------------------------------------------------------------------------------------
# scenes


def lumpy_sphere(rings: int = 70, segments: int = 72, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lat-long sphere with radial bumps: (V, 3) unit-ish vertices, (2 segments (rings - 1), 3) faces."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.arange(1, rings) * math.pi / rings  # polar angle of each ring
    phi = torch.arange(segments) * 2 * math.pi / segments
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).view(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring, torch.tensor([[0.0, -1.0, 0.0]])])
    bumps = 1 + 0.08 * torch.sin(5 * torch.atan2(verts[:, 2], verts[:, 0])) * verts[:, 1] + 0.01 * torch.randn(len(verts), generator=g)
    verts = verts * bumps[:, None]
    idx = torch.arange(len(ring)).view(rings - 1, segments) + 1
    nxt = idx.roll(-1, dims=1)
    top = torch.stack([torch.zeros(segments, dtype=torch.long), nxt[0], idx[0]], 1)
    bottom = torch.stack([torch.full((segments,), len(verts) - 1), idx[-1], nxt[-1]], 1)
    quads_a = torch.stack([idx[:-1], nxt[:-1], idx[1:]], -1).view(-1, 3)
    quads_b = torch.stack([nxt[:-1], nxt[1:], idx[1:]], -1).view(-1, 3)
    return verts, torch.cat([top, quads_a, quads_b, bottom])


def triangle_soup(count: int = 10000, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random overlapping triangles in a 0.3 m cube around the origin: (3 count, 3), (count, 3)."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(count, 1, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.3, 0.2])
    corners = centres + torch.randn(count, 3, 3, generator=g) * 0.012
    return corners.view(-1, 3) / 0.12, torch.arange(3 * count).view(count, 3)  # scaled like the sphere


def camera_clip(verts: torch.Tensor, batch: int, size: int, device: str, seed: int = 2) -> torch.Tensor:
    """(B, V, 4) clip positions of the mesh (radius ~0.12 m, 0.6 m away), jittered per batch item."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.randn(batch, generator=g) * 0.3
    c, s = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).view(batch, 3, 3)  # about y
    shift = torch.randn(batch, 1, 3, generator=g) * torch.tensor([0.01, 0.01, 0.02]) + torch.tensor([0.0, 0.0, 0.6])
    points = (verts * 0.12) @ rot.transpose(1, 2) + shift
    intrinsics = torch.tensor([[1.5 * size, 1.5 * size, size / 2, size / 2]])
    return clip_space(points, intrinsics, (size, size)).to(device).contiguous()


# ------------------------------------------------------------------------------------------------
# parity


def _run(fn, inputs: list[torch.Tensor], cotangent_seed: int, keep: torch.Tensor | None = None):
    """fn(*inputs) and the gradients of <fn(*inputs), random cotangent> w.r.t. the inputs.

    ``keep`` (B, H, W) bool zeroes the cotangent elsewhere: gradients are compared on the pixels
    both backends rasterize alike (a pixel that sees another triangle, often an edge-on sliver whose
    barycentric gradient is huge, says nothing about the ops' agreement)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    g = torch.Generator(device=out.device).manual_seed(cotangent_seed)
    cotangent = torch.randn(out.shape, generator=g, device=out.device, dtype=out.dtype)
    if keep is not None:
        cotangent = cotangent * keep[..., None]
    grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
    return out.detach(), [torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads)]


def _compare(op: str, fn_t, fn_n, inputs: list[torch.Tensor], mask: torch.Tensor | None = None,
             keep: torch.Tensor | None = None) -> dict:
    """Run one op on both backends with the same inputs and cotangent; figures as in TOLERANCES."""
    out_t, grads_t = _run(fn_t, inputs, 7, keep)
    out_n, grads_n = _run(fn_n, inputs, 7, keep)
    diff = (out_t - out_n).abs()
    if mask is not None:  # compare values only where both backends saw the same triangle
        diff = diff[mask]
    row = {"op": op, "max": diff.max().item() if diff.numel() else 0.0, "mean": diff.mean().item() if diff.numel() else 0.0}
    for name, g_t, g_n in zip("ab", grads_t, grads_n):
        row[f"cos_{name}"], row[f"rel_{name}"] = grad_stats(g_t, g_n)
    return row


def parity(mesh: str, verts, faces, size: int, batch: int, device: str = "cuda") -> list[dict]:
    clip = camera_clip(verts, batch, size, device)
    faces = faces.to(device)
    colors = torch.rand(len(verts), 3, device=device)
    rast_n = rasterize(clip, faces, (size, size), backend="nvdiffrast").detach()
    rast_t = rasterize(clip, faces, (size, size), backend="torch").detach()
    same = rast_t[..., 3] == rast_n[..., 3]
    ids = 1.0 - same.float().mean().item()
    # antialias mixes each pixel with its neighbours: keep pixels whose 3x3 neighbourhood agrees
    agree_around = -torch.nn.functional.max_pool2d(-same.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0.5

    def chain(backend):
        def fn(c, a):
            rast = rasterize(c, faces, (size, size), backend=backend)
            return antialias(interpolate(a, rast, faces, backend=backend), rast, c, faces, backend=backend)
        return fn

    color = interpolate(colors, rast_n, faces).detach()
    uv = torch.rand(batch, size, size, 2, device=device) * 2 - 0.5
    image = torch.rand(batch, 64, 48, 3, device=device)
    rows = [
        _compare("rasterize", lambda c: rasterize(c, faces, (size, size), backend="torch"),
                 lambda c: rasterize(c, faces, (size, size), backend="nvdiffrast"), [clip], same, same),
        _compare("interpolate", lambda r, a: interpolate(a, r, faces, backend="torch"),
                 lambda r, a: interpolate(a, r, faces, backend="nvdiffrast"), [rast_n, colors]),
        _compare("texture", lambda u, i: texture(i, u, backend="torch"),
                 lambda u, i: texture(i, u, backend="nvdiffrast"), [uv, image]),
        _compare("antialias", lambda c, col: antialias(col, rast_n, c, faces, backend="torch"),
                 lambda c, col: antialias(col, rast_n, c, faces, backend="nvdiffrast"), [clip, color]),
        _compare("pipeline", chain("torch"), chain("nvdiffrast"), [clip, colors], keep=agree_around),
    ]
    for row in rows:
        row.update(mesh=mesh, size=size, batch=batch)
        if row["op"] in ("rasterize", "pipeline"):
            row["ids"] = ids
        row["failures"] = _failures(row)
    return rows


def _failures(row: dict) -> list[str]:
    bad = []
    for key, limit in TOLERANCES[row["op"]].items():
        value = row.get(key, float("nan"))
        ok = value >= limit if key.startswith("cos") else value <= limit
        if not ok and not (key.startswith(("cos", "rel")) and math.isnan(value)):
            bad.append(f"{key}={value:.3g} (limit {limit:g})")
    return bad


# ------------------------------------------------------------------------------------------------
# timing


def time_chain(backend: str, clip, faces, colors, size: int, repeats: int) -> dict:
    """Median milliseconds of the chain's forward and forward + backward."""

    def run(backward: bool) -> torch.Tensor:
        c, a = clip.detach().clone().requires_grad_(), colors.detach().clone().requires_grad_()
        rast = rasterize(c, faces, (size, size), backend=backend)
        return antialias(interpolate(a, rast, faces, backend=backend), rast, c, faces, backend=backend).sum()

    return time_forward_backward(run, clip.is_cuda, repeats)


# ------------------------------------------------------------------------------------------------


def _print_table(rows: list[dict]) -> None:
    cols = ("max", "mean", "ids", "cos_a", "rel_a", "cos_b", "rel_b")
    print(f"{'mesh':<8} {'size':>5} {'B':>2} {'op':<12}" + "".join(f"{c:>10}" for c in cols) + "  verdict")
    for r in rows:
        cells = "".join(f"{r[c]:>10.3g}" if c in r and not math.isnan(r[c]) else f"{'-':>10}" for c in cols)
        verdict = "ok" if not r["failures"] else "FAIL " + "; ".join(r["failures"])
        print(f"{r['mesh']:<8} {r['size']:>5} {r['batch']:>2} {r['op']:<12}{cells}  {verdict}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="write every figure here")
    a = p.parse_args()

    from neuavatar.render import _nvdiffrast

    meshes = {"sphere": lumpy_sphere(), "soup": triangle_soup()}
    can_compare = a.device.startswith("cuda") and _nvdiffrast.available()
    report = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "tolerances": TOLERANCES, "parity": [], "timings": []}
    if can_compare:
        start = time.perf_counter()
        _nvdiffrast.load()  # JIT-compiles the plugin on a fresh host
        report["nvdiffrast_load_s"] = time.perf_counter() - start
        for name, (verts, faces) in meshes.items():
            for size in a.sizes:
                for batch in a.batches:
                    report["parity"].extend(parity(name, verts, faces, size, batch, a.device))
        _print_table(report["parity"])
    else:
        print(f"parity skipped: needs CUDA and nvdiffrast (device {a.device}); timing the torch path only")

    size = max(a.sizes)
    print(f"\nrasterize + interpolate + antialias at {size}x{size}, median of {a.repeats} (ms)")
    print(f"{'mesh':<8} {'faces':>6} {'B':>2} {'backend':<11} {'forward':>9} {'fwd+bwd':>9}")
    for name, (verts, faces) in meshes.items():
        for batch in a.batches:
            clip = camera_clip(verts, batch, size, a.device)
            faces_d, colors = faces.to(a.device), torch.rand(len(verts), 3, device=a.device)
            for backend in ("torch", "nvdiffrast") if can_compare else ("torch",):
                t = time_chain(backend, clip, faces_d, colors, size, a.repeats)
                report["timings"].append({"mesh": name, "faces": len(faces), "size": size, "batch": batch,
                                          "backend": backend, **t})
                print(f"{name:<8} {len(faces):>6} {batch:>2} {backend:<11} {t['forward_ms']:>9.2f} "
                      f"{t['forward_backward_ms']:>9.2f}")

    return finish(report, a.json)


if __name__ == "__main__":
    sys.exit(main())
