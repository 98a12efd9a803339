"""Every shipped recipe runs as a user runs it, with bounded memory and in bounded time.

Each recipe is started in a subprocess exactly as the README says, ``llmrl train recipes/NAME.yaml steps=2
output_dir=DIR`` (a fresh DIR per run), plus only the knob that makes its trainer's run two steps long where
``steps`` does not (:data:`TWO_STEPS`) and a warm start shortened to :data:`WARM_START_STEPS`. Its peak RSS (the largest of the process and the children it waited for,
from ``wait4``) must stay below :data:`CEILING_MB` (a watchdog kills it there) and it must finish within
:data:`BUDGET_S`. Something must be printed within :data:`FIRST_OUTPUT_S` (the live progress is on, as shipped).

A recipe written for a real model (``model.intended``) must instead refuse to start without ``model.path``: one
line on stderr naming ``model.path`` and the model, exit 2, nothing written. It then runs with the tiny-model
overrides its own comments give (the comment line ``llmrl train recipes/NAME.yaml model.intended=null ...``), so
that what the recipe documents is what CI runs.

The runs go two at a time on a 2-core machine (as many as there are cores), each confined to its own core with
CPU affinity, as ``taskset -c N llmrl train ...`` would: ``threads: 0`` (auto, the default) then uses 1 thread.
The recipes themselves are not changed.

A table (recipe, trainer, peak RSS MB, wall and CPU seconds, seconds to the first output) is printed at the end of
the module and written to ``recipe_runs.md`` in pytest's cache directory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

CEILING_MB = 3072  # peak RSS of a two-step run
BUDGET_S = 1800.0  # wall seconds of a two-step run: generous, a shared 2-core machine can be loaded 5x over
FIRST_OUTPUT_S = 120.0  # wall seconds until the run prints anything

# What makes each trainer's run two steps long, besides `steps=2` (which every run gets):
# rl, dvpo, dpo: `steps` (dpo: as long as pref.epochs is 0, as in the shipped dpo recipe); reward_model: rm.max_steps
# (rm.epochs would train whole passes); mpo: mix.policy_steps (RL steps of each single-objective policy; `steps` is
# not read); online_dpo, onpo: one iteration (sample -> rank -> pair -> ceil(online.epochs * pairs / pref.batch_size)
# optimizer steps; `steps` is not read). The warm starts are shortened to WARM_START_STEPS optimizer steps
# (sft.steps, dvpo's gvm.steps) where the recipe asks for more: run in full (2000 SFT steps) they were ~100 of each
# such run's ~120 s and over half of the suite's time in CI, while what they exercise is the same SFT loop whose
# learning tests/test_quickstart.py and tests/test_sft_cli.py check; every other setting is the recipe's own.
TWO_STEPS: dict[str, list[str]] = {
    "rl": [], "dvpo": [], "dpo": [],
    "reward_model": ["rm.max_steps=2"],
    "mpo": ["mix.policy_steps=2"],
    "online_dpo": ["online.iterations=1"],
    "onpo": ["online.iterations=1"],
    "revise": [],  # `steps` = optimizer steps of each stage (verify, correct)
    "reasoner_critic": [],  # `steps` is not read: two SFT runs (sft.steps, reflect.critic_steps) and an evaluation
}
WARM_START_STEPS = 60  # >= every shipped recipe's sft.warmup_steps (dpo: 50)

# Kept for other tests that run a recipe in-process on the tiny model (tests/test_curate.py).
COMMON = [*TINY, "model.path=null", "model.intended=null", "model.dtype=float32", "steps=2", "save_every=0",
          "sft.steps=2", "sft.num_examples=16", "eval.size=4", "rollout.max_new_tokens=8"]

ROWS: dict[str, dict[str, object]] = {}


@dataclass
class Run:
    rc: int
    out: str  # stdout + stderr, in order
    peak_mb: float
    wall_s: float
    cpu_s: float
    first_output_s: float | None
    killed: str | None
    out_dir: str = ""  # the run's output_dir= argument


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_llmrl(args: list[str], log: Path, ceiling_mb: float = CEILING_MB, budget_s: float = BUDGET_S,
              cpus: set[int] | None = None) -> Run:
    """``llmrl ARGS`` from the repository root in its own process group, output to ``log``; killed past
    ``ceiling_mb`` RSS or ``budget_s`` seconds; confined to the cores ``cpus`` when given (CPU affinity)."""
    exe = shutil.which("llmrl", path=str(Path(sys.executable).parent)) or "llmrl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with open(log, "wb") as f:
        p = subprocess.Popen([exe, *args], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             cwd=ROOT, start_new_session=True,
                             preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))
    first, killed, peak = None, None, 0.0
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _rss_mb(p.pid))
        if first is None and log.stat().st_size > 0:
            first = time.monotonic() - t0
        if killed is None and (peak > ceiling_mb or time.monotonic() - t0 > budget_s):
            killed = f"RSS {peak:.0f} MB > {ceiling_mb} MB" if peak > ceiling_mb else f"ran past {budget_s:.0f} s"
            os.killpg(p.pid, signal.SIGKILL)
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    try:  # reward workers or anything else the run left behind
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return Run(rc=p.returncode, out=log.read_text(errors="replace"), peak_mb=max(peak, usage.ru_maxrss / 1024),
               wall_s=time.monotonic() - t0, cpu_s=usage.ru_utime + usage.ru_stime, first_output_s=first,
               killed=killed, out_dir=next((a.split("=", 1)[1] for a in args if a.startswith("output_dir=")), ""))


def tiny_overrides(recipe: Path) -> list[str]:
    """The overrides after ``llmrl train recipes/NAME.yaml`` on the recipe's ``model.intended=null`` comment line
    (continued over further comment lines ending in a backslash)."""
    lines = [ln.lstrip("#").strip() for ln in recipe.read_text().splitlines() if ln.startswith("#")]
    head = f"llmrl train recipes/{recipe.name} model.intended=null"
    for i, line in enumerate(lines):
        if line.startswith(head):
            text = line
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i]
            return shlex.split(text)[3:]
    raise AssertionError(f"{recipe.name}: model.intended is set but no comment line says `{head} ...`")


def _record(recipe: Path, trainer: str, how: str, run: Run) -> None:
    ROWS[recipe.stem] = {"trainer": trainer, "how": how, "peak_mb": round(run.peak_mb), "wall_s": round(run.wall_s, 1),
                         "cpu_s": round(run.cpu_s, 1), "first_output_s": None if run.first_output_s is None
                         else round(run.first_output_s, 1), "rc": run.rc}


def _tail(run: Run) -> str:
    return "\n".join(run.out.replace("\r", "\n").strip().splitlines()[-15:])


@pytest.fixture(scope="module", autouse=True)
def _table(request: pytest.FixtureRequest):
    yield
    if not ROWS:
        return
    head = "| recipe | trainer | run | peak RSS MB | wall s | CPU s | first output s |"
    rows = [head, "|---|---|---|---:|---:|---:|---:|"]
    rows += [f"| {name} | {r['trainer']} | {r['how']} | {r['peak_mb']} | {r['wall_s']} | {r['cpu_s']} | "
             f"{r['first_output_s']} |" for name, r in sorted(ROWS.items())]
    text = "\n".join(rows)
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        path = cache.mkdir("llmrl") / "recipe_runs.md"
        path.write_text(text + "\n")
        (path.parent / "recipe_runs.json").write_text(json.dumps(ROWS, indent=1))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            for line in rows:
                reporter.write_line(line)


# The two-step runs that took longest with their warm starts in full (80-150 s each on a shared 2-core VM; 7-50 s
# for the others): started first, so that the two cores end together; marked slow.
SLOW = {"arithmetic_grpo", "arithmetic_retry_multiturn", "clamp_dpo", "dpo", "dvpo", "maporl", "mpo", "par_ppo",
        "ppo"}


def _recipe_params() -> list[object]:
    return [pytest.param(r, id=r.stem, marks=[pytest.mark.slow] if r.stem in SLOW else []) for r in RECIPES]


def _args(recipe: Path) -> tuple[list[str], str | None, str]:
    """(``llmrl train recipes/NAME.yaml steps=2 ...`` arguments, model.intended, trainer)."""
    data = yaml.safe_load(recipe.read_text())
    trainer = data.get("trainer", "rl")
    assert not (data.get("pref") or {}).get("epochs"), "pref.epochs > 0: `steps` would not bound the run"
    short = [f"{key}.steps={WARM_START_STEPS}" for key in ("sft", "gvm")
             if int((data.get(key) or {}).get("steps") or 0) > WARM_START_STEPS]
    return ["train", str(recipe.relative_to(ROOT)), "steps=2", *TWO_STEPS[trainer], *short], \
        (data.get("model") or {}).get("intended"), trainer


def _run_recipe(recipe: Path, tmp: Path, cpus: set[int] | None) -> tuple[Run | None, Run]:
    """(the refused run of a real-model recipe without model.path, or None; the two-step run)."""
    args, intended, _ = _args(recipe)
    refused = None
    if intended:
        refused = run_llmrl([*args, f"output_dir={tmp / 'refused'}"], tmp / "refused.log", budget_s=300, cpus=cpus)
        args += tiny_overrides(recipe)
    return refused, run_llmrl([*args, f"output_dir={tmp / 'run'}"], tmp / "run.log", cpus=cpus)


class _Runs:
    """The selected recipes' runs, started together when the first test asks: as many at a time as this process
    has cores, each confined to one core (so ``threads: 0`` = auto gives each run 1 thread and no run waits for
    another's; a user running two recipes side by side with ``taskset`` sees the same), the rest queued."""

    def __init__(self) -> None:
        self.futures: dict[str, concurrent.futures.Future[tuple[Run | None, Run]]] = {}
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self, recipes: list[Path], tmp: Path) -> None:
        cores = sorted(os.sched_getaffinity(0))
        slots: queue.Queue[int] = queue.Queue()
        for core in cores:
            slots.put(core)

        def job(recipe: Path) -> tuple[Run | None, Run]:
            core = slots.get()
            try:
                return _run_recipe(recipe, tmp / recipe.stem, {core} if len(cores) > 1 else None)
            finally:
                slots.put(core)

        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(cores))
        for recipe in recipes:
            (tmp / recipe.stem).mkdir()
            self.futures[recipe.stem] = self.pool.submit(job, recipe)

    def result(self, recipe: Path) -> tuple[Run | None, Run]:
        return self.futures[recipe.stem].result()


@pytest.fixture(scope="module")
def recipe_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    runs = _Runs()
    selected = [item.callspec.params["recipe"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_recipe_runs_two_steps_as_shipped"]
    selected.sort(key=lambda r: r.stem not in SLOW)  # the longest first, so that the two cores end together
    runs.start(selected, tmp_path_factory.mktemp("recipes"))
    yield runs
    if runs.pool is not None:
        runs.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("recipe", _recipe_params())
def test_recipe_runs_two_steps_as_shipped(recipe: Path, recipe_runs: _Runs) -> None:
    _, intended, trainer = _args(recipe)
    refused, run = recipe_runs.result(recipe)
    out = Path(run.out_dir)
    how = "as shipped"
    if intended:
        assert refused is not None
        lines = refused.out.strip().splitlines()
        assert refused.rc == 2, _tail(refused)
        assert len(lines) == 1 and lines[0].startswith("llmrl: error: model.path: ") and intended in lines[0], \
            refused.out
        assert not (out.parent / "refused").exists()
        how = "tiny overrides"
    _record(recipe, trainer, how, run)
    assert run.killed is None, f"{recipe.name}: {run.killed}\n{_tail(run)}"
    assert run.rc == 0, f"{recipe.name}: exit {run.rc}\n{_tail(run)}"
    assert run.peak_mb < CEILING_MB
    assert run.first_output_s is not None and run.first_output_s < FIRST_OUTPUT_S, _tail(run)
    summary = json.loads((out / "summary.json").read_text())
    assert summary, f"{recipe.name}: empty summary"
    assert (out / "config.yaml").is_file()


def test_a_recipe_for_a_real_model_resolves_and_is_refused_only_without_a_model(tmp_path: Path) -> None:
    from llmrl.config import load_config
    from llmrl.core.errors import ConfigError
    from llmrl.train.build import require_model

    recipe = ROOT / "recipes" / "logic_rl.yaml"
    cfg = load_config(recipe)  # resolving it (llmrl config) is fine
    with pytest.raises(ConfigError, match=r"^model\.path: required: .*Qwen2\.5-7B-Instruct-1M"):
        require_model(cfg)
    require_model(cfg, tmp_path)  # a model given otherwise: a resumed SFT model, an SFT teacher
    require_model(load_config(recipe, [f"model.path={tmp_path}"]))
    require_model(load_config(recipe, ["model.intended=null"]))


def test_tiny_overrides_are_found_in_the_comments(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# Tiny model:\n#   llmrl train recipes/r.yaml model.intended=null a.b=1 \\\n#     c.d=[1,2]\n"
                      "model: {intended: X}\n")
    assert tiny_overrides(recipe) == ["model.intended=null", "a.b=1", "c.d=[1,2]"]
    recipe.write_text("model: {intended: X}\n")
    with pytest.raises(AssertionError, match="no comment line"):
        tiny_overrides(recipe)


def test_slow_marks_name_recipes() -> None:
    assert SLOW <= {r.stem for r in RECIPES}


def test_every_recipe_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z0-9_]+)`", section))
    assert {r.stem for r in RECIPES} <= named


def test_eval_sft_and_rft_of_a_real_model_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`llmrl eval RECIPE --model DIR` is given its model: not refused for model.path (it fails later here, on the
    missing directory); `llmrl sft`/`rft` without one are refused before output_dir is created."""
    from llmrl.cli.main import main

    recipe = str(ROOT / "recipes" / "logic_rl.yaml")
    assert main(["eval", recipe, "--model", str(tmp_path / "no_model")]) == 2
    err = capsys.readouterr().err
    assert "model.path: required" not in err and "no_model" in err
    for cmd in (["sft"], ["rft"]):
        assert main([*cmd, recipe, f"output_dir={tmp_path / 'out'}"]) == 2
        assert "model.path: required" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_unknown_task_option_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmrl.cli.main import main

    args = ["train", str(ROOT / "recipes" / "countdown_grpo.yaml"), f"output_dir={tmp_path / 'o'}"]
    assert main([*args, "task.options.n_numbers_typo=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmrl: error: task.options: ") and "n_numbers_typo" in err[0]
    assert main([*args, "task.name=nope"]) == 2
    assert capsys.readouterr().err.startswith("llmrl: error: task.name: unknown task 'nope'")
    assert not (tmp_path / "o").exists()
