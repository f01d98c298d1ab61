"""``neuavatar client ...``: the API of a running stack from the command line.

By default the commands call the local stack (the addresses in ``stack.json`` of
``$NEUAVATAR_STACK_DIR`` or ``~/.neuavatar/stack``, see ``neuavatar stack up``); ``--api HOST:PORT``
(the job API, i.e. the preprocess service) and ``--renderer HOST:PORT`` point them at a deployed
one, with ``--token``/``--token-file`` (or ``$NEUAVATAR_API_TOKEN``) and ``--tls``/``--tls-ca``.
gRPC failures become one-line errors that say what to do (unreachable server, refused token,
unknown id); the CLI prints them without a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import grpc
import tyro

from neuavatar.animate.controls import Controls
from neuavatar.api._proto import neuavatar_pb2 as pb
from neuavatar.api.client import AvatarsClient, RendererClient
from neuavatar.errors import InputError, NeuAvatarError
from neuavatar.progress import TqdmProgress
from neuavatar.stack.local import default_stack_dir, format_table, load_state
from neuavatar.subcommands import run_subcommand

__all__ = ["ClientError", "Connection", "CreateArgs", "WatchArgs", "JobsArgs", "AvatarsArgs", "DeleteAvatarArgs",
           "DeleteJobArgs", "RenderArgs", "ReenactArgs", "main"]

_FLAT = tyro.conf.arg(name="")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_STATES = {"queued": pb.JOB_STATE_QUEUED, "running": pb.JOB_STATE_RUNNING, "succeeded": pb.JOB_STATE_SUCCEEDED,
           "failed": pb.JOB_STATE_FAILED, "cancelled": pb.JOB_STATE_CANCELLED}


class ClientError(NeuAvatarError):
    """A call to the API failed; the message says why and what to do."""


@dataclasses.dataclass
class Connection:
    """Which API to call and how."""

    dir: Path = dataclasses.field(default_factory=default_stack_dir)
    """The local stack whose addresses to use when --api/--renderer are not given ($NEUAVATAR_STACK_DIR when set)."""
    api: str | None = None
    """HOST:PORT of the job API (a deployed stack's preprocess service); default: the local stack's."""
    renderer: str | None = None
    """HOST:PORT of the Renderer API; default: the local stack's."""
    token: str | None = None
    """API token sent as 'authorization: Bearer ...'; default: $NEUAVATAR_API_TOKEN, or none."""
    token_file: Path | None = None
    """A file holding the token (keeps it out of the process list and shell history)."""
    tls: bool = False
    """Use TLS, verifying the server against the system's certificate authorities."""
    tls_ca: Path | None = None
    """A PEM file of the certificate authority (or self-signed certificate) to verify the server with; implies --tls."""
    server_name: str | None = None
    """The host name the server's certificate is for, when it is not the one in the address."""
    timeout_seconds: float = 30.0
    """Deadline of each short call (listing, deleting, rendering one frame)."""


@dataclasses.dataclass
class CreateArgs:
    """Make an avatar from a video: upload it and start a job (preprocess, track, train); prints the job id."""

    video: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="VIDEO")]
    """The video of one person's head (mp4, mov, webm, ...)."""
    name: str = ""
    """A name for the avatar; default: the video's file name without its extension."""
    preset: str = ""
    """The job's run preset ('cpu-smoke' or 'gpu'); default: the server's."""
    size: int = 0
    """Output size in pixels (square); 0: the preset's."""
    watch: bool = False
    """Follow the job with progress bars until it ends, then print the avatar id."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class WatchArgs:
    """Follow a job with progress bars until it ends; exits 1 if it failed."""

    job: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="JOB")]
    """The job id (printed by `client create`)."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class JobsArgs:
    """List the jobs: state, stage, progress, and the avatar or the error."""

    state: Literal["all", "queued", "running", "succeeded", "failed", "cancelled"] = "all"
    """Only the jobs in this state."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class AvatarsArgs:
    """List the avatars: id, name, size, quality figures."""

    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class DeleteAvatarArgs:
    """Delete an avatar (its files in the object store)."""

    avatar: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="AVATAR")]
    """The avatar id."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class DeleteJobArgs:
    """Delete a job's record and intermediate files (its avatar stays)."""

    job: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="JOB")]
    """The job id."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class RenderArgs:
    """Render one image of an avatar on the server, with the expression, jaw, neck, eyes, head pose and view you give."""

    avatar: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="AVATAR")]
    """The avatar id."""
    out: Path = Path("render.png")
    """Image to write (.png or .jpg)."""
    controls: Annotated[Controls, _FLAT] = dataclasses.field(default_factory=Controls)
    quality: int = 0
    """JPEG quality 1..100 for a .jpg; 0: the server's (90)."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


@dataclasses.dataclass
class ReenactArgs:
    """Make an avatar perform a driving video, on the server; writes the MP4 it sends back."""

    avatar: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="AVATAR")]
    """The avatar id."""
    driving_video: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="DRIVER")]
    """The video whose motion the avatar performs (any person)."""
    out: Path = Path("reenact.mp4")
    """H.264 video to write."""
    side_by_side: bool = False
    """Put the driver's crop beside the avatar."""
    crf: int = 0
    """x264 quality (lower: better, larger); 0: the server's."""
    connection: Annotated[Connection, _FLAT] = dataclasses.field(default_factory=Connection)


# -- connecting ----------------------------------------------------------------------------------------

def _target(connection: Connection, which: Literal["api", "renderer"]) -> str:
    explicit = connection.api if which == "api" else connection.renderer
    if explicit:
        if not _ADDRESS.match(explicit):
            raise ClientError(f"--{which} must be HOST:PORT, got {explicit!r}")
        return explicit
    directory = Path(connection.dir).expanduser().resolve()
    state = load_state(directory)
    if state is None:
        raise ClientError(f"no local stack in {directory} (start one with `neuavatar stack up`), and no --{which} "
                          "HOST:PORT was given")
    address = state.api_address if which == "api" else state.renderer_address
    if address is None:
        raise ClientError(f"the local stack in {directory} runs without services (started with --no-services); "
                          f"restart it with them (`neuavatar stack down`, then `up`) or give --{which} HOST:PORT")
    return address


def _options(connection: Connection) -> dict:
    if connection.token and connection.token_file:
        raise ClientError("give --token or --token-file, not both")
    token = connection.token
    if connection.token_file is not None:
        try:
            token = connection.token_file.read_text().strip()
        except OSError as e:
            raise ClientError(f"cannot read the token from {connection.token_file}: {e.strerror or e}") from None
        if not token:
            raise ClientError(f"the token file {connection.token_file} is empty")
    elif token is None:
        token = os.environ.get("NEUAVATAR_API_TOKEN") or None
    root = None
    if connection.tls_ca is not None:
        try:
            root = connection.tls_ca.read_bytes()
        except OSError as e:
            raise ClientError(f"cannot read the certificate authority {connection.tls_ca}: {e.strerror or e}") from None
    return dict(token=token, tls=connection.tls or root is not None, root_certificates=root,
                server_name=connection.server_name, timeout_s=connection.timeout_seconds)


def _avatars(connection: Connection) -> tuple[AvatarsClient, str]:
    target = _target(connection, "api")
    return AvatarsClient(target, **_options(connection)), target


def _renderer(connection: Connection) -> tuple[RendererClient, str]:
    target = _target(connection, "renderer")
    return RendererClient(target, **_options(connection)), target


@contextlib.contextmanager
def _calling(target: str, what: str) -> Iterator[None]:
    """Turn a failed gRPC call into a :class:`ClientError` that says what to do."""
    try:
        yield
    except grpc.RpcError as error:
        raise _explain(error, target, what) from None


def _explain(error: grpc.RpcError, target: str, what: str) -> ClientError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return ClientError(f"cannot reach the {what} at {target}: is it running? (the local stack: "
                           f"`neuavatar stack status`; a TLS server needs --tls or --tls-ca) [{details}]")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ClientError(f"the {what} at {target} refused the call: {details} (pass the right token with --token, "
                           "--token-file or $NEUAVATAR_API_TOKEN)")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return ClientError(details or f"the {what} answered {code.name}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(f"the {what} at {target} did not answer in time (raise --timeout-seconds)")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return ClientError(f"{target} does not serve the {what} (wrong address? --api is the job API, "
                           "--renderer the Renderer API)")
    return ClientError(f"the {what} at {target} failed: {code.name}: {details}")


# -- the subcommands -----------------------------------------------------------------------------------

def _create(argv: list[str]) -> int:
    from tqdm import tqdm

    args = tyro.cli(CreateArgs, args=argv, prog="neuavatar client create")
    if not args.video.is_file():
        raise InputError(f"the video {args.video} does not exist (or is not a file)")
    options = pb.AvatarOptions(name=args.name or args.video.stem, preset=args.preset, size=args.size)
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        size = args.video.stat().st_size
        with tqdm(total=size, desc="   upload", unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
                  file=sys.stderr) as bar:
            job = avatars.create_avatar(args.video, options=options,
                                        progress=lambda sent, total: bar.update(sent - bar.n))
        print(f"job: {job.job_id}")
        if not args.watch:
            print(f"follow it with: neuavatar client watch {job.job_id}", file=sys.stderr)
            return 0
        return _follow(avatars, job.job_id)


def _watch(argv: list[str]) -> int:
    args = tyro.cli(WatchArgs, args=argv, prog="neuavatar client watch")
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        return _follow(avatars, args.job)


def _follow(avatars: AvatarsClient, job_id: str) -> int:
    """Progress bars from the job's events until it ends; 0 if it succeeded."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    events = avatars.watch_job(job_id)
    try:
        for event in events:
            stage = _name(pb.Stage, event.stage, "STAGE_")
            bar = bars.get(stage)
            if bar is None:
                for other in bars.values():
                    other.close()
                bar = bars[stage] = tqdm(total=100, desc=f"{stage:>10}", unit="%", dynamic_ncols=True,
                                         file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")
            bar.n = max(0.0, min(100.0, event.percent))
            shown = [k for k in ("loss", "psnr", "ssim") if k in event.metrics] or sorted(event.metrics)[:3]
            figures = ", ".join(f"{k} {event.metrics[k]:.4g}" for k in shown)  # the rest: `client jobs`
            bar.set_postfix_str(" ".join(x for x in (event.message, figures) if x), refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        events.cancel()
        for bar in bars.values():
            bar.close()
        print(f"\nstopped watching; the job goes on (`neuavatar client watch {job_id}` follows it again)",
              file=sys.stderr)
        return 130
    finally:
        for bar in bars.values():
            bar.close()
    job = avatars.get_job(job_id)
    state = _name(pb.JobState, job.state, "JOB_STATE_")
    if job.state == pb.JOB_STATE_SUCCEEDED:
        print(f"avatar: {job.avatar_id}")
        return 0
    if job.state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
        print(f"job {job_id} {state}: {job.error or job.message}", file=sys.stderr)
        return 1
    print(f"job {job_id} is still {state} but its event stream ended; watch it again later", file=sys.stderr)
    return 1


def _jobs(argv: list[str]) -> int:
    args = tyro.cli(JobsArgs, args=argv, prog="neuavatar client jobs")
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        state = pb.JOB_STATE_UNSPECIFIED if args.state == "all" else _STATES[args.state]
        rows = [(j.job_id, _name(pb.JobState, j.state, "JOB_STATE_"), _name(pb.Stage, j.stage, "STAGE_"),
                 f"{j.percent:.0f}%", _time(j.create_time), j.avatar_id or _short(j.error or j.message))
                for j in avatars.list_jobs(state=state)]
    if not rows:
        print("no jobs" if args.state == "all" else f"no {args.state} jobs", file=sys.stderr)
        return 0
    print(format_table(rows, ("job", "state", "stage", "done", "created", "avatar / message")))
    return 0


def _avatars_list(argv: list[str]) -> int:
    args = tyro.cli(AvatarsArgs, args=argv, prog="neuavatar client avatars")
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        rows = [(a.avatar_id, a.name or "-", f"{a.size}px" if a.size else "-",
                 " ".join(f"{k} {a.metrics[k]:.3g}" for k in ("psnr", "ssim") if k in a.metrics) or "-",
                 _time(a.create_time), a.job_id or "-") for a in avatars.list_avatars()]
    if not rows:
        print("no avatars yet: make one with `neuavatar client create VIDEO`", file=sys.stderr)
        return 0
    print(format_table(rows, ("avatar", "name", "size", "quality", "created", "job")))
    return 0


def _delete_avatar(argv: list[str]) -> int:
    args = tyro.cli(DeleteAvatarArgs, args=argv, prog="neuavatar client delete-avatar")
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        avatars.delete_avatar(args.avatar)
    print(f"deleted avatar {args.avatar}")
    return 0


def _delete_job(argv: list[str]) -> int:
    args = tyro.cli(DeleteJobArgs, args=argv, prog="neuavatar client delete-job")
    avatars, target = _avatars(args.connection)
    with avatars, _calling(target, "job API"):
        avatars.delete_job(args.job)
    print(f"deleted job {args.job}")
    return 0


def _render(argv: list[str]) -> int:
    args = tyro.cli(RenderArgs, args=argv, prog="neuavatar client render")
    suffix = args.out.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--out must end in .png or .jpg, got {args.out}")
    if not 0 <= args.quality <= 100:
        raise InputError(f"--quality must lie in 0..100, got {args.quality}")
    defaults = Controls()
    controls = {f.name: (list(v) if isinstance(v, tuple) else v) for f in dataclasses.fields(Controls)
                if (v := getattr(args.controls, f.name)) != getattr(defaults, f.name)}
    renderer, target = _renderer(args.connection)
    with renderer, _calling(target, "Renderer API"):
        frame = renderer.render_frame(args.avatar, controls=controls, encoding="jpeg" if suffix != ".png" else "rgb",
                                      quality=args.quality)
    for note in frame.notes:
        print(f"warning: {note}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.stem}.partial{args.out.suffix}")
    if suffix == ".png":
        import cv2
        import numpy as np

        image = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
        if not cv2.imwrite(str(partial), np.ascontiguousarray(image[..., ::-1])):
            raise InputError(f"cannot write {args.out}")
    else:
        partial.write_bytes(frame.data)
    os.replace(partial, args.out)
    timing = f", {frame.timings.total_ms:.0f} ms on the server" if frame.HasField("timings") else ""
    print(f"image: {args.out} ({frame.width}x{frame.height}{timing})")
    return 0


def _reenact(argv: list[str]) -> int:
    args = tyro.cli(ReenactArgs, args=argv, prog="neuavatar client reenact")
    if not args.driving_video.is_file():
        raise InputError(f"the driving video {args.driving_video} does not exist (or is not a file)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    renderer, target = _renderer(args.connection)
    progress = TqdmProgress({"upload": "B"})
    try:
        with renderer, _calling(target, "Renderer API"):
            result = renderer.reenact(args.avatar, args.driving_video, args.out, side_by_side=args.side_by_side,
                                      crf=args.crf, progress=lambda p: progress(p.step, p.done, p.total or None))
    finally:
        progress.close()
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"video: {args.out} ({result.frames} frames{'; ' + times if times else ''})")
    return 0


def _name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _time(stamp) -> str:
    if not stamp.seconds:
        return "-"
    return stamp.ToDatetime(tzinfo=datetime.UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


_SUBCOMMANDS = {"create": (CreateArgs, _create), "watch": (WatchArgs, _watch), "jobs": (JobsArgs, _jobs),
                "avatars": (AvatarsArgs, _avatars_list), "delete-avatar": (DeleteAvatarArgs, _delete_avatar),
                "delete-job": (DeleteJobArgs, _delete_job), "render": (RenderArgs, _render),
                "reenact": (ReenactArgs, _reenact)}


def main(argv: list[str]) -> int:
    """``neuavatar client ...``; the exit status. Raises ClientError (a NeuAvatarError) for the CLI to print."""
    return run_subcommand("neuavatar client", _SUBCOMMANDS, argv, notes=[
        "They call the local stack (`neuavatar stack up`) unless --api/--renderer HOST:PORT are given."])
