"""The reward pool: values, order, 1 vs N workers, timeouts, crashes, memory bound, counting, clean shutdown,
and RL runs whose rewards hang or misbehave (they finish, count the failures and still update)."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import CharCountTask
from safetensors.torch import load_file

from llmrl.config import load_config
from llmrl.core.types import Episode
from llmrl.rewards.pool import FLOAT32_MAX, PoolOptions, RewardPool, run_in_process, score_rows, task_pool
from llmrl.rl.loop import train
from llmrl.tasks import get_task
from llmrl.tasks.base import TASKS, split_of
from llmrl.train.collect import score_episodes, score_summary
from llmrl.train.config import RewardConfig
from llmrl.train.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent


def _children() -> set[int]:
    """Live (not zombie) child processes of this process."""
    me, out = os.getpid(), set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == me and fields[0] != "Z":
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# ----------------------------------------------------------------------------- values and order
def test_hand_checked_values_weights_none_and_failure_value():
    fns = {"len": lambda c, s: float(len(c)), "answer": lambda c, s: 2.0 if c == s["answer"] else 0.0,
           "maybe": lambda c, s: None if c.startswith("x") else -0.5}
    with RewardPool(fns, PoolOptions(workers=2)) as pool:
        outs = pool.score(["42", "x7", "abc"], [{"answer": "42"}, {"answer": "7"}, {"answer": "abc"}],
                          weights={"len": 0.5, "answer": 3.0})
    # "42": 0.5*2 + 3*2 - 0.5 = 6.5;  "x7": 0.5*2 + 0 (maybe: None, left out) = 1.0;  "abc": 1.5 + 6 - 0.5 = 7.0
    assert [o.total for o in outs] == [6.5, 1.0, 7.0]
    assert outs[0].components == {"len": 2.0, "answer": 2.0, "maybe": -0.5}
    assert outs[1].components == {"len": 2.0, "answer": 0.0}
    assert all(not o.failures and not o.failed and not o.timed_out for o in outs)


def _det_reward(c, s):  # deterministic, some None
    h = sum((i + 1) * ord(ch) for i, ch in enumerate(c)) % 1000
    return None if h % 7 == 0 else h / 100.0 - s["shift"]


def _flaky(c, s):  # raises on some inputs: failures must not depend on the workers either
    if len(c) % 5 == 0:
        raise ValueError(f"bad length {len(c)}")
    return math.sqrt(len(c))


def test_one_worker_and_many_give_identical_results_on_random_inputs():
    rng = random.Random(3)
    comps = ["".join(rng.choice("ab12+= ") for _ in range(rng.randrange(0, 30))) for _ in range(300)]
    samples = [{"shift": rng.uniform(-1, 1)} for _ in comps]
    fns = {"det": _det_reward, "flaky": _flaky}
    got = []
    for workers in (0, 1, 3):
        with RewardPool(fns, PoolOptions(workers=workers)) as pool:
            got.append([asdict(o) for o in pool.score(comps, samples, failure_value=-2.0)])
    assert got[0] == got[1] == got[2]
    assert sum(bool(o["failures"]) for o in got[0]) == sum(len(c) % 5 == 0 for c in comps) > 0
    assert got[0][1]["total"] == pytest.approx(
        (_det_reward(comps[1], samples[1]) or 0.0) + (-2.0 if len(comps[1]) % 5 == 0 else math.sqrt(len(comps[1]))))


def test_verdicts_and_task_rewards_match_in_process_scoring():
    task = get_task("arithmetic")
    samples = task.samples(40, "train", 0)
    comps = [task.demonstration(s) if i % 3 else "12" for i, s in enumerate(samples)]
    with RewardPool(lambda: (task.reward_functions(), {"correct": task.is_correct}), PoolOptions(workers=2)) as pool:
        outs = pool.score(comps, samples, checks=True)
    for o, c, s in zip(outs, comps, samples):
        want = {k: f(c, s) for k, f in task.reward_functions().items()}
        assert o.components == want and o.total == sum(want.values())
        assert o.checks == {"correct": task.is_correct(c, s)}


# ----------------------------------------------------------------------------- failures
def _hangs(c, s):
    if c == "hang":
        while True:  # pure Python; a C loop holding the GIL is killed the same way (SIGKILL)
            pass
    return 1.0


def _sleeps(c, s):
    if c == "sleep":
        time.sleep(10_000)
    return 2.0


def test_a_hanging_component_fails_within_the_timeout_and_the_others_keep_their_values():
    fns = {"first": lambda c, s: 0.25, "hang": _hangs, "sleep": _sleeps, "last": lambda c, s: float(len(c))}
    comps = ["a", "hang", "bb", "sleep", "ccc", "hang"]
    with RewardPool(fns, PoolOptions(workers=2, timeout=0.5)) as pool:
        t0 = time.monotonic()
        outs = pool.score(comps, [{}] * len(comps), failure_value=-1.0)
        took = time.monotonic() - t0
        stats = pool.stats
    assert took < 6.0, took  # three timeouts of 0.5 s on two workers, plus process starts on a busy machine
    assert outs[1].components == {"first": 0.25, "hang": -1.0, "sleep": 2.0, "last": 4.0}
    assert outs[1].failed == outs[1].timed_out == ["hang"] and "timed out after 0.5 s" in outs[1].failures[0]
    assert outs[3].components == {"first": 0.25, "hang": 1.0, "sleep": -1.0, "last": 5.0}
    assert outs[3].timed_out == ["sleep"]
    for i in (0, 2, 4):
        assert outs[i].components == {"first": 0.25, "hang": 1.0, "sleep": 2.0, "last": float(len(comps[i]))}
    assert stats.timeouts == {"hang": 2, "sleep": 1} and stats.failures == {"hang": 2, "sleep": 1}
    assert stats.replaced == 3


def _exit(c, s):
    if c == "exit":
        raise SystemExit(3)
    return 1.0


def _os_exit(c, s):
    if c == "os_exit":
        os._exit(7)
    return 1.0


def _sigkill(c, s):
    if c == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return 1.0


def _segfault(c, s):
    if c == "segfault":
        ctypes.string_at(0)
    return 1.0


def _memory_error(c, s):
    if c == "memory_error":
        raise MemoryError("out of memory")
    return 1.0


def _hog(c, s):  # beyond the 256 MiB bound: one big allocation, then a growing list
    if c == "hog":
        return float(len(bytearray(2 << 30)))
    if c == "slow_hog":
        chunks = []
        while True:
            chunks.append(bytearray(8 << 20))
    return 1.0


def _values(c, s):
    return {"f32_over": 3.5e38, "inf_over": 1e39, "string": "7.5", "nan": math.nan, "neg_over": -3.5e38,
            "max_f32": FLOAT32_MAX}.get(c, 1.0)


def test_every_kind_of_failure_is_counted_under_its_reward_name():
    fns = {"exit": _exit, "os_exit": _os_exit, "sigkill": _sigkill, "segfault": _segfault,
           "memory_error": _memory_error, "hog": _hog, "values": _values}
    comps = ["ok", "exit", "os_exit", "sigkill", "segfault", "memory_error", "hog", "slow_hog", "f32_over",
             "inf_over", "string", "nan", "neg_over", "max_f32", "ok"]
    with RewardPool(fns, PoolOptions(workers=2, timeout=20, memory_mb=256)) as pool:
        outs = pool.score(comps, [{}] * len(comps), failure_value=-1.0)
        by = dict(zip(comps, outs))
        assert by["ok"].total == 7.0 and not by["ok"].failures
        assert by["max_f32"].components["values"] == FLOAT32_MAX and not by["max_f32"].failed  # the edge is fine
        expect = {"exit": "exit", "os_exit": "os_exit", "sigkill": "sigkill", "segfault": "segfault",
                  "memory_error": "memory_error", "hog": "hog", "slow_hog": "hog", "f32_over": "values",
                  "inf_over": "values", "string": "values", "nan": "values", "neg_over": "values"}
        for completion, name in expect.items():
            o = by[completion]
            assert o.failed == [name] and o.timed_out == [], (completion, o)
            assert o.components[name] == -1.0 and o.total == 6 * 1.0 - 1.0, (completion, o)
        assert "SystemExit: 3" in by["exit"].failures[0]
        assert "exit code 7" in by["os_exit"].failures[0]
        assert "SIGKILL" in by["sigkill"].failures[0] and "SIGSEGV" in by["segfault"].failures[0]
        assert "MemoryError" in by["hog"].failures[0] and "MemoryError" in by["slow_hog"].failures[0]
        assert "not a number" in by["string"].failures[0] and "nan" in by["nan"].failures[0]
        assert "beyond" in by["f32_over"].failures[0] and "beyond" in by["inf_over"].failures[0]
        assert pool.stats.failures == {"exit": 1, "os_exit": 1, "sigkill": 1, "segfault": 1, "memory_error": 1,
                                       "hog": 2, "values": 5}
        assert pool.stats.replaced == 3  # os._exit, SIGKILL, segfault; the memory hogs only raised
        # the replaced workers score later completions, in later calls too
        again = pool.score(["ok", "segfault", "ok"], [{}] * 3, failure_value=-1.0)
        assert [o.total for o in again] == [7.0, 5.0, 7.0]


def test_large_samples_and_a_hung_worker_do_not_stall_the_caller():
    # jobs far larger than a socket buffer are never queued behind a busy (here: hung) worker
    samples = [{"blob": "x" * 300_000, "i": i} for i in range(8)]
    comps = ["hang" if i == 1 else "a" for i in range(8)]
    with RewardPool({"r": _hangs, "n": lambda c, s: float(s["i"])}, PoolOptions(workers=1, timeout=0.5)) as pool:
        t0 = time.monotonic()
        outs = pool.score(comps, samples, failure_value=-1.0)
        assert time.monotonic() - t0 < 10
    assert [o.total for o in outs] == [1.0 + i if i != 1 else -1.0 + 1 for i in range(8)]


def test_an_unpicklable_sample_is_scored_in_the_caller():
    samples = [{"f": lambda: 0}, {"f": None}]
    with RewardPool({"pid": lambda c, s: float(os.getpid())}, PoolOptions(workers=1)) as pool:
        outs = pool.score(["a", "b"], samples)
    assert outs[0].total == os.getpid() != outs[1].total


def test_max_abs_is_configurable():
    with RewardPool({"r": lambda c, s: float(c)}, PoolOptions(workers=1, max_abs=100.0)) as pool:
        outs = pool.score(["100", "-100.5", "3"], [{}] * 3, failure_value=0.0)
    assert [o.failed for o in outs] == [[], ["r"], []] and [o.total for o in outs] == [100.0, 0.0, 3.0]


# ----------------------------------------------------------------------------- processes
def _torch_reward(c, s):
    x = torch.ones(128, 128)
    return float((x @ x)[0, 0]) + len(c)


def test_a_reward_using_torch_runs_in_a_worker_forked_from_a_multithreaded_torch():
    torch.set_num_threads(2)
    torch.randn(300, 300) @ torch.randn(300, 300)  # the parent's OpenMP pool is running
    try:
        with RewardPool({"t": _torch_reward}, PoolOptions(workers=2, timeout=20)) as pool:
            outs = pool.score(["a", "bb", "ccc", "dddd"], [{}] * 4)
    finally:
        torch.set_num_threads(1)
    assert [o.total for o in outs] == [129.0, 130.0, 131.0, 132.0] and not any(o.failures for o in outs)


def _pid(c, s):
    time.sleep(0.025)
    return float(os.getpid())


def test_workers_persist_across_calls_and_slow_rewards_use_every_worker():
    torch.set_num_threads(2)  # the parent has torch's thread pool running when it forks
    torch.randn(300, 300) @ torch.randn(300, 300)
    torch.set_num_threads(1)
    with RewardPool({"pid": _pid}, PoolOptions(workers=2)) as pool:
        t0 = time.monotonic()
        first = {o.total for o in pool.score(["x"] * 40, [{}] * 40)}
        took = time.monotonic() - t0
        second = {o.total for o in pool.score(["y"] * 40, [{}] * 40)}
    assert len(first) == 2 and first == second and os.getpid() not in first  # both workers ran calls
    del took  # the speed-up itself is measured in benchmarks/reward_pool.py, not asserted here


def test_in_process_rewards_run_in_the_caller():
    marked = run_in_process(lambda c, s: float(os.getpid()))
    with RewardPool({"here": marked, "there": lambda c, s: float(os.getpid())}, PoolOptions(workers=1)) as pool:
        (o,) = pool.score(["a"], [{}])
    assert o.components["here"] == os.getpid() != o.components["there"]
    from llmrl.rewards.judge import make_judge_reward
    from llmrl.rewards.reward_model import RewardModelReward

    # model-backed rewards read the live weights: they never run in a forked copy
    assert make_judge_reward(None, None).in_process is True and RewardModelReward.in_process is True  # type: ignore[arg-type]
    before = _children()
    with RewardPool({"r": lambda c, s: float(os.getpid())}, PoolOptions(workers=0)) as pool:
        assert pool.score(["a"], [{}])[0].total == os.getpid() and _children() == before


def test_close_leaves_no_process_and_ctrl_c_kills_the_busy_workers():
    # Ctrl-C as Python delivers it by default, whatever an earlier test in this process left installed or blocked
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        _ctrl_c_kills_the_busy_workers()
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _ctrl_c_kills_the_busy_workers() -> None:
    before = _children()
    pool = RewardPool({"sleep": _sleeps, "pid": lambda c, s: float(os.getpid())}, PoolOptions(workers=2))
    pool.score(["a", "b"], [{}] * 2)
    assert len(_children() - before) == 1  # the template (the workers are its children)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        pool.score(["sleep", "a"], [{}] * 2)
    timer.join()
    outs = pool.score(["a", "b", "c"], [{}] * 3)  # usable after the interrupt, no stale result read
    assert [o.components["sleep"] for o in outs] == [2.0, 2.0, 2.0]
    pool.close()
    assert _children() == before


def test_task_pool_is_shared_and_closes_with_the_task():
    before = _children()
    task = get_task("arithmetic")
    pool = task_pool(task)
    assert task_pool(task) is pool and task_pool(task, PoolOptions()) is pool
    other = task_pool(task, PoolOptions(workers=1))
    assert other is not pool and task_pool(task) is other
    s = task.samples(2, "train", 0)
    assert other.score([task.demonstration(x) for x in s], s, checks=True)[0].checks == {"correct": True,
                                                                                      "well_formed": True}
    assert _children() != before
    del task, pool, other, s
    gc.collect()
    deadline = time.monotonic() + 5
    while _children() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() == before


_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from llmrl.rewards.pool import PoolOptions, RewardPool

    def pid(c, s):
        if c == "hang":
            time.sleep(10_000)
        return float(os.getpid())

    pool = RewardPool({"pid": pid}, PoolOptions(workers=2, timeout=1000))
    pids = sorted({int(o.total) for o in pool.score(["a"] * 8, [{}] * 8)})
    print(*pids, pool._procs.pid, flush=True)
    if sys.argv[1] == "hang":
        pool.score(["hang", "hang"], [{}] * 2)
    sys.stdin.readline()  # then exit without closing the pool
""")


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_no_process_outlives_its_parent(how, tmp_path):
    script = tmp_path / "pool_child.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), "exit" if how == "exit" else "hang"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    pids = [int(x) for x in proc.stdout.readline().split()]  # type: ignore[union-attr]
    assert len(pids) == 3 and all(_alive(p) for p in pids)  # two workers, the template
    if how == "killed":
        time.sleep(0.3)  # the workers are in the hanging call
        proc.kill()
    proc.communicate("\n", timeout=60)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


# ----------------------------------------------------------------------------- helpers around the pool
def test_score_rows_streams_in_order_through_one_pool():
    rows = ((str(i), {"k": i}) for i in range(1000))
    outs = list(score_rows({"r": lambda c, s: float(c) * 2 + s["k"]}, rows, options=PoolOptions(workers=2),
                           batch_size=128))
    assert [o.total for o in outs] == [3.0 * i for i in range(1000)]


def test_options_from_the_config_section_and_bounds():
    opts = PoolOptions.of(RewardConfig(workers=3, timeout=0.25, memory_mb=0, max_abs=10.0))
    assert opts == PoolOptions(workers=3, timeout=0.25, memory_mb=0, max_abs=10.0)
    assert PoolOptions.of(None, timeout=2.0, workers=None) == PoolOptions(timeout=2.0)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        PoolOptions(timeout=0)
    cfg = load_config(None, ["reward.workers=0", "reward.timeout=1.5"])
    assert PoolOptions.of(cfg.reward) == PoolOptions(workers=0, timeout=1.5)


def test_score_episodes_and_the_summary_count_failures_by_name():
    class Task(CharCountTask):
        def reward_functions(self):
            return {"a_rate": self._score, "bad": lambda c, s: "7.5" if "b" in c else 0.0, "slow": _sleeps}

    task = Task()
    eps = [Episode.single_turn([1], [2, 3], [0.0, 0.0], {"prompt": "1:", "answer": "aaaa"}, completion=c)
           for c in ("aa", "ab", "sleep", "bb")]
    score_episodes(eps, task, -1.0, 8, pool=RewardPool(lambda: (task.reward_functions(), {
        "correct": task.is_correct, "well_formed": task.is_well_formed}), PoolOptions(workers=2, timeout=0.5)))
    assert [e.reward for e in eps] == [1.0 + 0 + 2, 0.5 - 1 + 2, 0.0 + 0 - 1, 0.0 - 1 + 2]
    assert [e.metadata["correct"] for e in eps] == [True, True, False, False]
    assert eps[2].metadata["reward_timeouts"] == ["slow"] and eps[3].metadata["reward_failed"] == ["bad"]
    m = score_summary(eps)
    assert m["reward_failures"] == 3.0 and m["reward_timeouts"] == 1.0
    assert (m["reward_failures/bad"], m["reward_failures/slow"], m["reward_failures/a_rate"]) == (2.0, 1.0, 0.0)


class HangingCliTask(CharCountTask):
    name = "test_hanging_cli"

    def reward_functions(self):
        return {"a_rate": self._score, "slow": _sleeps}


def test_llmrl_reward_takes_workers_and_timeout(tmp_path, capsys, monkeypatch):
    import json

    from llmrl.cli.main import main

    monkeypatch.setitem(TASKS._items, "test_hanging_cli", HangingCliTask)
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"prompt": "1:", "answer": "aaaa", "completion": c} for c in ("aa", "sleep", "ab")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["reward", "test_hanging_cli", "--input", str(src), "--output", str(dst), "--failure-value", "-1"]
    assert main([*args, "--workers", "2", "--timeout", "0.5"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.index("}") + 1])
    assert summary["reward_timeouts"] == 1 and summary["reward_failures/slow"] == 1 and summary["reward_failures"] == 1
    assert [json.loads(x)["reward"] for x in dst.read_text().splitlines()] == [3.0, -1.0, 2.5]
    assert main([*args, "--workers", "-1"]) == 2
    assert "workers must be >= 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- RL runs
class HangOncePerStepTask(CharCountTask):
    """The first training completion scored in each step of 16 (4 prompts × 4 samples) sleeps forever.
    Calls are numbered across the worker processes by creating files atomically (O_EXCL)."""

    name = "test_hang_once"

    def __init__(self, *, calls_dir: str, target: str = "a") -> None:
        super().__init__(target=target)
        self.calls_dir = calls_dir

    def reward_functions(self):
        def reward(completion, sample):
            if split_of(sample["prompt"], self.test_fraction) == "train":
                i = 0
                while True:
                    try:
                        os.close(os.open(f"{self.calls_dir}/{i}", os.O_CREAT | os.O_EXCL))
                        break
                    except FileExistsError:
                        i += 1
                if i % 16 == 0:
                    time.sleep(10_000)
            return self._score(completion, sample)

        return {"a_rate": reward}


def test_rl_run_with_a_reward_that_hangs_once_per_step_finishes(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS._items, "test_hang_once", HangOncePerStepTask)
    (tmp_path / "calls").mkdir()
    cfg = load_config(None, [*tiny_overrides, "task.name=test_hang_once", f"task.options={{calls_dir: {tmp_path}/calls}}",
                             "steps=3", "reward.timeout=0.5", "reward.workers=2"])
    from llmrl.train import run as run_module

    real = run_module.build_collector

    def with_reward_section(run, c, data, failure_value):  # until build_collector passes cfg.reward itself
        collector = real(run, c, data, failure_value)
        collector.reward = c.reward
        collector.__post_init__()
        return collector

    monkeypatch.setattr("llmrl.rl.loop.build_collector", with_reward_section)
    before = _children()
    t0 = time.monotonic()
    train(cfg)
    took = time.monotonic() - t0
    gc.collect()  # the run's pool closes with its collector and task: no process is left behind
    deadline = time.monotonic() + 5
    while _children() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() == before
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    per_step = [round(r["time/generate"], 2) for r in rows]
    print(f"hanging reward: {len(rows)} steps in {took:.1f} s; collect+score seconds per step {per_step}")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["reward_timeouts"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["reward_failures/a_rate"] for r in rows] == [1.0, 1.0, 1.0]
    assert all(0.5 <= t < 30 for t in per_step), per_step
    assert all(math.isfinite(r["loss"]) for r in rows)


class BadValueTask(CharCountTask):
    """About half of the completions (odd code-point sum) get a bad reward value (option ``bad``); the others
    score 1 + the 'a' rate."""

    name = "test_bad_value"

    def __init__(self, *, bad: str, target: str = "a") -> None:
        super().__init__(target=target)
        self.bad = bad

    def reward_functions(self):
        def reward(completion, sample):
            if sum(map(ord, completion)) % 2:
                if self.bad == "exit":
                    raise SystemExit(1)
                return {"f32_over": 3.5e38, "inf_over": 1e39, "string": "7.5"}[self.bad]
            return 1.0 + self._score(completion, sample)

        return {"shaky": reward}


@pytest.mark.parametrize("bad", ["exit", "f32_over", "inf_over", "string"])
def test_rl_run_counts_bad_reward_values_and_still_updates(bad, tiny_overrides, monkeypatch):
    monkeypatch.setitem(TASKS._items, "test_bad_value", BadValueTask)
    cfg = load_config(None, [*tiny_overrides, "task.name=test_bad_value", f"task.options={{bad: {bad}}}",
                             "steps=2", "optim.lr=1e-2", "algo.reward_failure_value=-0.5"])
    from llmrl.rl import loop

    initial: dict[str, torch.Tensor] = {}
    real = loop.build_run

    def build_run(*args, **kwargs):  # keep the weights the run starts from
        run = real(*args, **kwargs)
        initial.update({k: v.detach().clone() for k, v in run.model.state_dict().items()})
        return run

    monkeypatch.setattr(loop, "build_run", build_run)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train(cfg)
    assert not [w for w in record if "update skipped" in str(w.message)]
    rows = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["reward_failures"] > 0 and r["reward_failures/shaky"] == r["reward_failures"] for r in rows), rows
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)
    assert all(-0.5 <= r["reward"] <= 2.0 for r in rows)
    final = load_file(f"{cfg.output_dir}/final_model/model.safetensors")
    assert set(final) <= set(initial) and final
    assert max((final[k] - initial[k]).abs().max().item() for k in final) > 0


def _burn(completion, sample):
    end = time.process_time() + 0.3  # 0.3 s of CPU time
    while time.process_time() < end:
        pass
    return 1.0


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat") or not hasattr(os, "sched_setaffinity"),
                    reason="needs Linux schedstat and CPU affinity")
def test_time_waiting_for_a_cpu_does_not_count_towards_the_timeout():
    """Worker and three busy loops share one CPU: 0.3 s of CPU work takes ~1.2 s of wall clock, beyond the 0.5 s
    timeout, yet it is not a timeout (the run-queue wait is not the reward's time); a call that sleeps is."""
    import subprocess
    import sys

    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
            for _ in range(3)]
    try:
        os.sched_setaffinity(0, {cpu})  # the pool's processes inherit it
        with RewardPool({"burn": _burn, "nap": lambda c, s: time.sleep(3)}, PoolOptions(workers=1, timeout=0.5)) as pool:
            t0 = time.monotonic()
            (o,) = pool.score(["x"], [{}])
            took = time.monotonic() - t0
    finally:
        os.sched_setaffinity(0, before)
        for h in hogs:
            h.kill()
            h.wait()
    assert o.components["burn"] == 1.0 and "burn" not in o.failed, (o, took)
    assert o.timed_out == ["nap"]
