"""The critic of the RL loop (PPO's learned value model, or DVPO's frozen global value model).

A :class:`~llmrl.models.value_head.ScalarHeadModel` gives V(s_t) for every position; ``values[b, t]`` is
read at position t of the sequence, the state before target token t+1 (the alignment of
:class:`~llmrl.core.types.Batch`). Per RL step the loop calls:

* :meth:`Critic.values` once on the rollout batch (no grad) → ``batch.values``, the old values, which
  are also the ``baseline`` of the ``gae`` advantage estimator;
* :meth:`Critic.targets` → ``batch.returns`` = GAE returns A + V with the estimator's γ and λ;
* :meth:`Critic.update` on every minibatch: one AdamW step on vf_coef · :func:`llmrl.algos.value_loss`
  (clipped, token-mean over the minibatch's policy tokens, micro-batched).

Modes (``critic`` config section):

* separate (default): a copy of the policy's transformer (or ``critic.path``) with its own optimizer.
* ``share_backbone``: the head sits on the policy's own transformer. The value loss is added to the
  policy loss (``LossSpec.aux`` = :meth:`Critic.policy_aux`) and one optimizer steps the policy and the
  head; during the critic warm-up steps only the head is trained, on detached features.
* ``frozen`` (DVPO): values only; :meth:`update` does nothing and nothing is checkpointed but the step.

Under torchrun (docs/scaling.md) a trained separate critic is sharded like the policy: FSDP2 ``fully_shard``
in place (:func:`~llmrl.train.distributed.shard_in_place`), gradients reduce-scattered as sums, each rank's
value loss normalised by the minibatch's global token count (:func:`~llmrl.train.distributed.global_counts`),
so the step equals one process's; its weights and AdamW states go into the sharded (DCP) checkpoint. A frozen
critic is replicated (a full copy per rank, no gradient). Under ``share_backbone`` the head is sharded the same
way and sits on the FSDP2 policy trainer: the joint value loss reads the trainer's last hidden states through
its full forward (``output_hidden_states``; the logits it also computes are unused), so the value gradient
reaches the trainer's sharded weights through FSDP's own hooks; the no-grad values (rollout batch, warm-up)
read the rollout replica's, which holds the trainer's weights at those points. The policy optimizer steps
the trainer and the head, so checkpoints hold both in one DCP state (:meth:`Critic.checkpoint_model`).
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from llmrl.algos import explained_variance, gae, value_loss
from llmrl.algos.value import gae_advantages
from llmrl.core.errors import ConfigError
from llmrl.core.ops import batch_moments
from llmrl.core.seed import derive_seed
from llmrl.models.device import module_device
from llmrl.models.value_head import ScalarHeadModel, load_scalar_model, scalar_model_from_policy
from llmrl.train.distributed import all_finite, full_state, global_counts, is_main, shard_in_place, world
from llmrl.train.optim import build_optimizer
from llmrl.train.update import clipped_step, micro_batches

if TYPE_CHECKING:
    from llmrl.config import Config
    from llmrl.core.types import Batch


class Critic:
    def __init__(self, model: ScalarHeadModel, *, shared: bool = False, frozen: bool = False, lr: float = 5e-6,
                 betas: tuple[float, float] | list[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, grad_clip: float = 1.0, vf_coef: float = 1.0,
                 value_clip: float | None = 0.2, micro_batch_size: int = 0, gamma: float = 1.0,
                 lam: float = 0.95, trainer: nn.Module | None = None) -> None:
        self.model, self.shared, self.frozen = model.eval(), shared, frozen  # eval: no dropout
        self.trunk: nn.Module | None = None  # torchrun + share_backbone: the FSDP2 policy trainer
        self.grad_clip, self.vf_coef, self.value_clip = grad_clip, vf_coef, value_clip
        self.micro_batch_size, self.gamma, self.lam = micro_batch_size, gamma, lam
        self.configured_micro = micro_batch_size  # 0: follow the policy's plan (:meth:`follow`)
        self.optimizer: torch.optim.Optimizer | None = None
        self.template: nn.Module | None = None  # sharded: the unsharded structure on the meta device (save)
        if not frozen and world() is not None:
            if shared:
                if trainer is None:
                    raise ValueError("Critic(shared=True) under torchrun needs the FSDP2 policy trainer")
                self.trunk, self.template = trainer, _meta_copy(model.head)
                shard_in_place(model.head)  # the backbone is the replica's (no-grad values); the trainer is trunk
            else:
                self.template = _meta_copy(model)
                self.model = shard_in_place(model)
        if frozen:
            model.requires_grad_(False)
        else:
            own = model.head.parameters() if shared else model.parameters()
            self.optimizer = build_optimizer(own, lr, weight_decay, betas, eps)

    # ------------------------------------------------------------------------------------------ values
    def _values(self, mb: Batch, backbone_grad: bool = True) -> Tensor:
        """V(s_t) per target position of ``mb``, on the critic's device.  -> [b, l-1] (float32)"""
        ids = mb.input_ids.to(module_device(self.model))
        if self.shared and not backbone_grad:
            with torch.no_grad():
                h = self.model.hidden_states(ids)
            return self.model.head(h).squeeze(-1).float()[:, :-1]
        if self.trunk is not None and torch.is_grad_enabled():  # torchrun: the value gradient into the trainer
            h = self.trunk(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
            return self.model.head(h).squeeze(-1).float()[:, :-1]
        return self.model(ids)[:, :-1]  # right padding: causal attention is exact for real tokens

    @torch.no_grad()
    def values(self, batch: Batch) -> Tensor:
        """Values of the whole batch (no grad), 0 where the mask is 0.  -> [B, L-1]"""
        out = torch.zeros_like(batch.mask)
        for idx, mb in micro_batches(batch, self.micro_batch_size):
            v = self._values(mb)
            out[idx, : v.shape[1]] = v.to(device=out.device, dtype=out.dtype)
        return out * batch.mask

    def targets(self, rewards: Tensor, batch: Batch) -> Tensor:
        """GAE returns A + V of the batch (the value targets).  -> [B, L-1]"""
        assert batch.values is not None, "values must be computed first"
        return gae(rewards, batch.values, batch.mask, self.gamma, self.lam)[1]

    # ---------------------------------------------------------------------------------------- training
    def joint_loss(self, mb: Batch, num_seqs: float, num_tokens: float,
                   backbone_grad: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """vf_coef × the clipped value loss of a micro-batch, normalised by the minibatch's token count
        (summing over micro-batches gives the minibatch loss); under ``share_backbone`` also the policy loss's
        ``aux`` term (:meth:`policy_aux`)."""
        assert mb.values is not None and mb.returns is not None, "values and returns must be computed first"
        mb = mb.to(module_device(self.model))  # the batch meets the critic on its device
        v = self._values(mb, backbone_grad)
        loss, m = value_loss(v, mb.values, mb.returns, mb.mask, clip=self.value_clip, agg="token-mean",
                             num_seqs=num_seqs, num_tokens=num_tokens)
        return self.vf_coef * loss, {"critic/vf_loss": loss.detach(), **{f"critic/{k}": x for k, x in m.items()}}

    def policy_aux(self, mb: Batch, num_seqs: float, num_tokens: float) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`joint_loss` as the policy loss's ``aux`` term under ``share_backbone``. ``optimizer_step``
        weighs each micro-batch's metrics by its share of the minibatch's sequences (they are means); the
        value loss is already this micro-batch's share of the minibatch loss, so it is reported divided by that
        weight, and the logged ``critic/vf_loss`` is the minibatch's value loss whatever the micro-batching
        and the number of ranks."""
        loss, metrics = self.joint_loss(mb, num_seqs, num_tokens)
        metrics["critic/vf_loss"] = metrics["critic/vf_loss"] * (num_seqs / max(mb.size, 1))
        return loss, metrics

    def update(self, mb: Batch, policy_step: bool) -> dict[str, float]:
        """One critic optimizer step on minibatch ``mb``; metrics. Nothing happens when frozen, or when the
        head shares the policy's backbone and the policy steps too (the value loss is then in its loss)."""
        if self.optimizer is None or (self.shared and policy_step):
            return {}
        self.optimizer.zero_grad(set_to_none=True)
        num_seqs, num_tokens = global_counts(float(mb.size), float(mb.mask.sum()))  # over every rank (torchrun)
        sums: dict[str, float] = {}
        for _, micro in micro_batches(mb, self.micro_batch_size):
            loss, metrics = self.joint_loss(micro, num_seqs, num_tokens, backbone_grad=not self.shared)
            if not all_finite(loss):  # on every rank: they skip together
                self.optimizer.zero_grad(set_to_none=True)
                return {"critic/skipped": 1.0}
            loss.backward()
            for k, x in metrics.items():  # the loss is already this micro-batch's share; the rest are its means
                w = 1.0 if k == "critic/vf_loss" else micro.size / num_seqs
                sums[k] = sums.get(k, 0.0) + w * float(x)
        ok, norm = clipped_step(self.optimizer, None, self.grad_clip)
        if not ok:
            return {"critic/skipped": 1.0}
        self.optimizer.zero_grad(set_to_none=True)
        return {**sums, "critic/grad_norm": norm}

    def follow(self, micro_batch_size: int) -> None:
        """Use the policy's micro-batch for this step when ``critic.micro_batch_size`` and
        ``algo.micro_batch_size`` are both 0 (auto: the RL loop's memory plan, which counts the critic)."""
        if self.configured_micro == 0:
            self.micro_batch_size = micro_batch_size

    def memory_bytes(self) -> int:
        """Bytes the critic holds beside the policy (for the memory plan): its own weights (only the head when it
        shares the policy's backbone) and, when trained, their gradients and two AdamW moments."""
        params = list(self.model.head.parameters()) if self.shared else list(self.model.parameters())
        per = 1 if self.frozen else 4
        return per * sum(p.numel() * p.element_size() for p in {id(p): p for p in params}.values())

    def joint_parameters(self) -> list[nn.Parameter]:
        """Parameters the POLICY optimizer must also step (the head, under share_backbone)."""
        return list(self.model.head.parameters()) if self.shared and not self.frozen else []

    @staticmethod
    def batch_metrics(batch: Batch) -> dict[str, float]:
        """Explained variance of the old values w.r.t. the returns, and their means (token means; inside
        ``DataParallel.whole_batch``, over every rank's tokens)."""
        assert batch.values is not None and batch.returns is not None
        ev = explained_variance(batch.values, batch.returns, batch.mask)
        return {"critic/explained_variance": float(ev),
                "critic/value_old": float(batch_moments(batch.values, batch.mask)[0]),
                "critic/return_mean": float(batch_moments(batch.returns, batch.mask)[0])}

    # -------------------------------------------------------------------------------------- state / io
    def module(self) -> nn.Module:
        """What a checkpoint must hold: the head under share_backbone (the policy holds the rest)."""
        return self.model.head if self.shared else self.model

    def checkpoint_model(self, policy: nn.Module) -> nn.Module:
        """What a checkpoint saves with the policy optimizer: ``policy``, or under torchrun + share_backbone a
        module holding the policy trainer and the head (that optimizer steps both; DCP names every parameter
        it holds by its place in the module it is given)."""
        if self.trunk is None:
            return policy
        joint = nn.Module()
        joint.policy, joint.value_head = policy, self.model.head
        return joint

    @property
    def sharded(self) -> bool:
        """FSDP2-sharded (torchrun): weights and optimizer states go into the DCP checkpoint, not state_dict."""
        return self.template is not None

    def checkpoint_optimizer(self) -> dict[str, torch.optim.Optimizer]:
        """``{"critic": optimizer}`` when sharded (saved with its shards in the DCP checkpoint), else {}."""
        return {"critic": self.optimizer} if self.sharded and self.optimizer is not None else {}

    def state_dict(self) -> dict[str, Any]:
        keep = self.optimizer is not None and not self.sharded
        return {"optimizer": self.optimizer.state_dict() if keep else None}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def save(self, path: str | Path, tokenizer: Any = None) -> Path:
        """The value model as a directory (:meth:`ScalarHeadModel.save`). Sharded: every rank gathers the full
        weights (collective), rank 0 writes them through an unsharded copy of the structure."""
        if self.template is None:
            return self.model.save(path, tokenizer)
        if self.trunk is not None:  # share_backbone: the replica's backbone (synced) + the gathered head
            full, head = full_state(self.model.head), self.model.head
            if is_main():
                plain = copy.deepcopy(self.template).to_empty(device=module_device(self.model))
                plain.load_state_dict(full)
                self.model.head = plain
                try:
                    self.model.save(path, tokenizer)
                finally:
                    self.model.head = head
            return Path(path)
        full = full_state(self.model)
        if is_main():
            plain = copy.deepcopy(self.template).to_empty(device="cpu")
            plain.load_state_dict(full)
            plain.save(path, tokenizer)  # type: ignore[operator]
        return Path(path)


def build_critic(policy: nn.Module, cfg: Config, trainer: nn.Module | None = None) -> Critic | None:
    """The critic configured by ``cfg.critic`` (None unless ``algo.advantage`` is gae): from
    ``critic.path``, else from the policy's current weights (call before any RL update or resume). Under
    torchrun ``policy`` is the rollout replica and ``trainer`` the FSDP2 copy (what share_backbone trains)."""
    c, a = cfg.critic, cfg.algo
    if a.advantage != "gae":
        return None
    if c.path:
        model = load_scalar_model(c.path, dtype=cfg.model.dtype, device=module_device(policy))  # beside it
        _check_vocab(model, policy, c.path)
    elif c.share_backbone:
        model = scalar_model_from_policy(policy, share=True, seed=derive_seed(cfg.seed, "critic"))
    else:
        from llmrl.models.lora import is_peft_model

        base = copy.deepcopy(policy).merge_and_unload() if is_peft_model(policy) else policy  # type: ignore[operator]
        model = scalar_model_from_policy(base, seed=derive_seed(cfg.seed, "critic"))
    o = cfg.optim
    defaults = {k: p.default for k, p in inspect.signature(gae_advantages).parameters.items()}
    gamma, lam = (float(a.advantage_options.get(k, defaults[k])) for k in ("gamma", "lam"))  # the estimator's
    return Critic(model, shared=c.share_backbone, frozen=c.frozen, lr=c.lr, betas=o.betas, eps=o.eps,
                  weight_decay=o.weight_decay, grad_clip=c.grad_clip, vf_coef=c.vf_coef, value_clip=c.value_clip,
                  micro_batch_size=c.micro_batch_size or a.micro_batch_size, gamma=gamma, lam=lam,
                  trainer=trainer)


def _meta_copy(model: nn.Module) -> nn.Module:
    """``model``'s structure with every parameter and buffer on the meta device (no memory): what a sharded
    critic's full weights are loaded into, after ``to_empty``, to be saved."""
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                            for p in model.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    return copy.deepcopy(model, memo)


def _check_vocab(critic: ScalarHeadModel, policy: nn.Module, path: str) -> None:
    """The critic reads the policy's token ids: its embedding table must cover the policy's vocabulary."""
    n_critic = critic.backbone.get_input_embeddings().num_embeddings
    n_policy = policy.get_input_embeddings().num_embeddings  # type: ignore[operator]
    if n_critic != n_policy:
        raise ConfigError(f"critic.path: {path} has {n_critic} token embeddings but the policy has {n_policy}; "
                          "the critic must use the policy's tokenizer")


__all__ = ["Critic", "build_critic"]
