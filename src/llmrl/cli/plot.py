"""``llmrl plot RUN_DIR [RUN_DIR ...]``: training curves of one or more runs as a PNG, and optionally an HTML
page showing it with a table of each run's final values.

The curves come from each run's ``metrics.jsonl`` (one record per line: ``step``, ``kind`` = train/eval and the
metrics; non-finite values are stored as the strings ``"nan"``/``"inf"``). One panel per quantity, drawn only when
some run logged it: the RL trainers' reward, accuracy, pass@k, KL, length and loss; the preference trainers'
pair loss, pair accuracy and reward margins; a reward model's accuracy, loss and margin. Runs are overlaid, one
colour each (named by their directory, or ``RUN_DIR=label``); within a panel, train curves are solid lines and
held-out evaluations dashed lines with markers. ``--metric KEY`` plots chosen keys instead.

matplotlib is imported only when a plot is drawn (``Figure`` + the Agg canvas: no display, no pyplot state).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from llmrl.core.errors import ConfigError, DataError

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class Series:
    """One curve of a panel: the values of ``key`` in the records of ``kind`` (train/eval)."""

    kind: str
    key: str
    label: str


@dataclass(frozen=True)
class Panel:
    """A subplot. ``prefix``: its series are every eval key starting with it (``pass@``); ``varying``: drawn only
    when some run's values change (``kl_coef`` is constant unless the KL controller is adaptive)."""

    title: str
    ylabel: str
    series: tuple[Series, ...] = ()
    prefix: str | None = None
    varying: bool = False


def _s(kind: str, key: str, label: str) -> Series:
    return Series(kind, key, label)


PANELS: tuple[Panel, ...] = (
    Panel("Reward", "mean reward", (_s("train", "reward", "train (sampled)"), _s("eval", "reward", "held-out"))),
    Panel("Accuracy", "accuracy", (_s("train", "accuracy", "train"), _s("eval", "accuracy", "held-out"))),
    Panel("pass@k (held-out, sampled)", "pass@k", prefix="pass@"),
    Panel("Pair accuracy", "fraction of pairs ranked right",
          (_s("train", "rewards/accuracies", "train (implicit reward)"),
           _s("eval", "pairs/rewards/accuracies", "held-out (implicit reward)"),
           _s("eval", "pairs/logp_accuracy", "held-out (log-prob)"))),
    Panel("Reward margin (chosen − rejected)", "margin",
          (_s("train", "rewards/margins", "train"), _s("eval", "pairs/rewards/margins", "held-out"),
           _s("eval", "margin", "held-out"))),
    Panel("Implicit rewards", "β · log-ratio",
          (_s("train", "rewards/chosen", "chosen (train)"), _s("train", "rewards/rejected", "rejected (train)"))),
    Panel("KL to the reference", "KL (per token)", (_s("train", "kl", "train"),)),
    Panel("KL coefficient β", "β", (_s("train", "kl_coef", "β"),), varying=True),
    Panel("Completion length", "tokens", (_s("train", "length", "train (sampled)"), _s("eval", "length", "held-out"))),
    Panel("Loss", "loss", (_s("train", "loss", "train"), _s("eval", "loss", "held-out"),
                           _s("eval", "pairs/loss", "held-out pairs"))),
    Panel("Value loss (critic)", "loss", (_s("train", "critic/vf_loss", "train"),)),
)
"""The panels ``llmrl plot`` draws, in order, when some run has their metrics."""

_TRAIN_STYLES = ("-", ":", "-.")
_EVAL_MARKERS = ("o", "s", "^", "D", "v", "P")


@dataclass
class Run:
    """The curves of one run: ``curves[(kind, key)] = (steps, values)`` sorted by step (NaN where not finite)."""

    label: str
    path: Path
    curves: dict[tuple[str, str], tuple[list[int], list[float]]] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        return max((s[-1] for s, _ in self.curves.values() if s), default=0)


def _value(v: Any) -> float | None:
    """A metric value as a float (``"nan"``, ``"inf"`` and ``"-inf"`` included), or None for a non-metric."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(v)
    return None


def metrics_path(run: str | Path) -> Path:
    """``RUN_DIR/metrics.jsonl`` (or the file itself when ``run`` is one); DataError when it is missing."""
    p = Path(run)
    path = p if p.is_file() else p / METRICS_FILE
    if not p.exists():
        raise DataError(f"{p}: no such run directory")
    if not path.is_file():
        raise DataError(f"{p}: no {METRICS_FILE} in it (is it a run's output_dir?)")
    return path


def read_run(run: str | Path, label: str | None = None) -> Run:
    """The curves of a run directory (or of a ``metrics.jsonl``). A malformed line is a DataError naming it,
    except a cut last line (a run still writing, or killed mid-write), which is skipped; so is an empty file."""
    path = metrics_path(run)
    lines = path.read_text(errors="replace").splitlines()
    points: dict[tuple[str, str], dict[int, float]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):
                continue
            raise DataError(f"{path}:{i}: not a JSON object ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{i}: not a JSON object")
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float):
            raise DataError(f"{path}:{i}: no numeric 'step'")
        kind = str(rec.get("kind", "train"))
        for k, v in rec.items():
            f = _value(v)
            if k not in ("step", "kind") and f is not None:
                points.setdefault((kind, k), {})[int(step)] = f  # a step logged twice: the later record
    if not points:
        raise DataError(f"{path}: no metrics (the file is empty; has the run logged a step yet?)")
    name = label if label is not None else (path.parent.name if path.name == METRICS_FILE else path.stem)
    run_ = Run(name or str(path.parent), path)
    for key, pts in points.items():
        steps = sorted(pts)
        run_.curves[key] = (steps, [pts[s] for s in steps])
    return run_


def parse_run_arg(arg: str) -> tuple[str, str | None]:
    """``RUN_DIR`` or ``RUN_DIR=label`` → (path, label or None); a path that exists is never split."""
    if Path(arg).exists() or "=" not in arg:
        return arg, None
    path, label = arg.rsplit("=", 1)
    if not label:
        raise ConfigError(f"{arg!r}: empty label after '=' (RUN_DIR=label)")
    return path, label


def read_runs(args: list[str]) -> list[Run]:
    """The runs named on the command line; labels made unique (parent directories added, then ``#n``)."""
    runs = [read_run(*parse_run_arg(a)) for a in args]
    explicit = [parse_run_arg(a)[1] is not None for a in args]
    for name in {r.label for r in runs}:
        group = [r for r, given in zip(runs, explicit) if r.label == name and not given]
        dirs = [(r.path.parent if r.path.name == METRICS_FILE else r.path).resolve() for r in group]
        for depth in range(2, 5) if len(set(dirs)) > 1 else ():
            tails = ["/".join(d.parts[-depth:]) for d in dirs]
            if len(set(tails)) == len(set(dirs)):
                for r, tail in zip(group, tails):
                    r.label = tail
                break
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} #{seen[r.label]}"
    return runs


def _finite(values: list[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def select_panels(runs: list[Run], metrics: list[str] | None = None) -> list[tuple[Panel, list[Series]]]:
    """The panels to draw and, for each, the series some run has (with a finite value). ``metrics``: one panel per
    key instead (its train and eval curves); a key no run has is a ConfigError listing the keys there are."""
    def has(s: Series) -> bool:
        return any(_finite(r.curves.get((s.kind, s.key), ([], []))[1]) for r in runs)

    if metrics:
        out = []
        for key in metrics:
            series = [s for s in (_s("train", key, "train"), _s("eval", key, "held-out")) if has(s)]
            if not series:
                known = sorted({k for r in runs for (_, k) in r.curves})
                raise ConfigError(f"--metric {key}: no run logged it (keys: {', '.join(known)})")
            out.append((Panel(key, key), series))
        return out
    out = []
    for panel in PANELS:
        series = list(panel.series)
        if panel.prefix is not None:
            keys = {k for r in runs for (kind, k) in r.curves if kind == "eval" and k.startswith(panel.prefix)}
            series = [_s("eval", k, k) for k in sorted(keys, key=_natural)]
        series = [s for s in series if has(s)]
        if panel.varying:
            series = [s for s in series if any(len({v for v in r.curves.get((s.kind, s.key), ([], []))[1]
                                                    if math.isfinite(v)}) > 1 for r in runs)]
        if series:
            out.append((panel, series))
    if not out:
        known = sorted({k for r in runs for (_, k) in r.curves})
        raise DataError(f"nothing to plot in {', '.join(str(r.path) for r in runs)}: none of the usual metrics "
                        f"(reward, accuracy, kl, length, loss, ...); choose some with --metric KEY "
                        f"(keys: {', '.join(known[:20])}{', ...' if len(known) > 20 else ''})")
    return out


def _natural(key: str) -> tuple[str, int]:
    head, _, tail = key.partition("@")
    return head, int(tail) if tail.isdigit() else 0


def _style(series: list[Series], s: Series) -> dict[str, Any]:
    """Train curves: solid (then dotted, dash-dot) lines; eval: dashed lines with a marker per series."""
    same = [x for x in series if x.kind == s.kind]
    i = same.index(s)
    if s.kind == "eval":
        return {"linestyle": "--", "marker": _EVAL_MARKERS[i % len(_EVAL_MARKERS)]}
    return {"linestyle": _TRAIN_STYLES[i % len(_TRAIN_STYLES)], "marker": None}


def draw(runs: list[Run], output: str | Path, metrics: list[str] | None = None, title: str | None = None,
         dpi: int = 110) -> list[tuple[Panel, list[Series]]]:
    """Draw the panels of ``runs`` into ``output`` (any format matplotlib writes: .png, .svg, .pdf); returns
    the panels drawn."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels = select_panels(runs, metrics)
    out = Path(output)
    fig = Figure(layout="constrained")
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ConfigError(f"--output {out}: unknown image format {fmt!r} (use .png, .svg or .pdf)")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig.set_size_inches(5.2 * ncols, 3.6 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (panel, series) in zip(axes, panels):
        for s in series:
            style = _style(series, s)
            for run, color in zip(runs, colors):
                steps, values = run.curves.get((s.kind, s.key), ([], []))
                if not steps:
                    continue
                marker = style["marker"] if len(steps) <= 60 else None
                ax.plot(steps, values, color=color, linestyle=style["linestyle"], marker=marker, markersize=4,
                        linewidth=1.6 if s.kind == "train" else 1.3, alpha=0.95)
        ax.set_title(panel.title, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        handles = [Line2D([], [], color="0.25", **{k: v for k, v in _style(series, s).items() if v is not None})
                   for s in series]
        ax.legend(handles, [s.label for s in series], fontsize=8, loc="best", framealpha=0.8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    run_handles = [Line2D([], [], color=c, linewidth=3) for c in colors]
    # the title heads the runs' legend: a suptitle and an "outside" legend would overlap
    fig.legend(run_handles, [r.label for r in runs], loc="outside upper center", ncols=min(len(runs), 6),
               fontsize=10, frameon=False, title=title, title_fontproperties={"size": 13, "weight": "bold"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.{fmt}")
    try:
        fig.savefig(tmp, dpi=dpi, format=fmt)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return panels


def final_values(runs: list[Run], panels: list[tuple[Panel, list[Series]]]) -> list[tuple[str, list[str]]]:
    """Rows (metric, one cell per run): the run's last step, then the last logged value of every series drawn."""
    rows: list[tuple[str, list[str]]] = [("last step", [str(r.last_step) for r in runs])]
    seen = set()
    for _, series in panels:
        for s in series:
            if (s.kind, s.key) in seen:
                continue
            seen.add((s.kind, s.key))
            cells = []
            for r in runs:
                steps, values = r.curves.get((s.kind, s.key), ([], []))
                cells.append(_fmt(values[-1]) + (f" @{steps[-1]}" if steps[-1] != r.last_step else "")
                             if steps else "–")
            rows.append((f"{s.kind} {s.key}", cells))
    return rows


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def format_table(runs: list[Run], rows: list[tuple[str, list[str]]]) -> str:
    """The final values as aligned text (one column per run)."""
    width = max(len(name) for name, _ in rows)
    cols = [max(len(r.label), *(len(cells[i]) for _, cells in rows)) for i, r in enumerate(runs)]
    lines = [f"{'final values':{width}s}  " + "  ".join(f"{r.label:>{w}s}" for r, w in zip(runs, cols))]
    lines += [f"{name:{width}s}  " + "  ".join(f"{c:>{w}s}" for c, w in zip(cells, cols)) for name, cells in rows]
    return "\n".join(lines)


def write_html(path: str | Path, image: str | Path, runs: list[Run], rows: list[tuple[str, list[str]]],
               title: str | None = None) -> Path:
    """An HTML page showing ``image`` (linked by its path relative to the page) and the final-values table."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = quote(Path(os.path.relpath(Path(image).resolve(), out.parent.resolve())).as_posix())
    esc = html.escape
    heading = title or f"llmrl runs: {', '.join(r.label for r in runs)}"
    head = "".join(f"<th>{esc(r.label)}</th>" for r in runs)
    body = "\n".join(f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
                     for name, cells in rows)
    sources = "\n".join(f"<li><b>{esc(r.label)}</b>: <code>{esc(str(r.path))}</code></li>" for r in runs)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(heading)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; font-family: monospace; }}
</style></head>
<body>
<h1>{esc(heading)}</h1>
<p><img src="{src}" alt="training curves of {esc(', '.join(r.label for r in runs))}"></p>
<h2>Final values</h2>
<p>The last value each run logged (<code>@step</code> when it is not the run's last step).</p>
<table>
<tr><th>metric</th>{head}</tr>
{body}
</table>
<h2>Runs</h2>
<ul>
{sources}
</ul>
</body></html>
"""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(page)
    os.replace(tmp, out)
    return out


def plot_runs(run_args: list[str], output: str | Path | None = None, html_path: str | Path | None = None,
              metrics: list[str] | None = None, title: str | None = None) -> tuple[Path, Path | None, str]:
    """Read the runs, write the image (default: ``RUN_DIR/plot.png`` for one run, ``./plot.png`` for several)
    and the HTML page if asked; returns (image, page or None, the final-values table as text)."""
    runs = read_runs(run_args)
    if output is None:
        output = (runs[0].path.parent if len(runs) == 1 else Path(".")) / "plot.png"
    panels = draw(runs, output, metrics, title)
    rows = final_values(runs, panels)
    page = write_html(html_path, output, runs, rows, title) if html_path is not None else None
    return Path(output), page, format_table(runs, rows)


def plot_run_dir(run_dir: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """``RUN_DIR/plot.png`` and ``RUN_DIR/plot.html`` for one run (what the quickstart writes)."""
    d = Path(run_dir)
    png, page, _ = plot_runs([str(d)], d / "plot.png", d / "plot.html", title=title)
    assert page is not None
    return png, page


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR[=label]",
                   help="run output directories (or their metrics.jsonl); '=label' names a run in the legend")
    p.add_argument("--output", default=None, metavar="FILE.png",
                   help="the image (.png, .svg, .pdf; default RUN_DIR/plot.png for one run, ./plot.png for several)")
    p.add_argument("--html", default=None, metavar="FILE.html", help="also write a page showing the image and a "
                   "table of each run's final values")
    p.add_argument("--metric", action="append", default=None, metavar="KEY",
                   help="plot these metric keys (one panel each, train and eval) instead of the usual panels")
    p.add_argument("--title", default=None, help="a title above the panels")


def run_plot(args: argparse.Namespace) -> int:
    png, page, table = plot_runs(args.runs, args.output, args.html, args.metric, args.title)
    print(f"plot: {png}")
    if page is not None:
        print(f"html: {page}")
    print(table, file=sys.stdout)
    return 0


__all__ = ["METRICS_FILE", "PANELS", "Panel", "Run", "Series", "add_plot_arguments", "draw", "final_values",
           "format_table", "metrics_path", "parse_run_arg", "plot_run_dir", "plot_runs", "read_run", "read_runs",
           "run_plot", "select_panels", "write_html"]
