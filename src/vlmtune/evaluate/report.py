"""One self-contained ``report.html`` for an evaluation: metric table, loss curves and a gallery of samples.

Everything is inline (CSS, thumbnails and the plot as data URIs), so the file can be mailed or archived alone
and opened offline; the page needs no script.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from ..data.images import load_image

GALLERY_CAP = 60
THUMB_SIDE = 256
SIDES = ("base", "tuned")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{margin:0 0 4px}h2{margin:28px 0 8px}.meta{color:#555}.meta b{color:#222}
table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{border:1px solid #ccc;padding:4px 10px}
table.metrics td{text-align:right}table.metrics td:first-child{text-align:left}
.pos{color:#070}.neg{color:#b00}.note{color:#555;font-style:italic}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{border:1px solid #ccc;border-left-width:6px;border-radius:4px;padding:8px}
.card.win{border-left-color:#3a3}.card.loss{border-left-color:#c33}
.thumbs img,.placeholder{max-width:256px;max-height:256px;margin:0 4px 4px 0;vertical-align:top}
.placeholder{display:inline-block;width:120px;height:90px;background:#eee;border:1px dashed #999;
  color:#666;font-size:12px;padding:4px;box-sizing:border-box;overflow:hidden;word-break:break-all}
.text{white-space:pre-wrap;max-height:12em;overflow:auto;margin:2px 0 6px}.label{color:#666;font-size:12px}
.id{color:#888;font-size:12px}
"""


def write_report(out_dir: Path, metrics: dict, predictions: list[dict], loss_log: Path | None = None,
                 title: str = "vlmtune evaluation") -> Path:
    """Write ``out_dir/report.html`` and return its path.

    ``metrics`` is the content of metrics.json, ``predictions`` the rows of predictions.jsonl and ``loss_log`` a
    run's metrics.jsonl (Trainer log lines). A missing matplotlib only drops the plot; unreadable images become
    placeholder boxes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics.get("metrics") or {}
    names = list(table) or list((predictions[0].get("scores") or {}) if predictions else [])
    sides = [s for s in SIDES if any(s in v for v in table.values()) or any(s in p for p in predictions)]
    body = [f"<h1>{_esc(title)}</h1>", _header(metrics, len(predictions)), _metric_table(table, sides)]
    if loss_log is not None:
        body.append(_loss_section(Path(loss_log)))
        body.append(_reward_section(Path(loss_log)))
    body.append(_gallery(predictions, names[0] if names else None, sides))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _esc(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else str(value))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    number = _number(value)
    return "–" if value is None else f"{number:.3f}" if number is not None else _esc(value)


def _header(metrics: dict, n_rows: int) -> str:
    items = [("model", metrics.get("model")), ("adapter", metrics.get("adapter")),
             ("samples", metrics.get("n", n_rows)), ("task", metrics.get("task"))]
    return '<p class="meta">' + " &nbsp;·&nbsp; ".join(
        f"{k}: <b>{_esc(v)}</b>" for k, v in items if v not in (None, "")) + "</p>"


def _delta_cell(base: Any, tuned: Any) -> str:
    b, t = _number(base), _number(tuned)
    if b is None or t is None:
        return "<td>–</td>"
    delta = t - b
    css = "pos" if delta > 0 else "neg" if delta < 0 else ""
    return f'<td class="{css}">{delta:+.3f}</td>'


def _metric_table(table: dict, sides: list[str]) -> str:
    # "n": the samples each metric scored (a mixed grounding set scores boxes and text answers apart).
    counted = any(isinstance(v, dict) and "n" in v for v in table.values())
    head = "<tr><th>metric</th>" + "".join(f"<th>{s}</th>" for s in sides)
    head += ("<th>delta</th>" if "base" in sides else "") + ("<th>n</th>" if counted else "") + "</tr>"
    rows = []
    for name, values in table.items():
        values = values if isinstance(values, dict) else {"tuned": values}
        if values.get("n") == 0:  # nothing scored: its value means nothing
            values = {"n": 0}
        cells = "".join(f"<td>{_fmt(values.get(s))}</td>" for s in sides)
        if "base" in sides:
            cells += _delta_cell(values.get("base"), values.get("tuned"))
        if counted:
            cells += f"<td>{_esc(values.get('n', '–'))}</td>"
        rows.append(f"<tr><td>{_esc(name)}</td>{cells}</tr>")
    return '<h2>Metrics</h2>\n<table class="metrics">' + head + "".join(rows) + "</table>"


def read_losses(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``(training, validation)`` loss points ``(step, loss)`` of a run's metrics.jsonl, in file order; a missing
    file or unreadable lines give none (the report and the web UI plot these)."""
    train, val = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return train, val
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a run killed mid-write leaves a partial last line
            continue
        if not isinstance(entry, dict) or _number(entry.get("step")) is None:
            continue
        for key, points in (("loss", train), ("eval_loss", val)):
            if _number(entry.get(key)) is not None:
                points.append((entry["step"], entry[key]))
    return train, val


def loss_curve_png(path: Path) -> bytes | None:
    """Training and validation loss against step from a run's metrics.jsonl, as PNG bytes (None: no losses).

    Raises ImportError without matplotlib.
    """
    train, val = read_losses(path)
    if not train and not val:
        return None
    return _line_chart_png([(points, label, style) for points, label, style in
                            ((train, "training loss", "-"), (val, "validation loss", "o-")) if points], "loss")


def _loss_section(path: Path) -> str:
    try:
        png = loss_curve_png(path)
    except ImportError:
        return ('<h2>Loss</h2>\n<p class="note">No loss plot: matplotlib is not installed '
                "(pip install 'vlmtune[report]').</p>")
    if png is None:
        return ""
    return f'<h2>Loss</h2>\n<img alt="loss curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def read_rewards(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Mean reward per logged step of a GRPO run's metrics.jsonl: ``{"reward": [(step, mean), ...], name: ...}``
    with the sum of the weighted rewards under ``reward`` and each reward's own mean under its name; empty for a
    run without rewards."""
    curves: dict[str, list[tuple[float, float]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return curves
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a run killed mid-write leaves a partial last line
            continue
        if not isinstance(entry, dict) or _number(entry.get("step")) is None:
            continue
        for key, value in entry.items():
            name = "reward" if key == "reward" else key[len("rewards/"):-len("/mean")] \
                if key.startswith("rewards/") and key.endswith("/mean") else None
            if name is not None and _number(value) is not None:
                curves.setdefault(name, []).append((entry["step"], value))
    return curves


def reward_curve_png(curves: dict[str, list[tuple[float, float]]]) -> bytes:
    """The curves of :func:`read_rewards` against step, as PNG bytes. Raises ImportError without matplotlib."""
    return _line_chart_png([(points, name, "-" if name == "reward" else "--") for name, points in curves.items()],
                           "mean reward")


def _line_chart_png(lines: list[tuple[list[tuple[float, float]], str, str]], ylabel: str) -> bytes:
    """``(points, label, matplotlib style)`` lines against step, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas leaves pyplot's global state and the user's backend alone.
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for points, label, style in lines:
        ax.plot(*zip(*points, strict=True), style, label=label, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _reward_section(path: Path) -> str:
    curves = read_rewards(path)
    if not curves:
        return ""
    lines = "".join(f"<li>{_esc(name)}: {_fmt(points[0][1])} at step {points[0][0]} &rarr; {_fmt(points[-1][1])} "
                    f"at step {points[-1][0]}</li>" for name, points in curves.items())
    section = f'<h2>Reward</h2>\n<ul class="rewards">{lines}</ul>'
    try:
        png = reward_curve_png(curves)
    except ImportError:
        return section + ('\n<p class="note">No reward plot: matplotlib is not installed '
                          "(pip install 'vlmtune[report]').</p>")
    return section + f'\n<img alt="reward curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _b64(buf: io.BytesIO) -> str:
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thumbnail(path: Any, cache: dict[str, str]) -> str:
    key = str(path)
    if key not in cache:
        try:
            # The image as the model was shown it (upright, transparency on white): boxes drawn on it line up.
            im = load_image(key)
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
            cache[key] = f'<img alt="{_esc(Path(key).name)}" src="data:image/jpeg;base64,{_b64(buf)}">'
        except Exception:  # any unreadable image (missing, truncated, odd mode) must not sink the whole report
            cache[key] = f'<span class="placeholder" title="{_esc(key)}">image not readable: {_esc(key)}</span>'
    return cache[key]


def _delta(row: dict, metric: str | None) -> float | None:
    scores = ((row.get("scores") or {}).get(metric) or {}) if metric else {}
    base, tuned = _number(scores.get("base")), _number(scores.get("tuned"))
    return None if base is None or tuned is None else tuned - base


def _order(predictions: list[dict], metric: str | None, cap: int) -> list[tuple[dict, float | None]]:
    """Biggest wins, then biggest losses, then the rest; wins take at most half the cap when losses exist."""
    rated = [(row, _delta(row, metric)) for row in predictions]
    wins = sorted((r for r in rated if r[1] is not None and r[1] > 0), key=lambda r: -r[1])
    losses = sorted((r for r in rated if r[1] is not None and r[1] < 0), key=lambda r: r[1])
    rest = [r for r in rated if r[1] is None or r[1] == 0]
    # Without the cap split, a run with many wins would hide every regression past the cut.
    shown_wins = wins[:max(cap // 2, cap - len(losses))]
    shown_losses = losses[:cap - len(shown_wins)]
    return (shown_wins + shown_losses + rest)[:cap]


def _gallery(predictions: list[dict], metric: str | None, sides: list[str], cap: int = GALLERY_CAP) -> str:
    if not predictions:
        return "<h2>Samples</h2>\n<p class=\"note\">No predictions.</p>"
    cache: dict[str, str] = {}
    cards = []
    for row, delta in _order(predictions, metric, cap):
        kind = "win" if delta is not None and delta > 0 else "loss" if delta is not None and delta < 0 else ""
        images = row.get("images") or []
        parts = [f'<div class="card {kind}"><div class="id">{_esc(row.get("id", ""))}</div>',
                 '<div class="thumbs">' + "".join(_thumbnail(p, cache) for p in images) + "</div>",
                 '<div class="label">prompt</div><div class="text">' + _esc(row.get("prompt", "")) + "</div>",
                 '<div class="label">reference</div><div class="text">' + _esc(row.get("reference", "")) + "</div>"]
        for side in sides:
            if side in row:
                parts.append(f'<div class="label">{side}</div><div class="text {side}">{_esc(row[side])}</div>')
        scores = row.get("scores") or {}
        lines = [f"{_esc(name)}: " + " → ".join(_fmt((v or {}).get(s)) for s in sides if s in (v or {}))
                 for name, v in scores.items() if isinstance(v, dict)]
        if lines:
            parts.append('<div class="label">scores (' + " → ".join(sides) + ")</div><div>"
                         + "<br>".join(lines) + "</div>")
        cards.append("".join(parts) + "</div>")
    left = len(predictions) - len(cards)
    note = f'<p class="note">{left} more samples not shown (the gallery is capped at {cap}).</p>' if left else ""
    order = "biggest wins first, then biggest losses" if "base" in sides else "in evaluation order"
    return (f'<h2>Samples</h2>\n<p class="note">{len(cards)} of {len(predictions)} samples, {order}.</p>\n'
            f'<div class="gallery">{"".join(cards)}</div>\n{note}')
