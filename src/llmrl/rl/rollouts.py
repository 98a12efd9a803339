"""Where the RL loop's batches come from: :class:`RolloutSource` (``source.next(step)`` gives the step's scored
rollouts, ``source.updated()`` after each optimizer step). Three ways, chosen by the config:

* **in-process, synchronous** (the default): the collector is called at the start of each step, on the
  policy as it is; nothing else changes (the loop before this module existed).
* **Ray rollout workers** (``ray.enabled``, ``ray.rollout_workers`` > 0): the collector's generator is a
  :class:`~llmrl.rl.ray_workers.RayGenerator`; before a batch is generated the trainer's weights, when they
  changed, are pushed to the actors through the object store. Scoring stays in the trainer's process (its
  reward pool: processes, or Ray tasks with ``ray.reward_workers``).
* **one-step asynchronous** (``rollout.async``): batch t+1 is generated and scored by a background thread
  while the trainer trains on batch t. The thread drives the Ray actors when they are on; without Ray it
  samples from a **copy** of the policy (the trainer updates the policy in place meanwhile) with its own reward
  pool (the task's shared pool serves evaluation and the ReMax baseline in the main thread: a pool has one
  caller at a time). Batch t+1 is thus sampled with the weights from before step t's update: every sample
  carries its policy version (``Episode.metadata["policy_version"]``), staleness = the trainer's version
  minus it, 0 for the first batch and 1 after, never more (checked every step, logged as ``staleness/mean``
  and ``staleness/max``). The trainer recomputes the old log-probs under its current policy
  (``algo.recompute_logprobs``, required) and ``algo.rollout_correction`` (TIS / MIS) weights them against the
  sampler's.

Resume: the data position saved in a checkpoint is the one from before the batch in flight drew its prompts,
so a resumed async run draws the same prompts, but regenerates that batch with the newer (checkpointed)
policy: staleness 0 instead of 1 for it, so an async run resumed is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmrl.core.errors import ConfigError

if TYPE_CHECKING:
    from llmrl.config import Config
    from llmrl.rollout.base import SamplingParams
    from llmrl.train.collect import Collector, DataStream, Rollouts
    from llmrl.train.run import RunParts

MAX_STALENESS = 1
"""One-step asynchronous RL: a sample is at most one optimizer step behind the policy it trains."""


@dataclass
class _Pending:
    step: int
    position: int  # the data position before this batch drew its prompts
    version: int
    future: Future[Rollouts]


class RolloutSource:
    """The step's rollouts, generated synchronously or one step ahead (see the module doc)."""

    def __init__(self, collect: Collector, params_of: Callable[[int], SamplingParams], data: DataStream,
                 model: Any, *, last_step: int, asynchronous: bool = False, ray: Any = None,
                 replica: Any = None, own_ray: bool = False) -> None:
        self.collect, self.params_of, self.data, self.model = collect, params_of, data, model
        self.last_step, self.asynchronous = last_step, asynchronous
        self.ray, self.replica, self.own_ray = ray, replica, own_ray  # RayGenerator / in-process policy copy
        self.version = 0  # optimizer updates applied to the trainer's policy
        self.published = 0  # the version the rollout side holds
        self.pending: _Pending | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="llmrl-rollout") if asynchronous else None
        self.tracked = asynchronous or ray is not None  # episodes tagged with their policy version

    # -- the loop's calls
    def next(self, step: int) -> Rollouts:
        """The rollouts to train on at ``step`` (metrics ``staleness/*`` and ``ray/*`` added); with
        ``rollout.async`` the next step's batch starts here, on the policy before this step's update."""
        if self.pending is None or self.pending.step != step:
            self._submit(step)
        pending, self.pending = self.pending, None
        ro = pending.future.result()  # type: ignore[union-attr]
        if self.asynchronous and step < self.last_step:
            self._submit(step + 1)
        if not self.tracked:  # the default path: the collector's rollouts as they always were
            return ro
        stale = [self.version - e.metadata["policy_version"] for e in ro.episodes]
        if stale and not 0 <= max(stale) <= MAX_STALENESS:
            raise RuntimeError(f"rollout staleness {max(stale)} outside [0, {MAX_STALENESS}] at step {step}")
        ro.metrics["staleness/mean"] = sum(stale) / max(len(stale), 1)
        ro.metrics["staleness/max"] = float(max(stale, default=0))
        if self.ray is not None:
            ro.metrics.update({f"ray/{k}": float(v) for k, v in sorted(self.ray.stats.items())})
        return ro

    def updated(self) -> None:
        """The trainer's policy changed (an optimizer step): the next batch started gets these weights."""
        self.version += 1

    @property
    def data_position(self) -> int:
        """The data position to checkpoint: before the prompts of a batch still in flight."""
        return self.pending.position if self.pending is not None else self.data.position

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.collect.pool.close()  # the thread's own reward pool
        if self.ray is not None:
            self.ray.close()
            if self.own_ray:
                import ray

                ray.shutdown()

    # -- internals
    def _publish(self) -> None:
        """Give the rollout side the trainer's current weights, if they changed (main thread, between updates)."""
        if self.published == self.version:
            return
        if self.ray is not None:
            self.ray.push(self.model, self.version)
        elif self.replica is not None:
            import torch

            from llmrl.rollout.base import sync_weights

            with torch.no_grad():
                self.replica.load_state_dict(self.model.state_dict())
            sync_weights(self.collect.generator, self.replica)
        self.published = self.version

    def _submit(self, step: int) -> None:
        self._publish()
        version, position, params = self.version, self.data.position, self.params_of(step)
        if self.pool is not None:
            future = self.pool.submit(self._collect, params, version)
        else:
            future = Future()
            future.set_result(self._collect(params, version))
        self.pending = _Pending(step, position, version, future)

    def _collect(self, params: SamplingParams, version: int) -> Rollouts:
        ro = self.collect(params)
        if self.ray is not None and any(v != version for v in self.ray.versions):  # what the actors report
            raise RuntimeError(f"Ray rollout workers sampled with weights {self.ray.versions}, expected {version}")
        for e in ro.episodes if self.tracked else ():
            e.metadata["policy_version"] = version
        return ro


def build_rollout_source(cfg: Config, run: RunParts, collect: Collector, data: DataStream,
                         params_of: Callable[[int], SamplingParams], distributed: bool) -> RolloutSource:
    """The loop's :class:`RolloutSource` for ``cfg`` (it may replace ``collect``'s generator and pool)."""
    r, rc = cfg.rollout, cfg.ray
    if distributed and (r.async_ or rc.enabled):
        raise ConfigError(f"{'rollout.async' if r.async_ else 'ray.enabled'}: not supported under torchrun; run "
                          "it in one process (the Ray workers and the async rollout thread replace torchrun's "
                          "per-rank generation, docs/scaling.md)")
    from llmrl.train.collect import Collector

    if (r.async_ or (rc.enabled and rc.rollout_workers > 0)) and not isinstance(collect, Collector):
        raise ConfigError(f"{'rollout.async' if r.async_ else 'ray.rollout_workers'}: works with the single-agent "
                          f"collector only, not with {type(collect).__name__}")
    ray_gen, replica, own = None, None, False
    if rc.enabled:
        from llmrl.rl.ray_workers import ensure_ray

        own = ensure_ray(rc)
        _check_cpus(rc)
    if rc.enabled and rc.rollout_workers > 0:
        from llmrl.rl.ray_workers import RayGenerator

        ray_gen = RayGenerator(run.model, run.tokenizer, r.backend, rc.rollout_workers, cpus=rc.worker_cpus,
                               threads=max(1, cfg.threads))
        collect.generator = ray_gen
    elif r.async_:
        from llmrl.train.build import build_generator

        replica = copy.deepcopy(run.model).eval()
        for p in replica.parameters():
            p.requires_grad_(False)
        collect.generator = build_generator(replica, run.tokenizer, r.backend)
    if r.async_:  # the background thread's own reward pool, its processes forked now, from the main thread
        from llmrl.rewards.pool import RewardPool, task_calls

        task = run.task
        collect.pool = RewardPool(lambda: task_calls(task), collect.pool.options)
        collect.pool.start()
    return RolloutSource(collect, params_of, data, run.model, last_step=cfg.steps, asynchronous=r.async_,
                         ray=ray_gen, replica=replica, own_ray=own)


def _check_cpus(rc: Any) -> None:
    """A ConfigError when the cluster has fewer CPUs than the workers reserve (Ray would wait for them forever:
    the rollout actors hold theirs for the whole run, reward tasks need theirs while the actors live)."""
    import ray

    have = ray.cluster_resources().get("CPU", 0.0)
    need = rc.worker_cpus * (rc.rollout_workers + rc.reward_workers)
    if need > have + 1e-9:
        msg = (f"ray: {rc.rollout_workers} rollout + {rc.reward_workers} reward workers x ray.worker_cpus="
               f"{rc.worker_cpus} need {need:g} CPUs, the Ray cluster has {have:g}; lower ray.worker_cpus (e.g. "
               f"{have / max(rc.rollout_workers + rc.reward_workers, 1):g}) or the worker counts")
        if rc.address is None:
            raise ConfigError(msg)
        import warnings

        warnings.warn(msg + " (waiting for an autoscaler to add nodes)", stacklevel=3)


__all__ = ["MAX_STALENESS", "RolloutSource", "build_rollout_source"]
