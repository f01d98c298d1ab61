"""The studio: a small local web page for posing a trained avatar by hand, with sliders.

One page, served by the standard library's HTTP server from a background thread, so it needs
nothing beyond what the package already installs (OpenCV encodes the JPEGs):

    GET /          the page (inline CSS and JavaScript; it loads nothing from elsewhere)
    GET /controls  JSON: the sliders (name, low, high, default, step), the image size
    GET /render    image/jpeg of the pose in the query, e.g.
                   ``/render?jaw_open=10&head_yaw=-20&expression=0.5,0,-1``; values outside
                   their range are clamped and reported in the ``X-Neuavatar-Notes`` header;
                   a bad query answers 400 with a plain-text message

Renders run one at a time (the renderer holds one model on one device, and two renders at once
would only share the same cores more slowly), and the page never queues them up: while one is in
flight it keeps just the newest slider state and asks for that when the image on screen has loaded.

    with serve_studio(AvatarRenderer(path)) as studio:
        print(studio.url)
        studio.wait()          # until Ctrl-C

or from a shell: ``python -m neuavatar.animate.studio AVATAR_DIR --port 8000``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import threading
import time
from dataclasses import fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np

from neuavatar.animate.controls import RANGES, Controls
from neuavatar.animate.renderer import encode_jpeg

__all__ = ["StudioServer", "serve_studio", "slider_specs", "parse_controls", "NOTES_HEADER"]

log = logging.getLogger(__name__)

NOTES_HEADER = "X-Neuavatar-Notes"
RENDER_MS_HEADER = "X-Neuavatar-Render-Ms"
SCALARS = tuple(f.name for f in fields(Controls) if f.name != "expression")
# Slider steps: a tenth of an expression unit's spread, one degree, a hundredth of zoom.
STEPS = {"expression": 0.05, "zoom": 0.01}
ANGLE_STEP = 1.0


class Renderer(Protocol):
    """What the studio needs of :class:`~neuavatar.animate.renderer.AvatarRenderer`."""

    size: int
    num_expression: int

    def render_controls(self, controls: Controls) -> tuple[np.ndarray, list[str]]: ...


class BadQuery(ValueError):
    """A query the studio cannot turn into controls; its message is shown to the person as is."""


def slider_specs(num_expression: int, expression_sliders: int = 10) -> list[dict]:
    """The page's sliders, in display order: the first ``expression_sliders`` expression
    coefficients (as many as the avatar has, at most), then every scalar control of :class:`Controls`."""
    defaults = Controls()
    low, high = RANGES["expression"]
    out = [{"name": f"expression.{i}", "group": "expression", "label": f"expression {i}", "low": low, "high": high,
            "default": 0.0, "step": STEPS["expression"]} for i in range(min(expression_sliders, num_expression))]
    for name in SCALARS:
        low, high = RANGES[name]
        group, _, part = name.partition("_")
        if name == "zoom":
            group, part = "camera", "zoom"
        out.append({"name": name, "group": group, "label": part, "low": low, "high": high,
                    "default": float(getattr(defaults, name)), "step": STEPS.get(name, ANGLE_STEP)})
    return out


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is not a number") from None
    # float() takes 'nan' and 'inf'; no control means anything by them.
    if not math.isfinite(value):
        raise BadQuery(f"{name}: {text!r} is not a finite number")
    return value


def parse_controls(query: str, num_expression: int) -> Controls:
    """:class:`Controls` from a URL query (``jaw_open=10&expression=0.5,0,-1``); names left out keep
    their defaults. Values are not clamped here: the renderer clamps them and says so.

    Raises:
        BadQuery: an unknown name, a name given twice, a value that is not a finite number, or more
            expression values than the avatar has.
    """
    try:
        pairs = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except ValueError as e:  # too many fields
        raise BadQuery(f"bad query: {e}") from None
    values: dict = {}
    for name, given in pairs.items():
        if name != "expression" and name not in SCALARS:
            raise BadQuery(f"unknown control {name!r}; known: expression, {', '.join(SCALARS)}")
        if len(given) > 1:
            raise BadQuery(f"{name} is given {len(given)} times")
        text = given[0].strip()
        if name == "expression":
            parts = text.split(",") if text else []
            if len(parts) > num_expression:
                raise BadQuery(f"expression: {len(parts)} values given, but this avatar has "
                               f"{num_expression} expression coefficients")
            values[name] = tuple(_number(f"expression[{i}]", p.strip()) for i, p in enumerate(parts))
        else:
            values[name] = _number(name, text)
    return Controls(**values)


class StudioServer:
    """A running studio: ``url`` to open, ``close()`` to stop (or use it as a context manager),
    ``wait()`` to block until Ctrl-C. Start one with :func:`serve_studio`."""

    def __init__(self, renderer: Renderer, host: str = "127.0.0.1", port: int = 0, expression_sliders: int = 10):
        self.renderer = renderer
        self.sliders = slider_specs(renderer.num_expression, expression_sliders)
        # One render at a time, across all of the server's request threads.
        self.render_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True  # a browser's idle keep-alive connection never blocks close()
        self.host = host
        self.port: int = self._httpd.server_address[1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._closed = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"neuavatar-studio:{self.port}", daemon=True)
        self._thread.start()

    def render(self, controls: Controls) -> tuple[bytes, list[str], float]:
        """JPEG bytes, clamp notes and render milliseconds for ``controls`` (serialised)."""
        with self.render_lock:
            t0 = time.perf_counter()
            rgb, notes = self.renderer.render_controls(controls)
            ms = (time.perf_counter() - t0) * 1e3
        return encode_jpeg(rgb), notes, ms

    def controls_json(self) -> dict:
        return {"sliders": self.sliders, "num_expression": self.renderer.num_expression,
                "size": self.renderer.size}

    def wait(self) -> None:
        """Serve until Ctrl-C (or until another thread calls :meth:`close`), then close."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)  # a short join keeps the main thread able to take Ctrl-C
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> StudioServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_studio(renderer: Renderer, host: str = "127.0.0.1", port: int = 0,
                 expression_sliders: int = 10) -> StudioServer:
    """Serve the studio for ``renderer`` on ``host``:``port`` (0: a free port) from a background
    thread, with sliders for the first ``expression_sliders`` expression coefficients."""
    return StudioServer(renderer, host, port, expression_sliders)


def _handler_for(studio: StudioServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "neuavatar-studio"
        protocol_version = "HTTP/1.1"  # keep-alive: the page asks for many frames over one connection

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            url = urlsplit(self.path)
            try:
                if url.path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
                elif url.path == "/controls":
                    self._send(HTTPStatus.OK, "application/json", json.dumps(studio.controls_json()).encode())
                elif url.path == "/render":
                    self._render(url.query)
                else:
                    self._text(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
            except BadQuery as e:
                self._text(HTTPStatus.BAD_REQUEST, str(e))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page went away mid-answer
            except Exception as e:  # never a traceback to the browser; the log has it
                log.exception("studio: %s failed", self.path)
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, f"render failed: {type(e).__name__}: {e}")

        def _render(self, query: str) -> None:
            controls = parse_controls(query, studio.renderer.num_expression)
            try:
                jpeg, notes, ms = studio.render(controls)
            except ValueError as e:  # what Controls checks itself (finite values, expression count)
                raise BadQuery(str(e)) from None
            # Headers are Latin-1: the notes are ASCII, but make sure.
            text = "; ".join(notes).encode("ascii", "replace").decode()
            self._send(HTTPStatus.OK, "image/jpeg", jpeg, {NOTES_HEADER: text, RENDER_MS_HEADER: f"{ms:.1f}"})

        def _text(self, status: HTTPStatus, message: str) -> None:
            self._send(status, "text/plain; charset=utf-8", (message + "\n").encode())

        def _send(self, status: HTTPStatus, kind: str, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the standard library's name)
            log.debug("studio: " + format, *args)

    return Handler


# The page. It builds its sliders from /controls, and fetches frames itself (not <img src=...>)
# so that it can read the notes header and know when a frame has arrived.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NeuAvatar studio</title>
<link rel="icon" href="data:,">  <!-- no /favicon.ico request -->
<style>
  :root { font: 14px/1.4 system-ui, sans-serif; color: #222; background: #f4f4f2; }
  body { margin: 0; display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; }
  #view { flex: 0 0 auto; }
  #frame { width: 384px; height: 384px; background: #ccc; display: block; border-radius: 4px; }
  #status { width: 384px; min-height: 2.8em; font-size: 12px; color: #555; margin-top: 6px; }
  #status.error { color: #b00; }
  #panel { flex: 1 1 420px; display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
           gap: 8px 20px; align-content: start; }
  fieldset { border: 1px solid #ccc; border-radius: 4px; padding: 4px 10px 8px; margin: 0; }
  legend { font-weight: 600; text-transform: capitalize; }
  .row { display: grid; grid-template-columns: 7.5em 1fr 3.5em; align-items: center; gap: 6px; }
  .row input { width: 100%; }
  .row output { text-align: right; font-variant-numeric: tabular-nums; }
  button { margin-top: 8px; padding: 4px 14px; }
</style>
</head>
<body>
<div id="view">
  <img id="frame" alt="the avatar">
  <div id="status">loading...</div>
  <button id="reset" type="button">Reset</button>
</div>
<form id="panel" autocomplete="off"></form>
<script>
"use strict";
const img = document.getElementById("frame");
const statusLine = document.getElementById("status");
const panel = document.getElementById("panel");
let sliders = [];
// At most one render in flight; while it is, only the newest wanted state is kept.
let busy = false, pending = null, shownQuery = null, shownUrl = null;

function query() {
  const parts = [], expression = [];
  for (const s of sliders) {
    if (s.spec.group === "expression") expression.push(s.input.value);
    else parts.push(s.spec.name + "=" + s.input.value);
  }
  if (expression.length) parts.push("expression=" + expression.join(","));
  return parts.join("&");
}

function want() {
  const q = query();
  if (busy) { pending = q; return; }
  if (q !== shownQuery) request(q);
}

function finish(q) {
  busy = false;
  const next = pending;
  pending = null;
  if (next !== null && next !== q) request(next);
}

function show(text, error) {
  statusLine.textContent = text;
  statusLine.className = error ? "error" : "";
}

async function request(q) {
  busy = true;
  const t0 = performance.now();
  try {
    const response = await fetch("render?" + q, {cache: "no-store"});
    if (!response.ok) throw new Error((await response.text()).trim() || response.statusText);
    const notes = response.headers.get("X-Neuavatar-Notes") || "";
    const renderMs = response.headers.get("X-Neuavatar-Render-Ms");
    const url = URL.createObjectURL(await response.blob());
    // The next request goes out only once this frame is on screen.
    img.onload = () => {
      if (shownUrl) URL.revokeObjectURL(shownUrl);
      shownUrl = url; shownQuery = q; img.dataset.query = q;
      const total = (performance.now() - t0).toFixed(0);
      show((notes ? "clamped: " + notes + " | " : "") + "render " + renderMs + " ms, round trip " + total + " ms",
           false);
      finish(q);
    };
    img.onerror = () => { URL.revokeObjectURL(url); show("the frame did not decode", true); finish(q); };
    img.src = url;
  } catch (e) {
    show(String(e.message || e), true);
    finish(q);
  }
}

function build(spec) {
  let group = panel.querySelector('fieldset[data-group="' + spec.group + '"]');
  if (!group) {
    group = document.createElement("fieldset");
    group.dataset.group = spec.group;
    group.innerHTML = "<legend></legend>";
    group.firstChild.textContent = spec.group;
    panel.appendChild(group);
  }
  const row = document.createElement("label");
  row.className = "row";
  const name = document.createElement("span");
  name.textContent = spec.label;
  const input = document.createElement("input");
  Object.assign(input, {type: "range", min: spec.low, max: spec.high, step: spec.step, value: spec.default,
                        id: spec.name.replace(".", "_"), name: spec.name});
  const out = document.createElement("output");
  const update = () => { out.textContent = Number(input.value).toFixed(spec.step < 1 ? 2 : 0); };
  update();
  input.addEventListener("input", () => { update(); want(); });
  row.append(name, input, out);
  group.appendChild(row);
  return {spec, input, update};
}

document.getElementById("reset").addEventListener("click", () => {
  for (const s of sliders) { s.input.value = s.spec.default; s.update(); }
  want();
});

fetch("controls").then(r => r.json()).then(info => {
  sliders = info.sliders.map(build);
  img.width = img.height = info.size;
  document.body.dataset.ready = "1";
  want();
}).catch(e => show("could not load the controls: " + e, true));
</script>
</body>
</html>
"""


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    from neuavatar.animate.renderer import AvatarRenderer

    p = argparse.ArgumentParser(prog="python -m neuavatar.animate.studio", description=__doc__.splitlines()[0])
    p.add_argument("avatar", type=Path, help="the avatar directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--expression-sliders", type=int, default=10, help="sliders for this many expression coefficients")
    a = p.parse_args(argv)
    studio = serve_studio(AvatarRenderer(a.avatar, device=a.device), a.host, a.port, a.expression_sliders)
    print(f"studio: {studio.url}  (Ctrl-C to stop)", flush=True)
    studio.wait()


if __name__ == "__main__":
    main()
