"""The web console in a real browser (issue 17): Debian's chromium driven by
Playwright, against the ferroserve binary on free loopback ports with a temporary
copy of examples/models and a temporary state directory.

Twice, without and with tokens: loads the console (through the `/` redirect), sees
the example models AVAILABLE, runs a prediction from the "try it" form and checks
the answer against the fixture's expected output, sees the live charts sample the
server's metrics, uploads a model with the progress bar and sees it become
AVAILABLE, then deploys, stops and deletes it through the confirmed buttons; keyboard
focus survives the live refresh; an image model's form sends a file and answers the
tensor PIL + numpy make from it. With tokens, the shell loads without one, the data asks for one, and the
token entered is sent from then on, and markup an inference client wrote into the
prediction log never runs: a crafted `..%2F` link's page is refused, and a JSON
answer is never put into the page as HTML. Screenshots go to target/console-screenshots/.

usage: .venv-clients/bin/python tests/console_browser.py target/debug/ferroserve
(never `playwright install`: the browser is /usr/bin/chromium)
"""

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "target" / "console-screenshots"
IMAGES = ROOT / "tests" / "fixtures" / "preprocess" / "images"
TOKEN = "fst_console-browser-test-token-inference-management"
WAIT_MS = 30_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, work, with_tokens):
    models = work / "models"
    shutil.copytree(ROOT / "examples" / "models", models)
    # An image model: the gray identity graph behind `[preprocess] image`, so the
    # answer is the tensor the server made from the image.
    (models / "gray_image" / "1").mkdir(parents=True)
    shutil.copy(IMAGES / "identity_nchw1.onnx", models / "gray_image" / "1" / "model.onnx")
    (models / "gray_image" / "config.toml").write_text(
        '[preprocess]\nimage = { width = 32, height = 24, resize = "crop", '
        'channels = "gray", layout = "nchw" }\n'
    )
    # A text model whose every prediction is logged: the log is JSON that holds what
    # any inference client wrote, which the console must never run as HTML.
    (models / "ft" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "fasttext" / "softmax.bin", models / "ft" / "1" / "model.bin")
    (models / "ft" / "config.toml").write_text("[log]\nsample_rate = 1.0\n")
    rest, grpc = free_port(), free_port()
    args = [
        str(binary), "serve",
        "--model-repository", str(models),
        "--state-dir", str(work / "state"),
        "--rest-addr", f"127.0.0.1:{rest}",
        "--grpc-addr", f"127.0.0.1:{grpc}",
    ]
    if with_tokens:
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        (work / "tokens.toml").write_text(
            f'[[token]]\nname = "console"\nsha256 = "{digest}"\n'
            'scopes = ["inference", "management", "metrics"]\n'
        )
        args += ["--auth-tokens", str(work / "tokens.toml")]
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".ort" / "libonnxruntime.so.1.31.1"))
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{rest}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("server did not get ready:\n" + (work / "server.log").read_text())
        time.sleep(0.1)


def flatten(value):
    if isinstance(value, list):
        return [x for v in value for x in flatten(v)]
    return [value]


def expected(model, row):
    data = json.loads((ROOT / "examples" / "models" / model / "1" / "expected.json").read_text())
    return data["rows"][row], data["sklearn_predict"][row]


def run(browser, binary, with_tokens):
    name = "tokens" if with_tokens else "open"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, base = start_server(binary, work, with_tokens)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: d.accept())
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # `/` redirects to the console; the shell loads without a token.
            page.goto(base + "/")
            assert page.url == base + "/console", page.url
            models = page.locator("#models")
            if with_tokens:
                expect(page.locator("#token-form")).to_be_visible(timeout=WAIT_MS)
                expect(models).to_contain_text("A token is needed", timeout=WAIT_MS)
                page.screenshot(path=str(SHOTS / f"{name}-0-asks-for-token.png"))
                page.fill("#token-input", TOKEN)
                page.click("#token-form button[type=submit]")
                page.wait_for_load_state()
                expect(page.locator("#token-form")).to_be_hidden(timeout=WAIT_MS)
                expect(page.locator("#token-forget")).to_be_visible()
            for model in ["iris_lr", "iris_dt", "iris_sklearn"]:
                row = page.locator(f'tr[data-model="{model}"]')
                expect(row).to_contain_text("AVAILABLE", timeout=WAIT_MS)
            page.screenshot(path=str(SHOTS / f"{name}-1-models.png"), full_page=True)
            # Keyboard: focus stays on a model's link while the table refreshes
            # (every 2 s, morphed in place).
            page.focus('tr[data-model="iris_dt"] a')
            page.wait_for_timeout(4500)
            focused = page.evaluate("document.activeElement && document.activeElement.textContent")
            assert focused == "iris_dt", focused

            # A prediction from the form generated from the signature: the
            # scikit-learn model by feature name, the ONNX one by position.
            model, row = ("iris_lr", 7) if with_tokens else ("iris_sklearn", 5)
            features, answer = expected(model, row)
            page.click(f'tr[data-model="{model}"] a')
            page.wait_for_url(base + f"/console/models/{model}")
            form = page.locator("#try-form")
            expect(form).to_be_visible(timeout=WAIT_MS)
            fields = form.locator("[data-feature]")
            assert fields.count() == len(features), fields.count()
            for i, value in enumerate(features):
                fields.nth(i).fill(repr(value))
            # Reached by keyboard: the submit button is a button, and Enter submits.
            fields.nth(len(features) - 1).press("Enter")
            expect(page.locator("#try-prediction")).to_have_text(json.dumps(answer), timeout=WAIT_MS)
            expect(page.locator("#try-latency")).to_contain_text("round trip")
            # The charts sample the server's metrics every second; the prediction
            # above shows in the totals.
            expect(page.locator("#charts-now")).to_contain_text("Now:", timeout=WAIT_MS)
            expect(page.locator("#charts-now")).to_contain_text("1 requests", timeout=WAIT_MS)
            expect(page.locator("#model-detail")).to_contain_text("AVAILABLE")
            page.screenshot(path=str(SHOTS / f"{name}-2-model.png"), full_page=True)

            # An image model's form takes a file, sent as multipart; the answer is
            # the tensor PIL + numpy make from it (python/make_preprocess_fixtures.py).
            if not with_tokens:
                page.goto(base + "/console/models/gray_image")
                form = page.locator("#try-form")
                expect(form).to_have_attribute("data-mode", "image", timeout=WAIT_MS)
                page.set_input_files("#try-field-0", str(IMAGES / "photo.png"))
                page.click("#try-form button[type=submit]")
                expect(page.locator("#try-prediction")).to_be_visible(timeout=WAIT_MS)
                got = flatten(json.loads(page.locator("#try-prediction").text_content()))
                raw = (IMAGES / "crop_gray_photo_png.f32").read_bytes()
                want = struct.unpack(f"<{len(raw) // 4}f", raw)
                assert len(got) == len(want), (len(got), len(want))
                worst = max(abs(a - b) for a, b in zip(got, want))
                assert worst <= 3 / 255, worst
                page.screenshot(path=str(SHOTS / f"{name}-2b-image-model.png"), full_page=True)

            # Upload with the progress bar; the new model becomes AVAILABLE.
            page.goto(base + "/console")
            uploaded = f"uploaded_{name}"
            page.set_input_files("#upload-file", str(ROOT / "examples/models/iris_dt/1/model.onnx"))
            page.fill("#upload-model", uploaded)
            page.click("#upload-form button[type=submit]")
            expect(page.locator("#upload-result")).to_contain_text(f"model {uploaded} version 1 uploaded", timeout=WAIT_MS)
            assert page.locator("#upload-progress").get_attribute("value") == "100"
            expect(page.locator(f'tr[data-model="{uploaded}"]')).to_contain_text("AVAILABLE", timeout=WAIT_MS)
            page.screenshot(path=str(SHOTS / f"{name}-3-uploaded.png"), full_page=True)

            # Deploy, stop and delete it, each confirmed: the page shows the effect.
            page.goto(base + f"/console/models/{uploaded}")
            page.fill("#deploy-timeout", "30")
            page.fill("#deploy-cpu", "500m")
            page.click("#deploy-form button[type=submit]")
            expect(page.locator("#manage-result")).to_contain_text("deployed", timeout=WAIT_MS)
            expect(page.locator("#model-detail")).to_contain_text("500m", timeout=WAIT_MS)
            expect(page.locator("#model-detail")).to_contain_text("30 s")
            # Stopping a deployed model ends its deployment: it is served in process
            # again (its worker drains and exits). Stopping it again stops it.
            page.click('button[data-action="stop"]')
            expect(page.locator("#manage-result")).to_contain_text("stop", timeout=WAIT_MS)
            expect(page.locator("#model-detail")).to_contain_text("Not deployed", timeout=WAIT_MS)
            page.click('button[data-action="stop"]')
            expect(page.locator("#model-detail")).to_contain_text("(stopped)", timeout=WAIT_MS)
            page.click('button[data-action="delete"]')
            page.wait_for_url(base + "/console", timeout=WAIT_MS)
            expect(page.locator('tr[data-model="iris_lr"]')).to_be_visible(timeout=WAIT_MS)
            expect(page.locator(f'tr[data-model="{uploaded}"]')).to_have_count(0)

            # An unknown model's page.
            page.goto(base + "/console/models/no_such_model")
            expect(page.locator("main")).to_contain_text("not found", timeout=WAIT_MS)

            if with_tokens:
                stored_markup_never_runs(page, base)
            assert not errors, errors
            page.close()
            print(f"console browser test ({name}): ok")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def call(base, method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=body and json.dumps(body).encode())
    request.add_header("Authorization", "Bearer " + TOKEN)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read().decode()


def stored_markup_never_runs(page, base):
    """An inference client writes markup into the prediction log; a console user
    (management token in the tab) follows a crafted link meant to make the page
    fetch that log and swap it in as HTML, which would run the markup with the token
    in reach. The link's page is refused, and the page's script shows a JSON answer
    that is no console fragment as text, never as HTML."""
    payload = "<img src=x onerror=document.title=`STOLEN:`+sessionStorage.getItem(`ferroserve-token`)>"
    call(base, "POST", "/v1/models/ft:predict", {"instances": [payload]})
    deadline = time.monotonic() + 30
    while "onerror" not in call(base, "GET", "/v1/models/ft/predictions"):
        assert time.monotonic() < deadline, "the prediction was never logged"
        time.sleep(0.2)
    response = page.goto(base + "/console/models/..%2F..%2F..%2Fv1%2Fmodels%2Fft%2Fpredictions")
    assert response.status == 404, response.status
    expect(page.locator("main")).to_contain_text("not a valid model name", timeout=WAIT_MS)
    # Were a page to ask for the log anyway, it is not put in as HTML.
    page.goto(base + "/console")
    page.evaluate("""() => {
        const probe = document.createElement("div");
        probe.id = "probe";
        probe.setAttribute("hx-get", "/v1/models/ft/predictions");
        probe.setAttribute("hx-trigger", "load");
        document.querySelector("main").appendChild(probe);
        if (window.htmx && htmx.process) htmx.process(probe);
    }""")
    expect(page.locator("#probe")).to_contain_text("not part of the console", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    assert page.locator("#probe img").count() == 0
    assert "STOLEN" not in page.title(), page.title()


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/ferroserve").resolve()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            run(browser, binary, with_tokens=False)
            run(browser, binary, with_tokens=True)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
