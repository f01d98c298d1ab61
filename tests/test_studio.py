"""The studio: its HTTP endpoints (with urllib), and its page in a real headless Chromium driven by
Playwright, on a tiny avatar trained on real video (the shared ``tiny_avatar`` fixture).

The browser is the system's Chromium (Debian's ``chromium`` package, which scripts/setup.sh
installs): Playwright cannot download its own browsers here, so it is launched with
``executable_path``. Without a Chromium binary the browser tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from neuavatar.animate import RANGES, AvatarRenderer
from neuavatar.animate.studio import NOTES_HEADER, serve_studio

TIMEOUT_MS = 60_000  # generous: the 2 cores may be busy with other tests


@pytest.fixture(scope="module")
def renderer(tiny_avatar) -> AvatarRenderer:
    result, _ = tiny_avatar
    return AvatarRenderer(result.avatar_dir, device="cpu")


@pytest.fixture(scope="module")
def studio(renderer):
    with serve_studio(renderer) as s:
        yield s


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def render(studio, query: str = "") -> tuple[np.ndarray, str]:
    """The decoded RGB frame and the notes header for ``query``."""
    status, headers, body = get(studio.url + "render?" + query)
    assert status == 200, body
    assert headers["Content-Type"] == "image/jpeg"
    bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "the answer is not a JPEG"
    return bgr[..., ::-1], headers.get(NOTES_HEADER, "")


# --- HTTP ----------------------------------------------------------------------------------------


def test_render_is_a_jpeg_of_the_avatar_size(studio, renderer):
    rgb, notes = render(studio, "jaw_open=10&head_yaw=-20&expression=0.5,0,-1")
    assert rgb.shape == (renderer.size, renderer.size, 3)
    assert notes == ""
    assert rgb.std() > 5, "a blank frame"


def test_different_controls_give_different_images(studio):
    rest, _ = render(studio)
    turned, _ = render(studio, "head_yaw=40")
    mouth, _ = render(studio, "jaw_open=30&expression=2,-2,2")
    for other in (turned, mouth):
        assert np.abs(rest.astype(int) - other).mean() > 1.0
    again, _ = render(studio)
    assert np.array_equal(rest, again), "the same controls should give the same frame"


def test_out_of_range_is_clamped_and_reported(studio):
    clamped, notes = render(studio, "head_yaw=100&expression=5")
    assert "head_yaw = 100 is outside [-60, 60]: using 60" in notes
    assert "expression[0] = 5 is outside [-3, 3]: using 3" in notes
    edge, edge_notes = render(studio, "head_yaw=60&expression=3")
    assert edge_notes == ""
    assert np.array_equal(clamped, edge)


@pytest.mark.parametrize("query, message", [
    ("head_yaw=abc", "head_yaw: 'abc' is not a number"),
    ("head_yaw=", "head_yaw: '' is not a number"),
    ("zoom=nan", "zoom: 'nan' is not a finite number"),
    ("expression=1,x", "expression[1]: 'x' is not a number"),
    ("smile=1", "unknown control 'smile'"),
    ("head_yaw=1&head_yaw=2", "head_yaw is given 2 times"),
    ("expression=" + ",".join(["0"] * 500), "expression: 500 values given, but this avatar has"),
])
def test_bad_values_answer_400_with_a_message(studio, query, message):
    status, headers, body = get(studio.url + "render?" + query)
    text = body.decode()
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert message in text
    assert "Traceback" not in text


def test_controls_describe_the_sliders(studio, renderer):
    status, headers, body = get(studio.url + "controls")
    assert status == 200 and headers["Content-Type"] == "application/json"
    import json

    info = json.loads(body)
    assert info["size"] == renderer.size and info["num_expression"] == renderer.num_expression
    names = [s["name"] for s in info["sliders"]]
    n = min(10, renderer.num_expression)
    assert names[:n] == [f"expression.{i}" for i in range(n)]
    assert names[n:] == ["jaw_open", "jaw_side", "neck_yaw", "neck_pitch", "neck_roll", "eyes_yaw", "eyes_pitch",
                         "head_yaw", "head_pitch", "head_roll", "camera_yaw", "camera_pitch", "zoom"]
    for s in info["sliders"]:
        assert (s["low"], s["high"]) == RANGES[s["name"].split(".")[0]]
        assert s["low"] <= s["default"] <= s["high"] and s["step"] > 0
    assert next(s for s in info["sliders"] if s["name"] == "zoom")["default"] == 1.0


def test_page_and_unknown_path(studio):
    status, headers, body = get(studio.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<script>" in page and "http://" not in page and "https://" not in page  # nothing from elsewhere
    status, _, body = get(studio.url + "nope")
    assert status == 404 and b"no such page" in body


def test_renders_run_one_at_a_time(renderer):
    class Spy:
        size, num_expression = renderer.size, renderer.num_expression
        active = peak = calls = 0
        lock = threading.Lock()

        def render_controls(self, controls):
            with self.lock:
                Spy.active += 1
                Spy.calls += 1
                Spy.peak = max(Spy.peak, Spy.active)
            try:
                time.sleep(0.02)  # widen the window two overlapping renders would show in
                return renderer.render_controls(controls)
            finally:
                with self.lock:
                    Spy.active -= 1

    with serve_studio(Spy(), expression_sliders=3) as s:
        statuses = []
        threads = [threading.Thread(target=lambda i=i: statuses.append(get(f"{s.url}render?head_yaw={i}")[0]))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 6
    assert Spy.calls == 6 and Spy.peak == 1


def test_close_stops_serving_and_wait_returns(renderer):
    s = serve_studio(renderer)
    assert get(s.url + "controls")[0] == 200
    waiter = threading.Thread(target=s.wait)
    waiter.start()
    s.close()
    waiter.join(10)
    assert not waiter.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(s.url + "controls", timeout=5)


# --- the page in a browser ---------------------------------------------------------------------------


def chromium_binary() -> str | None:
    for name in (os.environ.get("NEUAVATAR_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def page(studio):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary on this machine (scripts/setup.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    # Flags: root needs --no-sandbox; the background-networking ones stop Chromium calling out to a
    # network this machine does not have.
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=args)
        try:
            pg = browser.new_page(viewport={"width": 1200, "height": 800})
            pg.set_default_timeout(TIMEOUT_MS)
            pg.requests, pg.problems = [], []
            pg.on("request", lambda r: pg.requests.append(r.url))
            pg.on("console", lambda m: m.type == "error" and pg.problems.append(m.text))
            pg.on("pageerror", lambda e: pg.problems.append(str(e)))
            pg.goto(studio.url)
            pg.wait_for_function("document.getElementById('frame').dataset.query !== undefined")
            yield pg
        finally:
            browser.close()


def shown(pg) -> tuple[str, str]:
    """(the query of the frame on screen, its decoded pixels as a PNG data URL, drawn on a canvas)."""
    return pg.evaluate("""() => {
        const img = document.getElementById('frame');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        return [img.dataset.query, c.toDataURL('image/png')];
    }""")


def wait_shown(pg, fragment: str) -> None:
    pg.wait_for_function("f => (document.getElementById('frame').dataset.query || '').split('&').includes(f)",
                         arg=fragment)


def test_page_slider_changes_the_image(page, studio, renderer):
    query0, pixels0 = shown(page)
    assert "head_yaw=0" in query0.split("&")
    assert page.evaluate("document.getElementById('frame').naturalWidth") == renderer.size
    # Playwright's fill() on a range input sets it and fires input/change, as a person's drag does.
    page.locator("#head_yaw").fill("40")
    wait_shown(page, "head_yaw=40")
    query1, pixels1 = shown(page)
    assert pixels1 != pixels0
    assert "render" in page.inner_text("#status") and "ms" in page.inner_text("#status")
    # Real key presses on a focused slider: End moves jaw_open to its maximum.
    page.locator("#jaw_open").focus()
    page.keyboard.press("End")
    wait_shown(page, "jaw_open=35")
    _, pixels2 = shown(page)
    assert pixels2 not in (pixels0, pixels1)
    # Reset brings back the rest pose's very frame (renders and JPEGs are deterministic).
    page.click("#reset")
    page.wait_for_function("q => document.getElementById('frame').dataset.query === q", arg=query0)
    assert shown(page)[1] == pixels0


def test_page_does_not_pile_up_requests(page, studio):
    wait_shown(page, "head_yaw=0")
    before = len([u for u in page.requests if "/render?" in u])
    # 41 slider moves in one go: one render goes out, the rest collapse into the newest state.
    page.evaluate("""() => {
        const el = document.getElementById('head_yaw');
        for (let v = -40; v <= 40; v += 2) { el.value = v; el.dispatchEvent(new Event('input')); }
    }""")
    wait_shown(page, "head_yaw=40")
    time.sleep(0.5)  # anything still queued would go out now
    renders = [u for u in page.requests if "/render?" in u][before:]
    assert 1 <= len(renders) <= 2, renders
    assert "head_yaw=40" in renders[-1]
    # The studio itself, and the object URLs the page makes of the frames it fetched from it.
    elsewhere = [u for u in page.requests if not u.startswith((studio.url, "blob:" + studio.url.rstrip("/")))]
    assert elsewhere == [], "the page fetched something from elsewhere"
    assert page.problems == []
