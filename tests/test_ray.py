"""Rollout and reward workers on Ray (a local 2-CPU cluster, started once for the module): the same results as
in-process for a fixed seed, a killed rollout actor replaced with no sample lost or counted twice, the reward
pool's failure rules on Ray tasks, clear config errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from llmrl.config import load_config  # noqa: E402
from llmrl.core.errors import ConfigError  # noqa: E402
from llmrl.rewards.pool import PoolOptions, RewardPool  # noqa: E402
from llmrl.rl.loop import train  # noqa: E402
from llmrl.rl.ray_workers import RayGenerator, chunks  # noqa: E402
from llmrl.rollout.base import SamplingParams  # noqa: E402
from llmrl.train.metrics import read_metrics  # noqa: E402

TESTS = str(Path(__file__).parent)
F64 = ["model.dtype=float64", "task.test_size=4", "eval.samples=0", "eval.pass_k=[1]", "steps=2",
       "task.name=test_char_a", "seed=3", "optim.lr=1e-2", "rollout.prompts_per_step=6", "rollout.samples_per_prompt=4"]
RAY = ["ray.enabled=true", "ray.worker_cpus=0.5"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module (start-up takes seconds); the test task's module (conftest) importable
    by the workers, which unpickle its reward functions."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    yield
    ray.shutdown()


def _final(out: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(f"{out}/final_model/model.safetensors")


def test_chunks_cover_every_prompt_once():
    for n in range(0, 9):
        for k in range(1, 5):
            parts = chunks(n, k)
            assert [i for s, e in parts for i in range(s, e)] == list(range(n))
            assert all(e > s for s, e in parts)


@pytest.mark.slow  # two short runs, one with 2 actors + a reward worker: ~30 s idle, minutes on the loaded VM
def test_ray_workers_train_like_one_process_with_per_group_seeds(tiny_overrides, tmp_path, monkeypatch):
    """2 Ray rollout actors + 1 Ray reward worker == the in-process run whose groups are seeded per group
    (PerGroupSeeded, offset 0: what the actors do), float64: same samples, rewards, losses and weights. The
    default in-process run seeds the whole batch with one RNG (``SamplingParams.seed``), so its samples are a
    different (equally valid) draw: per-group seeds are what makes the split over workers invisible. The sampler
    keeps its log-probs in float32 and pads each worker's chunk to its own longest prompt, so the losses (which
    use the sampler's log-probs as the old ones) agree to float32 rounding, ~1e-8, not bit for bit."""
    ray_cfg = load_config(None, [*tiny_overrides, *F64, *RAY, "ray.rollout_workers=2", "ray.reward_workers=1",
                                 f"output_dir={tmp_path / 'ray'}"])
    train(ray_cfg)
    import llmrl.train.run as run_mod
    from llmrl.train.distributed import PerGroupSeeded

    build = run_mod.build_collector

    def per_group(*args, **kwargs):
        collect = build(*args, **kwargs)
        collect.generator = PerGroupSeeded(collect.generator, 0)
        return collect

    monkeypatch.setattr("llmrl.rl.loop.build_collector", per_group)
    local = load_config(None, [*tiny_overrides, *F64, f"output_dir={tmp_path / 'local'}"])
    train(local)
    a = read_metrics(f"{ray_cfg.output_dir}/metrics.jsonl", "train")
    b = read_metrics(f"{local.output_dir}/metrics.jsonl", "train")
    for key in ("reward", "length"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-5, abs=1e-7), key
    assert [r["ray/prompts"] for r in a] == [6.0, 12.0] and all(r["staleness/max"] == 0 for r in a)
    wa, wb = _final(ray_cfg.output_dir), _final(local.output_dir)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6


def _stalled_actor(gen: RayGenerator, cpus: float):
    """A rollout actor like ``gen``'s whose ``generate`` never returns, so a kill sent after dispatch always lands
    mid-call (a real actor on a fast machine may have finished its tiny chunk before the kill arrives; the
    result is then simply used, and the test would see no replacement)."""
    from llmrl.rl.ray_workers import RolloutWorker

    class Stalled(RolloutWorker):  # defined in a function: Ray ships the class by value to its worker
        def generate(self, prompts, params, offset):
            time.sleep(3600)

    return ray.remote(Stalled).options(num_cpus=cpus, max_restarts=0).remote(
        gen.model_ref, gen.tokenizer, gen.backend, gen.threads)


@pytest.mark.slow  # 2 actors + 1 replacement started: 40 s on the loaded 2-core VM
def test_killed_rollout_actor_is_replaced_and_no_sample_is_lost_or_counted_twice(tiny_overrides, capsys):
    from llmrl.train.build import build_policy

    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a"])
    model, tok = build_policy(cfg)
    gen = RayGenerator(model, tok, "kvcache", 2, cpus=0.5)
    try:
        prompts = [tok.encode(f"{i}:", add_special_tokens=False) for i in range(6)]
        params = SamplingParams(max_new_tokens=5, n=4, seed=11)
        whole = gen.generate(prompts, params)  # no failure
        ray.kill(gen.actors[0], no_restart=True)
        gen.actors[0] = _stalled_actor(gen, 0.5)  # busy with its chunk whenever the kill comes
        killed = [ray.get(gen.actors[0].pid.remote())]

        def kill_first(g: RayGenerator) -> None:  # right after the chunks went out: mid-call
            ray.kill(g.actors[0], no_restart=True)

        gen.after_dispatch = kill_first
        again = gen.generate(prompts, params)
        gen.after_dispatch = None
        n = sum(len(g) for g in again)
        print(f"prompts {len(prompts)} x 4 = {n} generations; actors replaced {gen.stats['replaced']}, "
              f"prompts re-run {gen.stats['rerun_prompts']}, chunks sent {gen.stats['chunks']}")
        assert n == 24 and [len(g) for g in again] == [4] * 6  # none lost, none twice
        assert [[x.token_ids for x in g] for g in again] == [[x.token_ids for x in g] for g in whole]
        assert gen.stats["replaced"] == 1 and gen.stats["rerun_prompts"] == 3 and gen.stats["chunks"] == 5
        assert ray.get(gen.actors[0].pid.remote()) != killed[0]  # a new process took the chunk
        assert gen.generate(prompts, params) is not None  # and keeps working
    finally:
        gen.close()
    assert "24 generations" in capsys.readouterr().out


@pytest.mark.slow  # two one-step runs with 2 actors each
def test_killed_actor_mid_training_step_leaves_the_batch_whole(tiny_overrides, monkeypatch):
    """A whole RL step with an actor killed while it generates: the step trains on prompts × samples
    episodes, every group once, and the run's weights equal an undisturbed run's (the chunk is re-run with the
    same per-group seeds)."""
    import llmrl.rl.rollouts as rollouts

    made: list[RayGenerator] = []
    real = rollouts.RolloutSource.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        if len(made) == 0:  # the first run's second actor never finishes a chunk: the kill is always mid-call
            ray.kill(self.ray.actors[1], no_restart=True)
            self.ray.actors[1] = _stalled_actor(self.ray, 0.5)
        made.append(self.ray)

    monkeypatch.setattr(rollouts.RolloutSource, "__init__", spy)
    base = [*tiny_overrides, *F64[:-2], "rollout.prompts_per_step=4", "steps=1", *RAY, "ray.rollout_workers=2"]
    seen: list[int] = []
    real_collect = rollouts.RolloutSource._collect

    def collect(self, params, version):
        self.ray.after_dispatch = lambda g: ray.kill(g.actors[1], no_restart=True)
        ro = real_collect(self, params, version)
        self.ray.after_dispatch = None
        seen.extend(e.group_id for e in ro.episodes)
        return ro

    monkeypatch.setattr(rollouts.RolloutSource, "_collect", collect)
    cfg = load_config(None, [*base, "output_dir=" + tiny_overrides[-1].split("=", 1)[1] + "_kill"])
    train(cfg)
    row = read_metrics(f"{cfg.output_dir}/metrics.jsonl", "train")[0]
    assert sorted(seen) == sorted(g for g in range(4) for _ in range(4))  # 4 groups x 4 samples, each once
    assert row["ray/replaced"] == 1.0 and row["ray/rerun_prompts"] == 2.0 and row["ray/prompts"] == 4.0
    monkeypatch.setattr(rollouts.RolloutSource, "_collect", real_collect)
    ref = load_config(None, [*base, "output_dir=" + tiny_overrides[-1].split("=", 1)[1] + "_ref"])
    train(ref)
    assert read_metrics(f"{ref.output_dir}/metrics.jsonl", "train")[0]["loss"] == pytest.approx(row["loss"], abs=1e-12)
    # the same chunks on the same actors' code: bit-identical log-probs, so the losses agree exactly too
    wa, wb = _final(cfg.output_dir), _final(ref.output_dir)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6


def _ok(completion, sample):
    return float(len(completion))


def _boom(completion, sample):
    if completion == "die":
        os._exit(3)
    if completion == "hang":
        time.sleep(60)
    if completion == "raise":
        raise ValueError("bad")
    return 1.0


@pytest.mark.slow  # the dying call's worker is restarted: ~30 s on the loaded 2-core VM
def test_ray_reward_pool_keeps_the_process_pools_rules():
    """Values, failures, timeouts and deaths counted as in the process pool; only the failing call fails."""
    texts = ["a", "die", "hang", "raise", "bb", "ccc"]
    outs = {}
    for backend in ("processes", "ray"):
        pool = RewardPool({"ok": _ok, "boom": _boom}, PoolOptions(workers=2, timeout=1.0, backend=backend,
                                                                  worker_cpus=0.5))
        with pool:
            got = pool.score(texts, [{}] * len(texts), failure_value=-1.0)
        outs[backend] = ([(o.total, o.components, o.failed, o.timed_out) for o in got],
                         pool.stats.calls, dict(pool.stats.failures), dict(pool.stats.timeouts))
    assert outs["ray"] == outs["processes"]
    rows, calls, failures, timeouts = outs["ray"]
    assert calls == 12 and failures == {"boom": 3} and timeouts == {"boom": 1}
    assert rows[1] == (2.0, {"ok": 3.0, "boom": -1.0}, ["boom"], [])  # died: only that call failed
    assert rows[2][2:] == (["boom"], ["boom"])  # timed out


def test_config_errors_are_one_line(tiny_overrides):
    with pytest.raises(ConfigError, match="no Ray workers asked for"):
        load_config(None, [*tiny_overrides, "ray.enabled=true", "ray.rollout_workers=0"])
    with pytest.raises(ConfigError, match="ray.address: set ray.enabled=true too"):
        load_config(None, [*tiny_overrides, "ray.address=auto"])
    cfg = load_config(None, [*tiny_overrides, "task.name=test_char_a", "steps=1", *RAY, "ray.worker_cpus=1",
                             "ray.rollout_workers=2", "ray.reward_workers=2"])
    with pytest.raises(ConfigError, match="need 4 CPUs, the Ray cluster has 2"):
        train(cfg)
    from llmrl.rl.rollouts import build_rollout_source

    with pytest.raises(ConfigError, match="ray.enabled: not supported under torchrun"):
        build_rollout_source(load_config(None, [*tiny_overrides, *RAY]), None, None, None, None, True)  # type: ignore[arg-type]
