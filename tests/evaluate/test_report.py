import html
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlmtune.evaluate.report import write_report

COLOURS = {"magenta": (255, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 255, 0)}
XSS = "<script>alert(1)</script>"
BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")


def _row(i: int, image, base: float, tuned: float, prompt: str = "What colour is this?") -> dict:
    return {"id": f"val.jsonl:{i}", "images": [str(image)], "prompt": prompt, "reference": "red",
            "base": f"base answer {i}", "tuned": f"tuned answer {i}",
            "scores": {"exact_match": {"base": base, "tuned": tuned}, "anls": {"base": 0.5, "tuned": 0.5}}}


@pytest.fixture
def report_inputs(tmp_path):
    """Three solid-colour samples: a tie (magenta), a loss (cyan) and a win (yellow), plus one broken image."""
    paths = {}
    for name, colour in COLOURS.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (96, 72), colour).save(paths[name])
    predictions = [_row(0, paths["magenta"], 1.0, 1.0, prompt=XSS), _row(1, paths["cyan"], 1.0, 0.0),
                   _row(2, paths["yellow"], 0.0, 1.0), _row(3, tmp_path / "missing.png", 0.0, 0.0)]
    metrics = {"n": 4, "task": "vqa", "model": "tiny/<model>", "adapter": "runs/a",
               "metrics": {"exact_match": {"base": 0.5, "tuned": 0.75}, "anls": {"base": 0.5, "tuned": 0.5}}}
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in [
        {"step": 10, "loss": 2.3, "learning_rate": 1e-4}, {"step": 20, "loss": 1.7},
        {"step": 20, "eval_loss": 1.9}, {"step": 20, "train_loss": 2.0}]) + '{"step": 30, "lo')
    return tmp_path / "out", metrics, predictions, log


def test_report_structure(report_inputs):
    out, metrics, predictions, log = report_inputs
    page = write_report(out, metrics, predictions, log).read_text()
    assert re.search(r"<tr><td>exact_match</td><td>0\.500</td><td>0\.750</td><td class=\"pos\">\+0\.250</td></tr>",
                     page)
    assert "<tr><td>anls</td><td>0.500</td><td>0.500</td>" in page
    assert XSS not in page and html.escape(XSS) in page
    assert "tiny/&lt;model&gt;" in page
    # 3 thumbnails and the loss plot are inline; the missing image is a placeholder.
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/(?:jpeg|png);base64,', page)) == 4
    assert 'class="placeholder"' in page and "missing.png" in page
    assert "src=\"http" not in page and "<script" not in page
    order = [page.index(f"tuned answer {i}") for i in (2, 1, 0, 3)]
    assert order == sorted(order), "win first, then the loss, then the rest"


def test_report_tuned_only_and_cap(tmp_path, images):
    rows = [{"id": str(i), "images": [str(images["red.png"])], "prompt": "p", "reference": "r", "tuned": "t",
             "scores": {"exact_match": {"tuned": 1.0}}} for i in range(70)]
    page = write_report(tmp_path, {"n": 70, "metrics": {"exact_match": {"tuned": 1.0}}}, rows).read_text()
    assert "<tr><th>metric</th><th>tuned</th></tr>" in page and "delta" not in page
    assert page.count('class="card') == 60 and "10 more samples not shown" in page
    assert "<h2>Loss</h2>" not in page


def test_report_without_matplotlib(report_inputs, monkeypatch):
    out, metrics, predictions, log = report_inputs
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes any matplotlib import raise ImportError
    page = write_report(out, metrics, predictions, log).read_text()
    assert "pip install 'vlmtune[report]'" in page
    assert 'alt="loss curves"' not in page


def test_report_loss_curves(report_inputs):
    pytest.importorskip("matplotlib")
    out, metrics, predictions, log = report_inputs
    assert 'alt="loss curves" src="data:image/png;base64,' in write_report(out, metrics, predictions, log).read_text()


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.slow  # a browser
@pytest.mark.skipif(_browser() is None, reason="no chromium binary: install the Debian package `chromium`")
def test_report_renders_in_headless_chromium(report_inputs, tmp_path):
    out, metrics, predictions, log = report_inputs
    page = write_report(out, metrics, predictions, log)
    shot = tmp_path / "shot.png"
    base = [_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
            "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table class="metrics">' in dom.stdout and "<td>exact_match</td>" in dom.stdout
    assert "<script" not in dom.stdout and html.escape(XSS) in dom.stdout  # parsed as text, not as an element
    shoot = subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=60)
    assert shoot.returncode == 0 and shot.exists(), shoot.stderr[-2000:]
    # Solid test colours appear only if the browser decoded the data-URI thumbnails (JPEG shifts them slightly).
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    for name, colour in COLOURS.items():
        hits = int((np.abs(pixels - np.array(colour)) <= 24).all(axis=-1).sum())
        assert hits >= 96 * 72 * 0.9, f"{name} thumbnail not rendered ({hits} px)"


def test_report_of_a_grpo_run_shows_its_reward_curves(report_inputs):
    out, metrics, predictions, log = report_inputs
    log.write_text("".join(json.dumps(e) + "\n" for e in [
        {"step": 5, "loss": 0.0, "reward": 0.25, "rewards/iou/mean": 0.125, "rewards/format/mean": 0.5},
        {"step": 10, "loss": 0.01, "reward": 0.75, "rewards/iou/mean": 0.375, "rewards/format/mean": 1.0},
        {"step": 10, "train_loss": 0.005}]))
    page = write_report(out, metrics, predictions, log).read_text()
    assert ('<h2>Reward</h2>\n<ul class="rewards"><li>reward: 0.250 at step 5 &rarr; 0.750 at step 10</li>'
            "<li>iou: 0.125 at step 5 &rarr; 0.375 at step 10</li>"
            "<li>format: 0.500 at step 5 &rarr; 1.000 at step 10</li></ul>") in page
    assert 'alt="reward curves" src="data:image/png;base64,' in page


def test_report_of_an_sft_run_has_no_reward_section(report_inputs):
    out, metrics, predictions, log = report_inputs
    page = write_report(out, metrics, predictions, log).read_text()
    assert "<h2>Reward</h2>" not in page and "reward curves" not in page
