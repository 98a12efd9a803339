"""Rollout workers on Ray (``ray.enabled``, ``ray.rollout_workers``): actors each holding a replica of the
policy and a generator of any registered backend (:data:`llmrl.rollout.base.GENERATORS`), driven by
:class:`RayGenerator`, which the RL loop's collector uses as its generator.

* **Start.** The policy (a CPU copy of ``run.model``, architecture and weights) is put in the object store once;
  each actor takes it from there, puts it in eval mode and builds ``rollout.backend`` on it.
* **Weights.** After each optimizer step, :meth:`RayGenerator.push` puts the state dict in the object store
  once (``ray.put``) and every actor loads that one object (then calls the backend's ``sync_weights``); a
  version number goes with it, and each generate call returns the version it sampled with, so the loop measures
  staleness from what the workers report.
* **Work.** A ``generate`` call splits the prompts into one contiguous chunk per actor; each group is seeded by
  its index in the call (:class:`llmrl.train.distributed.PerGroupSeeded`, as under torchrun), so the samples do
  not depend on the number of workers, on which worker runs a chunk, or on a re-run.
* **Failure.** A chunk whose actor dies (``ray.exceptions.RayActorError``: killed, crashed, node lost) is
  re-run on a new actor (same model object, latest weights); the chunk's results are taken exactly once, in
  prompt order, so no sample is lost or counted twice. ``stats`` counts chunks, replacements and re-run prompts.

Ray handles the processes (start, placement, death, restart); llmrl sends only method calls and object refs.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from llmrl.rollout.base import Generation, SamplingParams
    from llmrl.train.config import RayConfig


def ensure_ray(rc: RayConfig) -> bool:
    """Connect to ``ray.address``, or start a local cluster (``ray.num_cpus``), unless Ray is initialised
    already (a test's cluster, or the caller's); True when this call started it (then the caller shuts it down)."""
    try:
        import ray
    except ImportError:
        from llmrl.core.errors import ConfigError

        raise ConfigError("ray.enabled: Ray is not installed; pip install 'llmrl[ray]'") from None
    if ray.is_initialized():
        return False
    ray.init(address=rc.address, num_cpus=rc.num_cpus if rc.address is None else None, include_dashboard=False,
             log_to_driver=True)
    return True


class RolloutWorker:
    """The actor (wrapped by ``ray.remote`` in :class:`RayGenerator`): a policy replica and its generator."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, backend: str, threads: int) -> None:
        from llmrl.train.build import build_generator

        if threads > 0:
            torch.set_num_threads(threads)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.generator = build_generator(self.model, tokenizer, backend)
        self.version = 0

    def load(self, state: dict[str, torch.Tensor], version: int) -> int:
        """Load the trainer's weights (one object-store object shared by every actor)."""
        from llmrl.rollout.base import sync_weights

        with torch.no_grad():
            self.model.load_state_dict(state)
        sync_weights(self.generator, self.model)
        self.version = version
        return version

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 offset: int) -> tuple[list[list[Generation]], int]:
        """The generations of ``prompts`` (groups seeded by ``offset + i``) and the weights' version."""
        from llmrl.train.distributed import PerGroupSeeded

        return PerGroupSeeded(self.generator, offset).generate(prompts, params), self.version

    def pid(self) -> int:
        import os

        return os.getpid()


def chunks(n: int, k: int) -> list[tuple[int, int]]:
    """``n`` items in at most ``k`` contiguous, non-empty, near-equal ``(start, end)`` ranges."""
    k = max(1, min(k, n))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)] if n else []


class RayGenerator:
    """A :class:`~llmrl.rollout.base.Generator` over ``workers`` Ray actors (see the module doc)."""

    supports_prompt_seeds = False  # each chunk is seeded per group by the actor itself

    def __init__(self, model: torch.nn.Module, tokenizer: Any, backend: str, workers: int, *, cpus: float = 1.0,
                 threads: int = 1) -> None:
        import ray

        cpu_model = copy.deepcopy(model).to("cpu") if _device(model).type != "cpu" else model
        self.model_ref = ray.put(cpu_model)  # architecture + initial weights, once
        self.tokenizer, self.backend, self.threads = tokenizer, backend, threads
        self.actor_cls = ray.remote(RolloutWorker).options(num_cpus=cpus, max_restarts=0)
        self.weights_ref: Any = None
        self.version = 0
        self.stats: Counter[str] = Counter()
        self.versions: list[int] = []  # the weights' version each chunk of the last call was sampled with
        self.after_dispatch: Callable[[RayGenerator], None] | None = None  # tests: kill an actor mid-call
        self.actors = [self._new_actor() for _ in range(workers)]

    def _new_actor(self) -> Any:
        actor = self.actor_cls.remote(self.model_ref, self.tokenizer, self.backend, self.threads)
        if self.weights_ref is not None:  # a replacement: the latest weights before any work (calls run in order)
            actor.load.remote(self.weights_ref, self.version)
        return actor

    def _replace(self, i: int) -> None:
        import ray

        try:
            ray.kill(self.actors[i], no_restart=True)
        except Exception:  # already gone
            pass
        self.actors[i] = self._new_actor()
        self.stats["replaced"] += 1

    def push(self, model: torch.nn.Module, version: int) -> None:
        """Put ``model``'s weights in the object store once and have every actor load them."""
        import ray
        from ray.exceptions import RayActorError

        state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        self.weights_ref, self.version = ray.put(state), version
        refs = [a.load.remote(self.weights_ref, version) for a in self.actors]
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except RayActorError:  # died: its replacement loads the weights first
                self._replace(i)
        self.stats["pushes"] += 1

    def sync_weights(self, model: torch.nn.Module) -> None:
        """The generator hook (:func:`llmrl.rollout.base.sync_weights`): push as the next version."""
        self.push(model, self.version + 1)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        import ray
        from ray.exceptions import RayActorError

        parts = chunks(len(prompts), len(self.actors))
        results: list[list[list[Generation]] | None] = [None] * len(parts)
        versions: list[int] = [-1] * len(parts)

        def send(c: int) -> Any:
            s, e = parts[c]
            self.stats["chunks"] += 1
            return self.actors[c].generate.remote(prompts[s:e], params, s)

        pending = {send(c): c for c in range(len(parts))}
        if self.after_dispatch is not None:
            self.after_dispatch(self)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    results[c], versions[c] = ray.get(ref)
                except RayActorError:  # the actor died mid-call: a new one re-runs the whole chunk
                    self._replace(c)
                    self.stats["rerun_prompts"] += parts[c][1] - parts[c][0]
                    pending[send(c)] = c
        self.versions = versions
        out = [g for r in results for g in r]  # type: ignore[union-attr]
        self.stats["prompts"] += len(out)
        return out

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []


def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


__all__ = ["RayGenerator", "RolloutWorker", "chunks", "ensure_ray"]
