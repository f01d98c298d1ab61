"""The ``neuavatar`` command: one subcommand per stage, and ``run`` to chain them on local files.

Settings come, lowest precedence first, from the defaults (or a ``run`` preset), ``--config FILE``
(TOML or JSON, one ``[section]`` per stage), environment variables ``NEUAVATAR_<SECTION>_<FIELD>``,
and flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Literal

import tyro

from neuavatar import __version__
from neuavatar.animate.controls import Controls
from neuavatar.avatar.config import AvatarConfig
from neuavatar.config import resolve_config, save_config
from neuavatar.errors import ConfigError, NeuAvatarError
from neuavatar.preprocess import PreprocessConfig, preprocess_video
from neuavatar.presets import DEFAULT_PRESET, PRESETS, RunConfig
from neuavatar.progress import TqdmProgress
from neuavatar.track.options import TrackerOptions

__all__ = ["main"]

_FLAT = tyro.conf.arg(name="")  # a stage's settings appear as top-level flags (--size, not --preprocess.size)


@dataclasses.dataclass
class PreprocessArgs:
    """Turn a video into a dataset: square crops, landmarks, alpha, semantic masks, train/val split."""

    video: tyro.conf.Positional[Path]
    """Input video (mp4, mov, webm, avi, ...)."""
    out: Path
    """Dataset directory to create."""
    preprocess: Annotated[PreprocessConfig, _FLAT] = dataclasses.field(default_factory=PreprocessConfig)
    config: Path | None = None
    """TOML or JSON file with a [preprocess] section; flags override it."""
    overwrite: bool = False
    """Replace OUT if it holds a different dataset."""


@dataclasses.dataclass
class TrackArgs:
    """Fit the head model to a dataset: identity, expressions, poses, camera and lighting per frame."""

    dataset: tyro.conf.Positional[Path]
    """Dataset directory (made by `neuavatar preprocess`)."""
    out: Path
    """Tracking directory to create."""
    track: Annotated[TrackerOptions, _FLAT] = dataclasses.field(default_factory=TrackerOptions)
    config: Path | None = None
    """TOML or JSON file with a [track] section; flags override it."""
    overwrite: bool = False
    """Replace OUT if it holds a different tracking."""
    overlay: bool = True
    """Write overlay.mp4 (every frame with the fitted head drawn over it)."""


@dataclasses.dataclass
class TrainArgs:
    """Train an avatar from a dataset and its tracking: geometry, appearance and joint stages."""

    dataset: tyro.conf.Positional[Path]
    """Dataset directory (made by `neuavatar preprocess`)."""
    out: Path
    """Avatar directory to create (checkpoint, metrics, pictures, a reenactment clip)."""
    tracking: Path | None = None
    """Tracking directory (made by `neuavatar track`); default: 'tracking' beside the dataset."""
    train: Annotated[AvatarConfig, _FLAT] = dataclasses.field(default_factory=AvatarConfig)
    config: Path | None = None
    """TOML or JSON file with a [train] section (e.g. configs/avatar.toml); flags override it."""
    preset: str = DEFAULT_PRESET
    """Named settings to start from: 'gpu' or 'cpu-smoke'."""
    lpips_weights: str = ""
    """An LPIPS (AlexNet) weights file to also report LPIPS; none ships with NeuAvatar."""
    overwrite: bool = False
    """Replace OUT if it holds a different avatar."""


@dataclasses.dataclass
class RunArgs:
    """Run the whole pipeline in this process, on local files: preprocess, track, train."""

    video: tyro.conf.Positional[Path]
    """Input video."""
    out: Path
    """Output directory; each stage writes a subdirectory (dataset/, ...)."""
    preset: str = DEFAULT_PRESET
    """Named settings: 'gpu' (full quality) or 'cpu-smoke' (small and quick, for CI and CPU-only machines)."""
    settings: RunConfig = dataclasses.field(default_factory=RunConfig)
    config: Path | None = None
    """TOML or JSON file with a section per stage ([preprocess], [track], [train]); flags override it."""
    overwrite: bool = False
    """Replace stage outputs that hold something different."""


@dataclasses.dataclass
class SampleArgs:
    """Make the bundled sample video (a public-domain portrait, animated) to try NeuAvatar on."""

    out: Path = Path("sample.mp4")
    """Where to write the video."""
    seconds: float = 8.0
    """Length of the video."""


@dataclasses.dataclass
class RenderArgs:
    """Render one image of a trained avatar with the expression, jaw, neck, eyes, head pose and view you give."""

    avatar: tyro.conf.Positional[Path]
    """Avatar directory (made by `neuavatar train` or `run`) or its avatar.pt."""
    out: Path = Path("render.png")
    """Image to write (.png or .jpg)."""
    controls: Annotated[Controls, _FLAT] = dataclasses.field(default_factory=Controls)
    device: str = "auto"
    """'auto' (the GPU when there is one), 'cpu' or 'cuda'."""


@dataclasses.dataclass
class ReenactArgs:
    """Make the avatar perform a driving video: its expressions and head motion, relative to its own rest."""

    avatar: tyro.conf.Positional[Path]
    """Avatar directory or its avatar.pt."""
    driving_video: tyro.conf.Positional[Path]
    """The video whose motion the avatar performs (any person)."""
    out: Path = Path("reenact.mp4")
    """H.264 video to write."""
    side_by_side: bool = False
    """Put the driver's crop beside the avatar."""
    strength: float = 1.0
    """Scale of the driver's expression and jaw motion (1: as the driver moves; 0.7: calmer)."""
    device: str = "auto"
    """'auto' (the GPU when there is one), 'cpu' or 'cuda'."""


@dataclasses.dataclass
class StudioArgs:
    """Pose a trained avatar with sliders in your browser (a small local web page)."""

    avatar: tyro.conf.Positional[Path]
    """Avatar directory or its avatar.pt."""
    host: str = "127.0.0.1"
    """Address to listen on (127.0.0.1: this machine only)."""
    port: int = 8765
    """Port to listen on (0: any free port)."""
    device: str = "auto"
    """'auto' (the GPU when there is one), 'cpu' or 'cuda'."""


_COMMANDS = {"preprocess": PreprocessArgs, "track": TrackArgs, "train": TrainArgs, "run": RunArgs, "sample": SampleArgs,
             "render": RenderArgs, "reenact": ReenactArgs, "studio": StudioArgs}


def _usage() -> str:
    lines = [f"usage: neuavatar COMMAND [options]   (NeuAvatar {__version__})", "", "commands:"]
    for name, cls in _COMMANDS.items():
        lines.append(f"  {name:<12}{(cls.__doc__ or '').strip().splitlines()[0]}")
    lines += ["", "`neuavatar COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def _pre_parse(argv: list[str]) -> tuple[Path | None, str | None]:
    """--config and --preset, needed before the real parser (they set its defaults)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    pre.add_argument("--preset")
    known, _ = pre.parse_known_args(argv)
    return known.config, known.preset


def _settings(config_file: Path | None, preset: str) -> RunConfig:
    """Preset, then config file, then environment: the defaults that flags then override."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return resolve_config(RunConfig, base=PRESETS[preset], file=config_file, env_prefix="NEUAVATAR_")


def _cmd_preprocess(argv: list[str]) -> int:
    config_file, _ = _pre_parse(argv)
    base = _settings(config_file, DEFAULT_PRESET).preprocess
    default = PreprocessArgs(video=tyro.MISSING, out=tyro.MISSING, preprocess=base)
    args = tyro.cli(PreprocessArgs, args=argv, default=default, prog="neuavatar preprocess")
    progress = TqdmProgress()
    try:
        result = preprocess_video(args.video, args.out, args.preprocess, overwrite=args.overwrite, progress=progress)
    finally:
        progress.close()
    print(result.summary_text())
    return 0


def _cmd_track(argv: list[str]) -> int:
    from neuavatar.track import track_dataset

    config_file, _ = _pre_parse(argv)
    base = _settings(config_file, DEFAULT_PRESET).track
    default = TrackArgs(dataset=tyro.MISSING, out=tyro.MISSING, track=base)
    args = tyro.cli(TrackArgs, args=argv, default=default, prog="neuavatar track")
    progress = TqdmProgress()
    try:
        result = track_dataset(args.dataset, args.out, args.track, overwrite=args.overwrite, overlay=args.overlay,
                               progress=progress)
    finally:
        progress.close()
    print(result.summary_text())
    return 0


def _cmd_train(argv: list[str]) -> int:
    from neuavatar.avatar import train_avatar

    config_file, preset = _pre_parse(argv)
    preset = preset or DEFAULT_PRESET
    base = _settings(config_file, preset).train
    default = TrainArgs(dataset=tyro.MISSING, out=tyro.MISSING, train=base, preset=preset)
    args = tyro.cli(TrainArgs, args=argv, default=default, prog="neuavatar train")
    tracking = args.tracking or Path(args.dataset).absolute().parent / "tracking"
    progress = TqdmProgress()
    try:
        result = train_avatar(args.dataset, tracking, args.out, args.train, overwrite=args.overwrite,
                              lpips_weights=args.lpips_weights, progress=progress)
    finally:
        progress.close()
    print(result.summary_text())
    return 0


def _cmd_run(argv: list[str]) -> int:
    config_file, preset = _pre_parse(argv)
    preset = preset or DEFAULT_PRESET
    default = RunArgs(video=tyro.MISSING, out=tyro.MISSING, preset=preset, settings=_settings(config_file, preset))
    args = tyro.cli(RunArgs, args=argv, default=default, prog="neuavatar run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(args.settings, out / "run_config.json")
    from neuavatar.track import track_dataset

    progress = TqdmProgress()
    try:
        print(f"[1/3] preprocess -> {out / 'dataset'}", file=sys.stderr)
        prepared = preprocess_video(args.video, out / "dataset", args.settings.preprocess, overwrite=args.overwrite,
                                    progress=progress)
        print(prepared.summary_text())
        progress.close()
        print(f"[2/3] track -> {out / 'tracking'}", file=sys.stderr)
        tracked = track_dataset(prepared.dataset_dir, out / "tracking", args.settings.track, overwrite=args.overwrite,
                                progress=progress)
        print(tracked.summary_text())
        progress.close()
        from neuavatar.avatar import train_avatar

        print(f"[3/3] train -> {out / 'avatar'}", file=sys.stderr)
        trained = train_avatar(prepared.dataset_dir, tracked.tracking_dir, out / "avatar", args.settings.train,
                               overwrite=args.overwrite, progress=progress)
        print(trained.summary_text())
    finally:
        progress.close()
    return 0


def _cmd_sample(argv: list[str]) -> int:
    from neuavatar.sample import make_sample

    args = tyro.cli(SampleArgs, args=argv, prog="neuavatar sample")
    path = make_sample(args.out, seconds=args.seconds)
    print(f"sample video: {path}")
    return 0


def _renderer(path: Path, device: str):
    from neuavatar.animate import AvatarRenderer

    return AvatarRenderer(path, device=device)


def _cmd_render(argv: list[str]) -> int:
    import cv2

    args = tyro.cli(RenderArgs, args=argv, prog="neuavatar render")
    if args.out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"--out must end in .png or .jpg, got {args.out}")
    renderer = _renderer(args.avatar, args.device)
    try:
        image, notes = renderer.render_controls(args.controls)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.stem}.partial{args.out.suffix}")
    if not cv2.imwrite(str(partial), image[..., ::-1]):
        raise ConfigError(f"cannot write {args.out}")
    os.replace(partial, args.out)
    print(f"image: {args.out} ({image.shape[1]}x{image.shape[0]})")
    return 0


def _cmd_reenact(argv: list[str]) -> int:
    from neuavatar.animate.reenact import reenact_video

    args = tyro.cli(ReenactArgs, args=argv, prog="neuavatar reenact")
    renderer = _renderer(args.avatar, args.device)
    progress = TqdmProgress()
    try:
        result = reenact_video(renderer, args.driving_video, args.out, side_by_side=args.side_by_side,
                               strength=args.strength, progress=progress)
    finally:
        progress.close()
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"video: {result.path} ({result.frames} frames; {times}; the driver's tracked landmarks lie "
          f"{result.driver_landmark_error_px:.1f} px from the detected ones, at 512²)")
    return 0


def _cmd_studio(argv: list[str]) -> int:
    from neuavatar.animate.studio import serve_studio

    args = tyro.cli(StudioArgs, args=argv, prog="neuavatar studio")
    renderer = _renderer(args.avatar, args.device)
    try:
        server = serve_studio(renderer, host=args.host, port=args.port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"studio: open {server.url} in your browser (Ctrl-C stops it)", file=sys.stderr)
    server.wait()
    return 0


_HANDLERS = {"preprocess": _cmd_preprocess, "track": _cmd_track, "train": _cmd_train, "run": _cmd_run,
             "sample": _cmd_sample, "render": _cmd_render, "reenact": _cmd_reenact, "studio": _cmd_studio}


# -- the local stack and the API client: `neuavatar stack ...`, `neuavatar client ...` ---------------

class _StackCommand:
    """Run the broker, S3, Prometheus and the four services on this machine: stack up|status|down."""


class _ClientCommand:
    """Call a running stack's API: client create|watch|jobs|avatars|delete-avatar|render|reenact."""


def _cmd_stack(argv: list[str]) -> int:
    from neuavatar.stack.commands import main as stack_main

    return stack_main(argv)


def _cmd_client(argv: list[str]) -> int:
    from neuavatar.api.commands import main as client_main

    return client_main(argv)


_COMMANDS.update(stack=_StackCommand, client=_ClientCommand)
_HANDLERS.update(stack=_cmd_stack, client=_cmd_client)
# -- end of the stack and client block -----------------------------------------------------------------

# -- the services: `neuavatar serve NAME` ---------------------------------------------------------------

@dataclasses.dataclass
class ServeArgs:
    """Run a service: gRPC (health, reflection, its API), Prometheus metrics and its job queue."""

    name: tyro.conf.Positional[Literal["preprocess", "tracker", "trainer", "renderer"]]
    """preprocess (the job API and the preprocess queue), tracker, trainer, or renderer (the Renderer API)."""
    config: Path | None = None
    """TOML or JSON settings file ([broker], [storage], [api] and top-level keys); env and flags override it."""
    api_host: str | None = None
    """Address the gRPC server binds (NEUAVATAR_API_HOST)."""
    api_port: int | None = None
    """gRPC port, 0: a free one (NEUAVATAR_API_PORT)."""
    metrics_port: int | None = None
    """Prometheus metrics port, 0: a free one (NEUAVATAR_METRICS_PORT)."""
    work_dir: Path | None = None
    """Scratch folder for jobs and the avatar cache (NEUAVATAR_WORK_DIR)."""
    device: Literal["auto", "cpu", "cuda"] | None = None
    """Where the stages and the renderer compute (NEUAVATAR_DEVICE)."""
    preset: str | None = None
    """Run preset of jobs that name none: 'gpu' or 'cpu-smoke' (NEUAVATAR_PRESET)."""
    broker_prefix: str | None = None
    """Name prefix of the queues and exchanges (NEUAVATAR_BROKER_PREFIX)."""


def _cmd_serve(argv: list[str]) -> int:
    from neuavatar.services.runtime import run_service
    from neuavatar.services.settings import load_settings

    args = tyro.cli(ServeArgs, args=argv, prog="neuavatar serve")
    flags = {"api": {"host": args.api_host, "port": args.api_port}, "broker": {"prefix": args.broker_prefix},
             "metrics_port": args.metrics_port, "work_dir": args.work_dir, "device": args.device, "preset": args.preset}
    settings = load_settings(args.config, flags=flags)
    try:
        return run_service(args.name, settings)
    except OSError as e:  # the metrics port is taken
        raise ConfigError(f"the {args.name} service cannot start: {e.strerror or e}") from None


_COMMANDS["serve"] = ServeArgs
_HANDLERS["serve"] = _cmd_serve
# -- end of the serve block ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuavatar`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"neuavatar {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in _HANDLERS:
        print(f"neuavatar: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return _HANDLERS[command](rest)
    except NeuAvatarError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`neuavatar ... | head`): nothing to report
        sys.stderr.close()
        return 0
    except Exception:  # a bug: keep the traceback for the report, show the person one line
        fd, path = tempfile.mkstemp(prefix="neuavatar-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        kind, value = sys.exc_info()[:2]
        print(f"\ninternal error ({kind.__name__}: {value}); details in {path}; please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
