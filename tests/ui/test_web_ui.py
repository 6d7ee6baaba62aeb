"""``vlmtune ui`` as a user runs it: the server started as a command on a free port, the page driven in headless
Chromium. One server for the module, over a tiny model, a finished tiny training run (its adapter served beside
the base) and a data file with bad records. Every test checks what the page shows against what the command line
prints, saves a screenshot of its tab, and fails if the page asked for anything off this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.data.demo import make_demo_data

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
CHROMIUM = next((path for name in BROWSERS if (path := shutil.which(name))), None)
pytestmark = [pytest.mark.slow,  # a `vlmtune ui` server and a browser
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: install the Debian package `chromium`")]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
PROMPT = "What colour is the shape?"
WAIT_MS = 180_000  # a generous ceiling for a busy 2-core machine; nothing here measures time
sync_api.expect.set_options(timeout=WAIT_MS)


def _config(path: Path, base: Path, data: Path, out: Path, val: bool = True, **train) -> Path:
    settings = {"output_dir": str(out), "batch_size": 4, "logging_steps": 1, "report_to": "none",
                "progress": False, **train}
    val = f"  val: {data / 'val.jsonl'}\n" if val else ""
    path.write_text(f"model:\n  path: {base}\ndata:\n  train: {data / 'train.jsonl'}\n{val}"
                    "train:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items())
                    + "eval:\n  max_new_tokens: 4\n")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_dir) -> dict[str, Path]:
    """A tiny model, demo data, a finished run (runs/a, with its evaluation and report), a file with bad records."""
    root = tmp_path_factory.mktemp("ui")
    base = tiny_dir("qwen2_5_vl")
    data = root / "data"
    make_demo_data(data, n_train=16, n_val=4)
    # A high learning rate: six steps are enough for the adapter to answer otherwise than the base.
    finished = _config(root / "a.yaml", base, data, root / "runs" / "a", max_steps=6, lr=0.02)
    assert main(["train", str(finished)]) == 0
    records = (data / "val.jsonl").read_text().splitlines()
    bad = root / "bad.jsonl"
    broken_image = records[1].replace("images/val_0001.png", "images/missing.png")
    bad.write_text("\n".join([records[0], broken_image, '{"messages": [']) + "\n")
    (bad.parent / "images").symlink_to(data / "images")
    return {"root": root, "base": base, "data": data, "run": root / "runs" / "a", "bad": bad}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(workspace):
    """``vlmtune ui`` serving the tiny base with the run's adapter as ``tuned``, until the module ends."""
    port = _free_port()
    log = workspace["root"] / "ui.log"
    command = [sys.executable, "-m", "vlmtune.cli.main", "ui", "--runs", "runs", "--port", str(port),
               "--model", str(workspace["base"]), "--adapter", f"tuned={workspace['run'] / 'adapter'}"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=workspace["root"], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        assert process.poll() is None, f"vlmtune ui exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, f"vlmtune ui did not answer on {url}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    yield url
    process.send_signal(2)  # Ctrl-C, as a user stops it
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the UI; every request that leaves the server is refused and recorded in ``page.outside``."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    tab.outside = []

    def only_local(route):
        if route.request.url.startswith(server) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            tab.outside.append(route.request.url)
            route.abort()

    tab.route("**/*", only_local)
    tab.set_default_timeout(WAIT_MS)
    tab.goto(server)
    yield tab
    context.close()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    """Save the tab's screenshot and check it is a real picture of the page, and nothing came from outside."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == 1280 and image.height >= 1000
        pixels = np.asarray(image.convert("RGB"))
    # A rendered page has text, borders and widgets: many colours, not one flat fill.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert page.outside == [], f"the page asked for files off this machine: {page.outside}"


def _grid_rows(page, selector: str) -> list[list[str]]:
    """The body rows of a gradio Dataframe, cell texts in order."""
    return page.locator(f"{selector} [role=row]").evaluate_all(
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.textContent.trim()))"
        ".filter(cells => cells.length)")


def _predict(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["predict", *args]) == 0
    return capsys.readouterr().out.removesuffix("\n")


def test_chat_answers_an_uploaded_image_as_predict_does(page, workspace, tmp_path, capsys):
    image = workspace["data"] / "images" / "val_0002.png"
    run, base = workspace["run"], workspace["base"]
    # The base follows the adapter's run config (images, system prompt, max_new_tokens), as `predict` would.
    expected = [_predict(capsys, "--model", str(base), "--config", str(run / "config.yaml"), "--image", str(image),
                         "--prompt", PROMPT),
                _predict(capsys, "--adapter", str(run / "adapter"), "--image", str(image), "--prompt", PROMPT)]
    assert all(expected) and expected[0] != expected[1], f"base and tuned must answer, differently: {expected}"

    page.get_by_role("tab", name="Chat").click()
    page.locator("#vlmtune-chat-image input[type=file]").set_input_files(str(image))
    page.locator("#vlmtune-chat-question textarea").fill(PROMPT)
    page.locator("#vlmtune-chat-ask").click()
    for i, answer in enumerate(expected):
        sync_api.expect(page.locator(f"#vlmtune-answer-{i} textarea")).to_have_value(answer)
    labels = [page.locator(f"#vlmtune-answer-{i} [data-testid=block-info]").inner_text() for i in range(2)]
    assert labels == [base.name, "tuned"]
    _screenshot(page, tmp_path, "chat")


def test_runs_plots_the_logged_losses_and_shows_progress_and_evaluation(page, workspace, tmp_path):
    run = workspace["run"]
    page.get_by_role("tab", name="Runs").click()
    page.locator("#vlmtune-run input").click()
    page.get_by_role("option", name="a", exact=True).click()
    sync_api.expect(page.locator("#vlmtune-run-state")).to_have_text("a: finished: step 6 of 6 (100%)")

    logged = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for key, series in (("loss", "training"), ("eval_loss", "validation")):
            if key in entry:
                logged.append((entry["step"], entry[key], series))
    assert len(logged) == 7  # 6 training steps and the final validation
    # Vega draws one point per datum (shown on hover) and labels each with its values: the points plotted.
    points = page.locator("#vlmtune-loss path[aria-roledescription=point]")
    sync_api.expect(points).to_have_count(len(logged))
    plotted = []
    for label in points.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))"):
        step, loss, series = re.fullmatch(r"step: (\d+); loss: ([\d.]+); series: (\w+)", label).groups()
        plotted.append((int(step), float(loss), series))
    order = lambda p: (p[2], p[0])  # noqa: E731
    assert sorted(plotted, key=order) == [(step, pytest.approx(loss, rel=1e-9), series)
                                          for step, loss, series in sorted(logged, key=order)]

    evaluation = json.loads((run / "eval" / "metrics.json").read_text())["metrics"]
    assert _grid_rows(page, "#vlmtune-eval") == [
        [name, f"{v['base']:g}", f"{v['tuned']:g}", str(v["n"])] for name, v in evaluation.items()]
    href = page.locator("#vlmtune-report-link").get_attribute("href")
    report = page.request.get(page.url + href)
    assert report.ok and report.text() == (run / "eval" / "report.html").read_text()
    assert page.request.get(page.url + "report/../a.yaml").status == 404  # only reports are served
    _screenshot(page, tmp_path, "runs")


def test_data_lists_each_bad_record_and_marks_the_trained_tokens(page, workspace, tmp_path, capsys):
    bad, base = workspace["bad"], workspace["base"]
    capsys.readouterr()
    assert main(["data", "check", str(bad), "--model", str(base), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [p["where"] for p in problems] == [f"{bad}:2", f"{bad}:3"]

    page.get_by_role("tab", name="Data").click()
    page.locator("#vlmtune-data-path textarea").fill(str(bad))
    sync_api.expect(page.locator("#vlmtune-data-model textarea")).to_have_value(str(base))  # the UI's --model
    page.locator("#vlmtune-data-check").click()
    sync_api.expect(page.locator("#vlmtune-data-summary textarea")).to_have_value(re.compile("problems:"))
    assert _grid_rows(page, "#vlmtune-data-problems") == [
        [p["where"], p["field"] or "", p["problem"], p["kind"]] for p in problems]

    # The usable sample as `data show` renders it: its one trained span (the answer) highlighted.
    capsys.readouterr()
    assert main(["data", "show", str(bad), "--model", str(base), "-n", "1"]) == 0
    out = capsys.readouterr().out
    trained = re.findall(r"\[\[(.*?)\]\]", out[out.index("\n--- "):], re.S)  # after the legend line
    assert len(trained) == 1
    highlighted = page.locator(".vlmtune-sample .token.highlighted .text")
    sync_api.expect(highlighted).to_have_count(len(trained))
    assert highlighted.all_text_contents() == trained
    _screenshot(page, tmp_path, "data")


def _start(page, workspace, name: str, **train) -> Path:
    out = workspace["root"] / "runs" / name
    config = _config(workspace["root"] / f"{name}.yaml", workspace["base"], workspace["data"], out, **train)
    page.get_by_role("tab", name="Train").click()
    picker = page.locator("#vlmtune-train-config input")
    picker.fill(str(config))
    picker.press("Enter")
    page.locator("#vlmtune-train-start").click()
    return out


def test_train_starts_a_run_and_streams_its_log(page, workspace, tmp_path):
    out = _start(page, workspace, "b", max_steps=3, val=False)
    status, log = page.locator("#vlmtune-train-status textarea"), page.locator("#vlmtune-train-log textarea")
    sync_api.expect(status).to_have_value("exited with code 0 (finished)")
    sync_api.expect(log).to_have_value(re.compile(r"metrics: .*metrics\.json\n$"))
    shown = log.input_value()
    assert shown.startswith(f"$ vlmtune train {workspace['root'] / 'b.yaml'}\n")
    # Everything the run logged reaches the page.
    for line in (out / "train.log").read_text().splitlines():
        assert line in shown
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    _screenshot(page, tmp_path, "train")


def test_train_stop_sends_ctrl_c_and_the_run_saves_a_checkpoint(page, workspace, tmp_path):
    out = _start(page, workspace, "c", max_steps=1_000_000, save_steps=100_000, val=False)
    log = page.locator("#vlmtune-train-log textarea")
    sync_api.expect(log).to_have_value(re.compile(r"'loss'"))  # training steps are being logged

    # Meanwhile the Runs tab follows it: running, its step of the planned total, the curve growing.
    page.get_by_role("tab", name="Runs").click()
    page.get_by_role("button", name="refresh the list").click()
    page.locator("#vlmtune-run input").click()
    page.get_by_role("option", name="c", exact=True).click()
    state = page.locator("#vlmtune-run-state")
    sync_api.expect(state).to_have_text(re.compile(r"^\s*c: running: step \d+ of 1000000 \(\d+%\)\s*$"))
    points = page.locator("#vlmtune-loss path[aria-roledescription=point]")
    sync_api.expect(points).not_to_have_count(0)
    seen = points.count()
    sync_api.expect(points).not_to_have_count(seen)  # redrawn as the run logs more steps
    _screenshot(page, tmp_path, "runs-running")

    page.get_by_role("tab", name="Train").click()
    page.locator("#vlmtune-train-stop").click()
    sync_api.expect(page.locator("#vlmtune-train-status textarea")).to_have_value("exited with code 130 (interrupted)")
    step = int(re.search(r"interrupted at step (\d+); checkpoint saved: ", log.input_value()).group(1))
    assert (out / "checkpoints" / f"checkpoint-{step}").is_dir() and not (out / "metrics.json").exists()
    _screenshot(page, tmp_path, "train-stopped")
