"""The local console (pyengine core start --console), end to end: a real core serving the
image-classification example and an echo function, driven in headless Chromium (the system's
Debian package, through Playwright) and over raw HTTP for the refusals.

Screenshots of each tab go to $PYENGINE_TEST_ARTIFACTS/console (default build/test-artifacts);
docs/console.md shows them.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.parse
from typing import Any, Iterator

import pytest
from core_helpers import CoreProcess, write_code
from example_helpers import EXAMPLE, REPO, example_build

import pyengine.deploy as dp

for _module, _package in (("chainer", "chainer"), ("sklearn", "scikit-learn"), ("PIL", "Pillow")):
    pytest.importorskip(_module, reason=f"the example needs {_package} (pip install "
                        "'pyengine[examples]', which scripts/setup.sh installs)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.path.join(os.environ.get("PYENGINE_TEST_ARTIFACTS",
                                        os.path.join(REPO, "build", "test-artifacts")), "console")

ECHO = """
import os
def function_handler(event, context):
    print("said:", event.get("say"), flush=True)
    return {"said": event.get("say"), "version": os.environ.get("VERSION")}
"""


def _group(base: str, version: str) -> str:
    """The example's model and function, and an echo function whose VERSION tells the
    deployments apart."""
    code = os.path.join(base, "functions", "classify")
    if not os.path.isdir(code):
        shutil.copytree(os.path.join(EXAMPLE, "functions", "classify"), code)
    group = {
        "name": "console-demo",
        "resources": [{"id": "digits", "name": "digits-cnn", "model": {
            "source": f"file://{base}/packages/digits-cnn.tar.gz",
            "destination": f"{base}/models/digits-cnn"}}],
        "functions": [
            {"name": "classify-image", "handler": "classify.function_handler",
             "code": "./functions/classify", "pinned": True, "timeout_s": 10,
             "memory_mb": 256, "resources": [{"id": "digits", "permission": "ro"}]},
            {"name": "echo", "handler": "handler.function_handler",
             "code": write_code(base, "echo", ECHO), "pinned": True,
             "environment": {"VERSION": version}},
        ],
    }
    path = os.path.join(base, "group.json")
    with open(path, "w") as fh:
        json.dump(group, fh)
    return path


@pytest.fixture(scope="module")
def console() -> Iterator[dict[str, Any]]:
    """A core with two successful deployments (echo's VERSION 1, then 2) and the console on."""
    base = tempfile.mkdtemp(prefix="pyengine-console-")
    os.chmod(base, 0o755)
    built = example_build().build(os.path.join(base, "packages"))
    root = os.path.join(base, "root")
    for version in ("1", "2"):
        d = dp.deploy(_group(base, version), root, wait_s=30)
        assert d.status == "Success", (d.message, d.items)
    core = CoreProcess(root, args=("--port", "0", "--console")).wait_ready()
    with open(os.path.join(root, "api.token")) as fh:
        token = fh.read().strip()
    try:
        yield {"core": core, "url": core.url, "token": token, "built": built, "root": root, "base": base}
    finally:
        core.stop()
        shutil.rmtree(base, ignore_errors=True)


def _request(url: str, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _login(url: str, token: str) -> tuple[str, str]:
    """A session cookie and its CSRF token, over raw HTTP as a browser would get them."""
    status, headers, _ = _request(url, "POST", "/console/login",
                                  urllib.parse.urlencode({"token": token}).encode(),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303, status
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    pair = cookie.split(";", 1)[0]
    status, _, body = _request(url, "GET", "/console/api/session", headers={"Cookie": pair})
    assert status == 200
    return pair, json.loads(body)["csrf"]


def test_console_refuses_without_login_and_cross_site(console: dict[str, Any]) -> None:
    url = console["url"]
    status, headers, _ = _request(url, "GET", "/console")
    assert status == 303 and headers["location"] == "/console/login"
    status, headers, body = _request(url, "GET", "/console/api/overview")
    assert status == 401 and b"log in" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    # A wrong token logs nobody in.
    status, headers, body = _request(url, "POST", "/console/login", b"token=wrong",
                                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and "set-cookie" not in headers and b"wrong token" in body
    before = len(dp.list_deployments(console["root"]))
    # No cookie: refused before anything runs.
    status, _, _ = _request(url, "POST", "/console/api/rollback", b"{}",
                            {"Content-Type": "application/json"})
    assert status == 401
    cookie, csrf = _login(url, console["token"])
    # A cross-site form carries the cookie at best, never the CSRF header.
    status, _, body = _request(url, "POST", "/console/api/rollback", b"{}",
                               {"Cookie": cookie, "Content-Type": "application/json"})
    assert status == 403 and b"CSRF" in body
    # The header with another site's Origin is refused too.
    status, _, body = _request(url, "POST", "/console/api/rollback", b"{}",
                               {"Cookie": cookie, "X-CSRF-Token": csrf,
                                "Origin": "http://evil.example", "Content-Type": "application/json"})
    assert status == 403 and b"another site" in body
    assert len(dp.list_deployments(console["root"])) == before
    # The bearer token alone does not open the console (it is the API's, not a session).
    status, _, _ = _request(url, "GET", "/console/api/overview",
                            headers={"Authorization": f"Bearer {console['token']}"})
    assert status == 401
    # The API itself is unchanged beside it.
    status, _, body = _request(url, "GET", "/functions",
                               headers={"Authorization": f"Bearer {console['token']}"})
    assert status == 200 and json.loads(body)["group"] == "console-demo"


def test_console_json_routes(console: dict[str, Any]) -> None:
    url = console["url"]
    cookie, csrf = _login(url, console["token"])
    h = {"Cookie": cookie}
    status, _, body = _request(url, "GET", "/console/api/overview", headers=h)
    o = json.loads(body)
    assert status == 200 and o["deployment"]["group"] == "console-demo" and o["ready"]
    assert o["kernels"] in o["kernels_available"]
    status, _, body = _request(url, "GET", "/console/api/resources", headers=h)
    rows = {r["key"]: r for r in json.loads(body)["resources"]}
    digits = rows["digits"]
    assert digits["used_by"] == [{"function": "classify-image", "permission": "ro"}]
    assert digits["bytes"] > 0 and digits["signature"]["inputs"][0]["shape"][1:] == [1, 8, 8]
    with open(os.path.join(console["base"], "packages", "digits-cnn.tar.gz"), "rb") as fh:
        assert digits["digest"] == "sha256:" + hashlib.sha256(fh.read()).hexdigest()
    status, _, body = _request(url, "POST", "/console/api/invoke/echo",
                               json.dumps({"say": "hi"}).encode(),
                               {**h, "X-CSRF-Token": csrf, "Content-Type": "application/json"})
    answer = json.loads(body)
    assert status == 200 and answer["status"] == 200 and answer["ms"] > 0
    assert answer["answer"]["result"] == {"said": "hi", "version": "2"}
    status, _, body = _request(url, "GET", "/console/api/functions", headers=h)
    echo = {f["name"]: f for f in json.loads(body)["functions"]}["echo"]
    assert echo["invocations"] >= 1 and echo["p50_ms"] is not None
    status, _, body = _request(url, "GET", "/console/api/series", headers=h)
    assert json.loads(body)["functions"]["echo"][-1]["per_min"] > 0


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed "
                    "(scripts/test.sh installs it; apt-get install chromium)")
def test_console_in_chromium(console: dict[str, Any]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the console test drives "
                                   "Chromium with playwright (pip install 'pyengine[dev]')")
    expect = sync_api.expect
    expect.set_options(timeout=30_000)  # the CI box is a loaded 2-core machine
    url, built = console["url"], console["built"]
    os.makedirs(ARTIFACTS, exist_ok=True)
    digit = sorted(os.listdir(built.test_digits))[0]  # "<index>-<label>.png"
    label = digit.rsplit(".", 1)[0].split("-")[1]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("dialog", lambda d: d.accept())  # the rollback's confirmation
        try:
            page.goto(f"{url}/console")
            assert page.url.endswith("/console/login")
            page.fill("#token", "wrong")
            page.click("button[type=submit]")
            assert "wrong token" in page.inner_text(".error")
            page.fill("#token", console["token"])
            page.click("button[type=submit]")
            page.wait_for_selector("#overview-body .card")
            assert "console-demo" in page.inner_text("#overview-body")
            page.screenshot(path=os.path.join(ARTIFACTS, "overview.png"), full_page=True)

            page.click("button[data-tab=resources]")
            page.wait_for_selector("#resources-body td")
            assert "classify-image (ro)" in page.inner_text("#resources-body")
            assert "sha256:" in page.inner_text("#resources-body")
            page.screenshot(path=os.path.join(ARTIFACTS, "resources.png"), full_page=True)
            # A phone-sized screen: the page itself never scrolls sideways (wide tables scroll
            # in their own box), and the navigation wraps.
            page.set_viewport_size({"width": 390, "height": 844})
            for tab in ("overview", "resources"):
                page.click(f"button[data-tab={tab}]")
                assert page.evaluate("document.documentElement.scrollWidth") <= 390, tab
            page.screenshot(path=os.path.join(ARTIFACTS, "phone-resources.png"), full_page=True)
            page.set_viewport_size({"width": 1100, "height": 900})

            # Test invoke: a real held-out digit uploaded as a file.
            page.click("button[data-tab=invoke]")
            page.wait_for_selector("#invoke-function option[value=classify-image]",
                                   state="attached")
            page.select_option("#invoke-function", "classify-image")
            page.set_input_files("#invoke-file", os.path.join(built.test_digits, digit))
            page.click("#invoke-form button[type=submit]")
            expect(page.locator("#invoke-time")).to_contain_text("HTTP", timeout=60_000)
            assert page.inner_text("#invoke-time").startswith("HTTP 200")
            result = json.loads(page.inner_text("#invoke-result"))
            assert result["result"]["label"] == label, result
            page.screenshot(path=os.path.join(ARTIFACTS, "invoke.png"), full_page=True)

            # A log line appears live, as text even when it holds markup.
            page.click("button[data-tab=logs]")
            page.wait_for_selector("#logs-function option[value=echo]", state="attached")
            page.select_option("#logs-function", "echo")
            page.fill("#logs-filter", "said:")
            page.click("#logs-form button[type=submit]")
            expect(page.locator("#logs-state")).to_have_text("live")
            evil = "<script>window.__owned = 1</script><img src=x onerror='window.__owned=2'>"
            status, answer = console["core"].invoke("echo", {"say": evil})
            assert status == 200, answer
            expect(page.locator("#logs-body")).to_contain_text("window.__owned = 1")
            assert page.evaluate("window.__owned") is None
            assert page.evaluate("document.querySelectorAll('#logs-body *').length") == 0
            page.screenshot(path=os.path.join(ARTIFACTS, "logs.png"), full_page=True)

            page.click("button[data-tab=functions]")
            page.wait_for_selector("#chart-latency polyline", state="attached")
            assert "classify-image" in page.inner_text("#functions-body")
            page.screenshot(path=os.path.join(ARTIFACTS, "functions.png"), full_page=True)

            # Roll back (confirmed) and see the page update: echo serves VERSION 1 again.
            page.click("button[data-tab=deployments]")
            page.wait_for_selector("#deployments-body details")
            page.click("#rollback")
            expect(page.locator("#rollback-result")).to_contain_text("Success", timeout=60_000)
            expect(page.locator("#deployments-body summary").first).to_contain_text("rollback")
            page.screenshot(path=os.path.join(ARTIFACTS, "deployments.png"), full_page=True)
            status, answer = console["core"].invoke("echo", {"say": "after"})
            assert status == 200 and answer["result"]["version"] == "1", answer

            page.click("button[data-tab=mqtt]")
            # The tab fills in after its status fetch answers: wait for it, do not race it.
            expect(page.locator("#mqtt-none")).to_be_visible()  # this core has no broker
            page.screenshot(path=os.path.join(ARTIFACTS, "mqtt.png"), full_page=True)
        finally:
            browser.close()


def test_console_mqtt_live(tmp_path: Any, mosquitto: Any) -> None:
    """Watching a topic pattern and publishing a test message, over the core's own broker
    connection."""
    base = tempfile.mkdtemp(prefix="pyengine-console-mqtt-")
    os.chmod(base, 0o755)
    root = os.path.join(base, "root")
    path = os.path.join(base, "group.json")
    with open(path, "w") as fh:
        json.dump({"name": "mqtt-demo", "functions": [
            {"name": "echo", "handler": "handler.function_handler",
             "code": write_code(base, "echo", ECHO)}]}, fh)
    assert dp.deploy(path, root, wait_s=30).status == "Success"
    core = CoreProcess(root, args=("--port", "0", "--console", "--mqtt",
                                   f"127.0.0.1:{mosquitto.port}")).wait_ready()
    try:
        with open(os.path.join(root, "api.token")) as fh:
            cookie, csrf = _login(core.url, fh.read().strip())
        u = urllib.parse.urlsplit(core.url)
        stream = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        stream.request("GET", "/console/api/mqtt/watch?topic=" + urllib.parse.quote("sensors/#"),
                       headers={"Cookie": cookie})
        resp = stream.getresponse()
        assert resp.status == 200 and resp.getheader("content-type").startswith(
            "text/event-stream")

        def event() -> dict[str, Any]:
            while True:
                line = resp.fp.readline()
                assert line, "the stream ended"
                if line.startswith(b"data: "):
                    return json.loads(line[6:])
        assert event() == {"watching": "sensors/#"}
        status, _, body = _request(core.url, "POST", "/console/api/mqtt/publish",
                                   json.dumps({"topic": "sensors/t1", "payload": "<b>21.5</b>"})
                                   .encode(), {"Cookie": cookie, "X-CSRF-Token": csrf,
                                               "Content-Type": "application/json"})
        assert status == 200 and json.loads(body)["published"], body
        got = event()
        assert got["topic"] == "sensors/t1" and got["payload"] == "<b>21.5</b>"
        status, _, body = _request(core.url, "POST", "/console/api/mqtt/publish",
                                   json.dumps({"topic": "bad/#"}).encode(),
                                   {"Cookie": cookie, "X-CSRF-Token": csrf,
                                    "Content-Type": "application/json"})
        assert status == 400 and b"bad/#" in body
        stream.close()
    finally:
        core.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_console_needs_the_token_listener(tmp_path: Any) -> None:
    root = str(tmp_path / "root")
    core = CoreProcess(root, args=("--console",))
    with pytest.raises(RuntimeError, match="--port"):
        core.wait_ready(timeout=60)
    core.stop()


def test_console_image_upload_payload_is_base64(console: dict[str, Any]) -> None:
    """What the page's form sends for an uploaded file: the file base64 in the payload's field
    (the example's function decodes exactly that)."""
    built = console["built"]
    digit = sorted(os.listdir(built.test_digits))[1]
    with open(os.path.join(built.test_digits, digit), "rb") as fh:
        encoded = base64.b64encode(fh.read()).decode()
    cookie, csrf = _login(console["url"], console["token"])
    status, _, body = _request(console["url"], "POST", "/console/api/invoke/classify-image",
                               json.dumps({"image": encoded}).encode(),
                               {"Cookie": cookie, "X-CSRF-Token": csrf,
                                "Content-Type": "application/json"})
    answer = json.loads(body)
    assert status == 200 and answer["answer"]["result"]["label"] == \
        digit.rsplit(".", 1)[0].split("-")[1]
