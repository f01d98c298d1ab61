"""Probe one avatar with the independent judge (bench/judge.py): what single expressions and jaw
openings do to it, with its learned expression parts on and off, and what a driver's tracking puts
into the expression coefficients.

    python bench/probe_avatar.py AVATAR [--sheet probe.png]          # the sweeps, a table, a picture
    python bench/probe_avatar.py AVATAR --driver DRIVER.mp4 --frames 20 60   # the driver's mean deltas there

Each sweep adds a value to the avatar's rest pose (expression units by their ARKit names, the jaw in
degrees) and reports the judge's features of the render. "learned off" zeroes the expression-driven
offsets and colour corrections: the head model's geometry alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

SWEEPS = {
    "blink": (("eyeBlinkLeft", "eyeBlinkRight"), (0.0, 0.5, 1.0, 1.5)),
    "brow raise": (("browInnerUp", "browOuterUpLeft", "browOuterUpRight"), (0.0, 0.5, 1.0, 1.5)),
    "brow down": (("browDownLeft", "browDownRight"), (0.0, 0.5, 1.0, 1.5)),
    "smile": (("mouthSmileLeft", "mouthSmileRight"), (0.0, 0.4, 0.8)),
    "jaw open (deg)": (("jaw",), (0.0, 10.0, 20.0, 30.0)),
}
SHOWN = ("mouth_open", "eye_r", "eye_l", "brow_r", "brow_l")


def _learned(renderer) -> list:
    """The expression-driven learned weights: the offsets' and the colour corrections' bases."""
    parts = (getattr(renderer.avatar.offsets, "rank_to_offsets", None),
             getattr(renderer.avatar.gaussians, "colour_basis", None))
    return [p for p in parts if p is not None]


def _params(renderer, names: list[str], units: tuple[str, ...], value: float):
    """The avatar's rest pose with ``value`` added to ``units`` (or to the jaw's opening, in degrees)."""
    rest = renderer.rest
    if units == ("jaw",):
        jaw = rest.jaw[0].cpu().numpy().copy()
        jaw[0] += np.radians(value)
        return renderer.params(jaw=jaw)
    expression = rest.expression[0].cpu().numpy().copy()
    expression[[names.index(u) for u in units]] += value
    return renderer.params(expression=expression)


def sweeps(renderer, judge, sheet: Path | None) -> None:
    import cv2
    import torch

    names = list(renderer.avatar.head.expression_names or ())
    print(f"{'sweep':<15} {'value':>6} {'learned':>7} " + " ".join(f"{k:>10}" for k in SHOWN))
    rows = []
    for sweep, (units, values) in SWEEPS.items():
        if units != ("jaw",) and not set(units) <= set(names):
            continue
        for learned in (True, False):
            saved = [p.detach().clone() for p in _learned(renderer)]
            if not learned:
                for p in _learned(renderer):
                    p.data.zero_()
            row = []
            for value in values:
                image = renderer.render_uint8(_params(renderer, names, units, value))[0]
                face = judge(image)
                cells = " ".join(f"{face.features[k]:>10.3f}" if face else f"{'miss':>10}" for k in SHOWN)
                print(f"{sweep:<15} {value:>6g} {'on' if learned else 'off':>7} {cells}")
                row.append(image)
            with torch.no_grad():
                for p, s in zip(_learned(renderer), saved):
                    p.copy_(s)
            if learned:
                rows.append(np.concatenate(row + [np.full_like(row[0], 255)] * (4 - len(row)), 1))
    if sheet is not None:
        cv2.imwrite(str(sheet), np.concatenate(rows, 0)[..., ::-1])
        print(f"(sheet, learned parts on, one sweep a row: {sheet})")


def driver_deltas(renderer, driver: Path, first: int, last: int, top: int = 12) -> None:
    import torch

    from neuavatar.animate.reenact import track_driver

    with tempfile.TemporaryDirectory() as tmp:
        motion, _ = track_driver(renderer, driver, Path(tmp))
    params, rest = motion.params, motion.params.median()
    delta = (params.expression - rest.expression)[first:last].mean(0)
    names = renderer.avatar.head.expression_names or [str(i) for i in range(len(delta))]
    print(f"{driver.name}, frames {first}-{last}: mean change from the driver's rest (largest {top})")
    for i in delta.abs().argsort(descending=True)[:top].tolist():
        print(f"  {names[i]:<20} {float(delta[i]):+.3f}")
    jaw = torch.rad2deg((params.jaw - rest.jaw)[first:last, 0].mean())
    print(f"  jaw opening          {float(jaw):+.2f} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatar", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sheet", type=Path, help="write the sweeps' renders here (PNG)")
    parser.add_argument("--driver", type=Path, help="print what tracking this driver puts into the coefficients")
    parser.add_argument("--frames", type=int, nargs=2, default=(0, 10**9), metavar=("FIRST", "LAST"))
    args = parser.parse_args()

    from judge import Judge

    from neuavatar.animate import AvatarRenderer

    renderer = AvatarRenderer(args.avatar, device=args.device)
    if args.driver:
        driver_deltas(renderer, args.driver, *args.frames)
    else:
        sweeps(renderer, Judge(), args.sheet)


if __name__ == "__main__":
    main()
