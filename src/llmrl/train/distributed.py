"""Data-parallel training under ``torchrun`` (``torch.distributed``): FSDP2 over the policy, one share of the
prompt groups per rank, global loss normalisation, metrics reduced across ranks, rank 0 writing the outputs.

A process started by ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` in its environment) joins the
process group in :func:`init_world` (gloo on the CPU, nccl on CUDA: the only difference between the two); any
other process is "local" and every helper here is a no-op for it, so the single-process path is unchanged.

What runs where (docs/scaling.md):

* the **trainer** is a copy of the policy wrapped by FSDP2 ``fully_shard`` (each decoder layer a unit, the
  root holding embeddings / final norm / head): parameters, gradients and AdamW states are sharded over the
  ranks; its gradients are reduce-scattered as *sums* (``set_gradient_divide_factor(1)``) because every
  rank's loss is already normalised by the whole step's counts (:func:`global_counts`);
* the **rollout replica** (``run.model``: what the generator samples from, what evaluation and the final
  save use) is a full copy on every rank, refreshed from the trainer after each step (:meth:`DataParallel.sync`);
  generation therefore needs no collective and ranks may stop decoding at different lengths;
* the KL **reference** is a frozen full copy on every rank (replicated, no gradient, no optimizer state);
* a trained PPO **critic** is sharded in place like the trainer (:func:`shard_in_place`), a frozen one replicated;
* batch statistics are global: advantage whitening inside :meth:`DataParallel.whole_batch`, the shapers'
  running statistics over :func:`gather_rows`, dynamic sampling through :class:`GlobalDynamicSampling`.

Rank r draws the step's ``prompts_per_step`` prompts from the shared data stream (same seed, same position on
every rank) and keeps groups ``r·P/N .. (r+1)·P/N`` (a group never spans ranks); each group is generated on its
own, seeded by its global index (:class:`PerGroupSeeded`), so N ranks × B/N sequences sample exactly what 1
rank × B does.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from llmrl.core.errors import ConfigError
from llmrl.core.ops import whole_batch
from llmrl.core.seed import derive_seed

if TYPE_CHECKING:
    from llmrl.core.types import Episode
    from llmrl.rollout.base import Generation, Generator, SamplingParams
    from llmrl.train.collect import Collector, DataStream, Rollouts

T = TypeVar("T")
M = TypeVar("M", bound=torch.nn.Module)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device  # where collectives' tensors live (cpu for gloo, cuda:LOCAL_RANK for nccl)

    @property
    def main(self) -> bool:
        return self.rank == 0


_WORLD: World | None = None


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the torch.distributed environment)?"""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_world(device: str = "cpu") -> World | None:
    """Join the process group once (gloo for a CPU ``model.device``, nccl for CUDA); None when not launched."""
    global _WORLD
    if _WORLD is not None or not launched():
        return _WORLD
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    _WORLD = World(dist.get_rank(), dist.get_world_size(), local,
                   torch.device("cuda", local) if cuda else torch.device("cpu"))
    return _WORLD


def world() -> World | None:
    return _WORLD


def is_main() -> bool:
    """Rank 0, or not distributed: the process that writes logs, metrics, summaries and models."""
    return _WORLD is None or _WORLD.main


def shutdown() -> None:
    global _WORLD
    if _WORLD is not None and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


def _active() -> World | None:
    return _WORLD  # under torchrun, even with one rank: the same (FSDP, per-group seeded) path for every N


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (float64); the values themselves when not distributed."""
    w = _active()
    if w is None:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=w.device)
    dist.all_reduce(t)
    return t.tolist()


def global_counts(num_seqs: float, num_tokens: float) -> tuple[float, float]:
    """The minibatch's (sequences, valid tokens) over every rank (tokens at least 1): each rank normalises its
    share of the loss by these, so the summed gradients equal those of one rank holding the whole minibatch."""
    s, t = all_sum([num_seqs, num_tokens])
    return s, max(t, 1.0)


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's 1-d ``x`` concatenated in rank order (the global batch: each rank holds its contiguous
    share) and this rank's offset in it; ``(x, 0)`` when not distributed."""
    w = _active()
    if w is None:
        return x, 0
    parts = gather_objects(x.tolist())
    return torch.tensor([v for p in parts for v in p], dtype=x.dtype), sum(len(p) for p in parts[: w.rank])


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable) in rank order; ``[obj]`` when not distributed."""
    w = _active()
    if w is None:
        return [obj]
    parts: list[Any] = [None] * w.size
    dist.all_gather_object(parts, obj)
    return parts


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank: all ranks skip an update together (FSDP's collectives)."""
    ok = bool(torch.isfinite(loss.detach()).all())
    w = _active()
    return ok if w is None else all_sum([float(ok)])[0] == w.size


def agree_any(stop: str | None, timed: bool) -> tuple[str | None, bool]:
    """(stop request, checkpoint-by-time) as any rank saw them: all ranks checkpoint and stop together."""
    if _active() is None:
        return stop, timed
    n_stop, n_timed = all_sum([float(stop is not None), float(timed)])
    return (stop or ("a stop request on another rank" if n_stop else None)), bool(n_timed)


def barrier() -> None:
    if _active() is not None:
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only (claiming the output directory, ...); the others wait for it and raise the
    same one-line error when it failed (so every rank stops, none hangs). Returns ``fn()`` on rank 0."""
    w = _active()
    if w is None:
        return fn()
    result, err = None, None
    if w.main:
        try:
            result = fn()
        except Exception as exc:  # re-raised below, after the other ranks heard of it
            err = exc
    box: list[Any] = [(type(err), str(err)) if err is not None else None]
    dist.broadcast_object_list(box, src=0)
    if err is not None:
        raise err
    if box[0] is not None:
        kind, msg = box[0]
        raise kind(msg) if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError(msg)
    return result


SUMMED = ("reward_failures", "reward_timeouts", "groups_kept", "groups_dropped")
"""Metric names (and their ``name/...`` children) that are counts: summed over the ranks, not averaged."""


def reduce_metrics(metrics: Mapping[str, Any], summed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One step's metrics over every rank (equal shares of sequences): counts (:data:`SUMMED`) and the keys in
    ``summed`` (each rank's share of a global mean, e.g. the loss) are summed, the rest averaged over the ranks
    that report them (per-rank means of equal shares: the global mean, except spreads such as ``reward_std``,
    which become the mean of the ranks' values). Non-numbers are rank 0's."""
    w = _active()
    if w is None:
        return dict(metrics)
    gathered = gather_objects({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
    out = dict(metrics)
    for key in sorted({k for g in gathered for k in g}):
        vals = [g[key] for g in gathered if key in g]
        add = key in summed or key.split("/")[0] in SUMMED
        out[key] = sum(vals) if add else sum(vals) / len(vals)
    return out


class RankShard:
    """The data stream as one rank sees it: each ``next(k)`` draws ``k × world`` samples (the same on every
    rank: same seed and position) and keeps this rank's ``k``; ``position`` is the shared stream's."""

    def __init__(self, stream: DataStream, rank: int, size: int) -> None:
        self.stream, self.rank, self.size = stream, rank, size

    @property
    def position(self) -> int:
        return self.stream.position

    def next(self, k: int) -> list[Any]:
        every = self.stream.next(k * self.size)
        return every[self.rank * k : (self.rank + 1) * k]


class PerGroupSeeded:
    """A generator wrapper that seeds each prompt group by ``(seed, global group index)``: the completions of
    a group do not depend on which rank, or with which other prompts, it is generated. Backends with
    ``supports_prompt_seeds`` (kvcache) sample every group in one batch with one RNG per group
    (``SamplingParams.prompt_seeds``); the others are called once per group."""

    def __init__(self, inner: Generator, offset: int) -> None:
        self.inner, self.offset = inner, offset

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        if params.seed is None:
            return self.inner.generate(prompts, params)
        seeds = [derive_seed(params.seed, "group", self.offset + i) for i in range(len(prompts))]
        if getattr(self.inner, "supports_prompt_seeds", False):  # one batch, one RNG per prompt (kvcache)
            return self.inner.generate(prompts, replace(params, prompt_seeds=seeds))
        out: list[list[Generation]] = []
        for p, seed in zip(prompts, seeds, strict=True):  # other backends: one call per group
            out += self.inner.generate([p], replace(params, seed=seed))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GlobalDynamicSampling:
    """DAPO's dynamic sampling (``rollout.dynamic_sampling``) over the ranks, equal to one process's. All ranks
    run the same rounds: in round r each one generates and scores its share of the round's prompt groups (the
    wrapped collector, its own dynamic sampling off, seed ``params.seed + r``, each group seeded by its global
    index), and the groups whose rewards differ are gathered from every rank in global group order (token ids
    and rewards, ``all_gather_object``). Once ``prompts`` groups are kept (or after ``max_sampling_rounds``)
    rank k trains on its contiguous share of the first ``prompts`` kept ones: the data position, the seeds and
    the kept groups are those of one process. One case differs: when the rounds run out with a kept count that
    the world size does not divide, the remainder is dropped (ranks need equal shares); with fewer kept groups
    than ranks, every rank trains on its share of the last round, as one process does when none is kept."""

    def __init__(self, inner: Collector, w: World, prompts: int) -> None:
        self.inner, self.world, self.prompts, self.max_rounds = inner, w, prompts, inner.max_rounds
        inner.dynamic_sampling = False  # one round per call

    def __call__(self, params: SamplingParams) -> Rollouts:
        from llmrl.train.collect import Rollouts, score_summary

        w = self.world
        kept: list[list[Episode]] = []
        mine: list[Episode] = []  # everything this rank sampled: the metrics
        rounds = dropped = 0
        while True:
            last = self.inner(replace(params, seed=None if params.seed is None else params.seed + rounds)).episodes
            mine += last
            groups: dict[int, list[Episode]] = {}
            for e in last:
                groups.setdefault(e.group_id, []).append(e)
            informative = [g for g in groups.values() if len({e.reward for e in g}) > 1]
            dropped += len(groups) - len(informative)
            kept += [g for share in gather_objects(informative) for g in share]  # rank order = global group order within the round
            rounds += 1
            if len(kept) >= self.prompts or rounds >= self.max_rounds:
                break
        n = min(len(kept), self.prompts) // w.size  # kept groups per rank
        episodes = [replace(e, group_id=w.rank * n + i) for i, g in enumerate(kept[w.rank * n : (w.rank + 1) * n])
                    for e in g] if n else last
        metrics = score_summary(mine)
        metrics.update({"groups_kept": float(n), "groups_dropped": float(dropped), "sampling_rounds": float(rounds)})
        return Rollouts(episodes=episodes, metrics=metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks FSDP2 shards as units: the children of the model's first non-empty ModuleList."""
    for m in model.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0:
            return list(m)
    return []


def shard_policy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` wrapped by FSDP2 ``fully_shard`` (each decoder layer, then the root), gradients
    reduced as sums. Its log-probs use the full forward (the chunked LM-head path calls submodules directly,
    outside FSDP's hooks)."""
    from llmrl.models.lm_head import set_logits_chunk_tokens

    trainer = copy.deepcopy(model)
    set_logits_chunk_tokens(trainer, 0)
    return shard_in_place(trainer)


def shard_in_place(model: M) -> M:
    """``model`` (an ``nn.Module``) wrapped in place by FSDP2 ``fully_shard``: each decoder layer, then the
    root; gradients reduce-scattered as plain sums (each rank's loss is normalised by global counts)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    for m in model.modules():  # per FSDP unit (not recursive): reduce-scatter sums, no 1/N average,
        if isinstance(m, FSDPModule):  # as a plain SUM (gloo has no PREMUL_SUM, which float32 would use)
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    return model


def full_state(trainer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainer's full (unsharded) weights, on every rank (an all-gather)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(trainer, options=StateDictOptions(full_state_dict=True))


class NullLog:
    """The metrics log of a rank other than 0: records are returned (for the progress line), never written."""

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> dict[str, Any]:
        return {"step": step, "kind": kind, **metrics}

    def once(self, step: int, kind: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return self.log(step, compute(), kind)

    def close(self) -> None:
        pass


class DataParallel:
    """What the RL loop asks of the world it runs in. Local (not launched by torchrun): ``policy`` is
    ``run.model`` and every method is the identity or a no-op. Distributed: ``policy`` is the FSDP2 trainer
    (optimised, checkpointed), ``run.model`` the rollout replica (:meth:`sync`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        w = _active()
        self.world, self.replica = w, model
        self.policy = shard_policy(model) if w is not None else model

    @property
    def distributed(self) -> bool:
        return self.world is not None

    @property
    def main(self) -> bool:
        return self.world is None or self.world.main

    def shard_collector(self, collect: Collector, prompts: int) -> Collector:
        """Give this rank its share of the step's ``prompts`` groups (a ConfigError unless it divides evenly);
        returns the collector to call (with dynamic sampling: :class:`GlobalDynamicSampling` around it)."""
        w = self.world
        if w is None:
            return collect
        if prompts % w.size:
            raise ConfigError(f"rollout.prompts_per_step: {prompts} prompt groups do not split evenly over "
                              f"{w.size} ranks")
        share = prompts // w.size
        collect.prompts = share
        collect.data = RankShard(collect.data, w.rank, w.size)  # type: ignore[assignment]
        collect.seed_per_group(w.rank * share)  # every group seeded by its global index
        if collect.dynamic_sampling:
            return GlobalDynamicSampling(collect, w, prompts)  # type: ignore[return-value]
        return collect

    def share(self, items: list[T], key: str) -> list[T]:
        """This rank's contiguous share of a list every rank holds whole (a ConfigError naming ``key`` unless
        it splits evenly); the list itself when not distributed."""
        w = self.world
        if w is None:
            return items
        if len(items) % w.size:
            raise ConfigError(f"{key}: {len(items)} examples per step do not split evenly over {w.size} ranks")
        k = len(items) // w.size
        return items[w.rank * k : (w.rank + 1) * k]

    def agree(self, micro_batch_size: int) -> int:
        """The micro-batch size every rank uses (the smallest asked for; 0 = whole minibatch): FSDP needs the
        same number of forward / backward passes on each rank."""
        if self.world is None:
            return micro_batch_size
        t = torch.tensor([micro_batch_size if micro_batch_size > 0 else 2**31], device=self.world.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item()) % 2**31

    def whole_batch(self) -> AbstractContextManager[None]:
        """Inside the block, batch statistics (the advantage whitening of gae and reinforce_pp) are taken over
        every rank's share together, as one process holding the whole batch would (two all-reduces)."""
        if self.world is None:
            return nullcontext()
        return whole_batch(lambda t: torch.tensor(all_sum(t.tolist()), dtype=t.dtype, device=t.device))

    def mean(self, value: float) -> float:
        return all_sum([value])[0] / self.world.size if self.world is not None else value

    def total(self, value: float) -> float:
        return all_sum([value])[0]

    def sync(self) -> None:
        """Copy the trainer's weights into the rollout replica (after an update, after a resume)."""
        if self.world is not None:
            with torch.no_grad():
                self.replica.load_state_dict(full_state(self.policy))

    def reduce(self, metrics: Mapping[str, Any], summed: frozenset[str] = frozenset()) -> dict[str, Any]:
        return reduce_metrics(metrics, summed) if self.world is not None else dict(metrics)


__all__ = ["SUMMED", "DataParallel", "GlobalDynamicSampling", "NullLog", "agree_any", "PerGroupSeeded", "RankShard", "World", "all_finite", "all_sum", "barrier", "gather_rows",
           "decoder_layers", "full_state", "gather_objects", "global_counts", "init_world", "is_main", "launched", "on_main",
           "reduce_metrics", "shard_in_place", "shard_policy", "shutdown", "world"]
