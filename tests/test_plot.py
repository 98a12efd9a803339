"""``llmrl plot``: curves of runs' metrics.jsonl as a PNG (+ an HTML page with the final values)."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from llmrl.cli.main import main
from llmrl.cli.plot import read_run, read_runs, select_panels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _write(run: Path, records: list[dict], tail: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run


def _rl_records(gain: float, nan_step: int | None = None, kl_coefs: tuple[float, ...] = ()) -> list[dict]:
    recs = [{"step": 0, "kind": "eval", "reward": 0.2, "accuracy": 0.2, "length": 3.0, "pass@1": 0.2,
             "pass@8": 0.6, "format_rate": 1.0}]
    for s in range(1, 11):
        rec = {"step": s, "kind": "train", "reward": 0.2 + gain * s, "accuracy": 0.2 + gain * s, "kl": 0.01 * s,
               "kl_coef": kl_coefs[s % len(kl_coefs)] if kl_coefs else 0.04, "length": 3.0 + 0.1 * s,
               "loss": 0.5 / s, "lr": 1e-4, "time/generate": 0.1}
        if s == nan_step:
            rec["loss"] = "nan"
            rec["kl"] = "inf"
        recs.append(rec)
        if s % 5 == 0:
            recs.append({"step": s, "kind": "eval", "reward": 0.2 + gain * s, "accuracy": 0.2 + gain * s,
                         "length": 3.0, "pass@1": 0.3, "pass@8": 0.7})
    return recs


def _dpo_records() -> list[dict]:
    recs = [{"step": 0, "kind": "eval", "reward": 0.0, "accuracy": 0.0, "length": 3.0, "pass@1": 0.0,
             "pairs/rewards/margins": 0.0, "pairs/rewards/accuracies": 0.0, "pairs/loss": 0.693,
             "pairs/logp_accuracy": 0.5}]
    for s in range(1, 5):
        recs.append({"step": s, "kind": "train", "rewards/chosen": 0.01 * s, "rewards/rejected": -0.01 * s,
                     "rewards/margins": 0.02 * s, "rewards/accuracies": 0.2 * s, "logps/chosen": -6.0,
                     "loss": 0.69 - 0.01 * s, "grad_norm": 5.0, "lr": 1e-4, "epoch": s / 3})
    recs.append({"step": 4, "kind": "eval", "reward": 0.1, "accuracy": 0.1, "length": 3.0, "pass@1": 0.1,
                 "pairs/rewards/margins": 0.07, "pairs/rewards/accuracies": 0.75, "pairs/loss": 0.65,
                 "pairs/logp_accuracy": 0.5})
    return recs


def test_two_runs_png_and_html(tmp_path, capsys):
    a = _write(tmp_path / "grpo", _rl_records(0.05, nan_step=10))
    b = _write(tmp_path / "rloo", _rl_records(0.02))
    png, page = tmp_path / "out" / "curves.png", tmp_path / "report" / "index.html"
    assert main(["plot", str(a), f"{b}=RLOO run", "--output", str(png), "--html", str(page)]) == 0
    width, height = _png_size(png)
    assert 1200 <= width <= 2500 and 600 <= height <= 2000  # 3 columns × 2 rows of readable panels
    assert png.stat().st_size > 30_000
    text = page.read_text()
    assert 'src="../out/curves.png"' in text  # relative to the page
    assert "<th>grpo</th>" in text and "<th>RLOO run</th>" in text
    assert "<td>train loss</td><td>nan</td><td>0.05</td>" in text  # grpo's last loss is NaN; rloo's 0.5 / 10
    out = capsys.readouterr().out
    assert f"plot: {png}" in out and f"html: {page}" in out
    table = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in out.splitlines()[3:]}
    assert table["eval accuracy"] == ["0.7", "0.4"] and table["train kl"] == ["inf", "0.1"]


def test_non_finite_values_are_gaps_not_errors(tmp_path):
    run = read_run(_write(tmp_path / "r", _rl_records(0.05, nan_step=3)))
    steps, loss = run.curves[("train", "loss")]
    assert steps == list(range(1, 11)) and math.isnan(loss[2]) and loss[1] == 0.25
    assert math.isinf(run.curves[("train", "kl")][1][2])
    assert ("train", "time/generate") in run.curves and ("eval", "pass@8") in run.curves
    assert run.last_step == 10 and run.label == "r"


def test_rl_panels(tmp_path):
    runs = read_runs([str(_write(tmp_path / "r", _rl_records(0.05)))])
    panels = {p.title: [f"{s.kind} {s.key}" for s in series] for p, series in select_panels(runs)}
    assert list(panels) == ["Reward", "Accuracy", "pass@k (held-out, sampled)", "KL to the reference",
                            "Completion length", "Loss"]  # no preference panels; constant β: no β panel
    assert panels["Accuracy"] == ["train accuracy", "eval accuracy"]
    assert panels["pass@k (held-out, sampled)"] == ["eval pass@1", "eval pass@8"]
    assert panels["Loss"] == ["train loss"]
    adaptive = read_runs([str(_write(tmp_path / "a", _rl_records(0.05, kl_coefs=(0.04, 0.05))))])
    assert "KL coefficient β" in [p.title for p, _ in select_panels(adaptive)]


def test_preference_panels(tmp_path, capsys):
    run = _write(tmp_path / "dpo", _dpo_records())
    panels = {p.title: [f"{s.kind} {s.key}" for s in series] for p, series in select_panels(read_runs([str(run)]))}
    assert panels["Pair accuracy"] == ["train rewards/accuracies", "eval pairs/rewards/accuracies",
                                       "eval pairs/logp_accuracy"]
    assert panels["Reward margin (chosen − rejected)"] == ["train rewards/margins", "eval pairs/rewards/margins"]
    assert panels["Loss"] == ["train loss", "eval pairs/loss"]
    assert panels["Accuracy"] == ["eval accuracy"] and "KL to the reference" not in panels
    assert main(["plot", str(run)]) == 0  # default output: RUN_DIR/plot.png
    assert _png_size(run / "plot.png")[0] > 1000
    assert "eval pairs/rewards/accuracies" in capsys.readouterr().out


def test_chosen_metrics_and_labels(tmp_path, capsys):
    a = _write(tmp_path / "x" / "run", _rl_records(0.05))
    b = _write(tmp_path / "y" / "run", _rl_records(0.02))
    assert [r.label for r in read_runs([str(a), str(b)])] == ["x/run", "y/run"]
    assert [r.label for r in read_runs([str(a), str(a)])] == ["run", "run #2"]  # the same run twice
    png = tmp_path / "lr.svg"
    assert main(["plot", str(a / "metrics.jsonl"), str(b), "--metric", "lr", "--metric", "reward",
                 "--output", str(png), "--title", "two runs"]) == 0
    assert png.read_text().lstrip().startswith("<?xml") and "two runs" in png.read_text()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[3:]] == [["train", "lr"], ["train", "reward"], ["eval", "reward"]]


def test_a_cut_last_line_is_skipped(tmp_path):
    run = _write(tmp_path / "live", _rl_records(0.05), tail='{"step": 11, "kind": "tra')
    assert read_run(run).last_step == 10


@pytest.mark.parametrize("case, message", [
    ("missing", "no such run directory"),
    ("no_metrics", "no metrics.jsonl in it"),
    ("empty", "no metrics (the file is empty"),
    ("bad_line", "metrics.jsonl:2: not a JSON object"),
    ("no_step", "metrics.jsonl:1: no numeric 'step'"),
    ("nothing_known", "nothing to plot"),
    ("unknown_metric", "--metric nope: no run logged it (keys: "),
    ("bad_format", "unknown image format 'xyz'"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, case, message):
    run = tmp_path / "run"
    args: list[str] = []
    if case == "no_metrics":
        run.mkdir()
    elif case == "empty":
        _write(run, [], tail="\n")
    elif case == "bad_line":
        _write(run, [], tail='{"step": 0, "reward": 1}\nnot json\n{"step": 1, "reward": 1}\n')
    elif case == "no_step":
        _write(run, [{"kind": "train", "reward": 1.0}])
    elif case == "nothing_known":
        _write(run, [{"step": 1, "kind": "train", "grad_norm": 1.0, "note": "text"}])
    elif case in ("unknown_metric", "bad_format"):
        _write(run, _rl_records(0.05))
        args = ["--metric", "nope"] if case == "unknown_metric" else ["--output", str(tmp_path / "p.xyz")]
    assert main(["plot", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmrl: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.tmp*"))


def test_overwrite_removes_the_plots(tmp_path):
    from llmrl.train.rundir import claim_output

    run = _write(tmp_path / "run", _rl_records(0.05))
    assert main(["plot", str(run), "--html", str(run / "plot.html")]) == 0
    (run / "notes.txt").write_text("mine")
    claim_output(run, overwrite=True).release()
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_quickstart_write_plot(tmp_path, capsys):
    from llmrl.cli.quickstart import write_plot

    run = _write(tmp_path / "qs", _rl_records(0.05))
    write_plot(run, "llmrl quickstart (seed 0)")
    assert _png_size(run / "plot.png")[0] > 1000 and 'src="plot.png"' in (run / "plot.html").read_text()
    assert capsys.readouterr().out.strip() == f"plot: {run / 'plot.png'} (and plot.html)"
    write_plot(tmp_path / "nothing", "t")  # a run without metrics: a warning, no exception
    assert "warning: no plot written" in capsys.readouterr().err


def test_a_real_tiny_run(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: {name: arithmetic}\n")
    out = tmp_path / "run"
    assert main(["train", str(recipe), *TINY, "steps=3", "eval.every=2", "algo.kl_coef=0.05", "reward.workers=0",
                 f"output_dir={out}"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out), "--html", str(out / "plot.html")]) == 0
    assert _png_size(out / "plot.png")[0] > 1000
    printed = capsys.readouterr().out
    for row in ("last step", "train reward", "eval accuracy", "train kl", "train length", "train loss"):
        assert row in printed
    assert "<th>run</th>" in (out / "plot.html").read_text()


def test_help_and_tasks_list_do_not_import_matplotlib():
    code = ("import sys\nfrom llmrl.cli.main import main\nmain(['tasks', 'list'])\n"
            "try:\n    main(['plot', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('MPL', 'matplotlib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RUN_DIR[=label]" in out.stdout and out.stdout.splitlines()[-1] == "MPL False"
