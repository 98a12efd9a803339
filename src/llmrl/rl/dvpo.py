"""DVPO (Huang et al., 2025, arXiv:2502.16944): a global value model (GVM) trained offline on preference
pairs, then PPO with it frozen.

Value-model training (trainer ``dvpo_value``, section ``gvm``). Each pair gives two sequences, prompt +
chosen and prompt + rejected (tokenised by :func:`llmrl.train.pairs.encode_pairs`, the RL tokenisation,
EOS appended). The sequence's label sits on its last response token: +1 for chosen, −1 for rejected, or
with ``gvm.reward_model`` the reward model's score of each. Per step, with V the value head's outputs
at the response positions (``Batch`` alignment: V_t is read before response token t+1):

    r_t      = label on the last response token, 0 elsewhere
    A, R     = gae(r, stop_grad(V), mask, γ = gvm.gamma, λ = gvm.lam)       (R = A + V: the targets)
    loss     = 0.5 · masked-mean_t (V_t − R_t)²                               (value_loss, clip = None)

so the targets are bootstrapped from the current estimates (γ = 1, λ = 0.95 by default, as DVPO).
Reported: the loss, and the pair accuracy on held-out pairs: how often V at the last response position
of the chosen sequence exceeds that of the rejected one.

Policy training (trainer ``dvpo``): the RL loop with the value model frozen as the critic (``critic.path``,
``critic.frozen``). The recipe makes the rewards KL-only (``algo.sequence_reward: false``,
``algo.kl_in_reward: true``, β adaptive from 0.2 towards KL 0.1) and the advantages whitened GAE over
them with the frozen values (``algo.advantage: gae``). With no ``critic.path`` the trainer first trains
the value model (``gvm``), from the policy's weights after the SFT warm start, and saves it to
``gvm.output`` (default ``<output_dir>/value_model``); a resumed run reuses both.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from llmrl.algos import gae, token_rewards, value_loss
from llmrl.core.errors import ConfigError
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.models.device import module_device
from llmrl.models.value_head import HEAD_WEIGHTS, ScalarHeadModel, scalar_model_from_policy
from llmrl.tasks.preference import PreferencePair, read_preference_pairs
from llmrl.train.distributed import DataParallel, all_finite, is_main, on_main
from llmrl.train.optim import build_optimizer
from llmrl.train.pairs import PairBatch, encode_pairs
from llmrl.train.rundir import atomic_dir
from llmrl.train.update import clipped_step

if TYPE_CHECKING:
    from llmrl.rl.config import DVPORoot, DVPOValueRoot

GVM_META = "value_model.json"


def pair_labels(batch: PairBatch, pairs: list[PreferencePair], reward_model: str | None = None,
                tokenizer: Any = None) -> Tensor:
    """[2B] sequence labels: +1 chosen / −1 rejected, or a reward model's scores of each completion."""
    if reward_model is None:
        b = batch.num_pairs
        return torch.cat([torch.ones(b), -torch.ones(b)])
    from llmrl.rewards.reward_model import reward_model_reward

    rm = reward_model_reward(reward_model, tokenizer if not _has_tokenizer(reward_model) else None)
    samples = [{"prompt": p.prompt} for p in pairs]
    chosen = rm.score_batch([p.chosen for p in pairs], samples)
    rejected = rm.score_batch([p.rejected for p in pairs], samples)
    return torch.tensor(chosen + rejected, dtype=torch.float32)


def gvm_loss(model: ScalarHeadModel, ids: Tensor, mask: Tensor, labels: Tensor, gamma: float, lam: float,
             num_tokens: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The DVPO value loss of rows ``ids`` [b, L] / ``mask`` [b, L-1] with sequence ``labels`` [b] (computed on
    the model's device)."""
    dev = module_device(model)
    ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
    values = model(ids)[:, :-1]  # [b, L-1]; right padding: causal attention is exact for the real tokens
    rewards = token_rewards(labels, mask)  # [b, L-1]: the label on the last response token
    _, returns = gae(rewards, values.detach(), mask, gamma, lam)
    return value_loss(values, values.detach(), returns, mask, clip=None, num_tokens=num_tokens)


@torch.no_grad()
def last_values(model: ScalarHeadModel, batch: PairBatch, micro_batch_size: int = 0) -> Tensor:
    """V at the last response position of every row.  -> [2B] (on the CPU)"""
    n = batch.input_ids.shape[0]
    size = micro_batch_size or n
    out = []
    for s in range(0, n, size):
        ids, mask = batch.rows(slice(s, min(s + size, n)))
        v = model(ids.to(module_device(model)))[:, :-1].cpu()
        pos = torch.arange(mask.shape[1]).expand_as(mask)
        last = torch.where(mask > 0, pos, 0).amax(-1)  # [b]
        out.append(v.gather(1, last[:, None]).squeeze(1))
    return torch.cat(out)


def train_value_model(model: ScalarHeadModel, tokenizer: Any, train: list[PreferencePair],
                      test: list[PreferencePair], cfg: DVPORoot | DVPOValueRoot) -> dict[str, float]:
    """``gvm.steps`` AdamW steps on random batches of ``gvm.batch_size`` pairs; returns the metrics. Under
    torchrun the value model is trained as an FSDP2 copy, each rank on its contiguous share of every batch's
    pairs (the batch must split evenly) with the loss normalised by the whole batch's token count, and copied
    back into ``model`` at the end. A step whose loss or gradient norm is not finite is skipped (counted in
    ``gvm_skipped_steps``)."""
    g = cfg.gvm
    if not train:
        raise ConfigError("gvm: no training pairs (pairs_file empty, or every task pair was skipped)")
    enc = dict(max_length=g.max_length, max_prompt_length=g.max_prompt_length, chat_template=cfg.model.chat_template)
    batch = encode_pairs(tokenizer, train, **enc)
    labels = pair_labels(batch, train, g.reward_model, tokenizer)  # [2B]
    model.eval()  # no dropout; gradients still flow
    dp = DataParallel(model)  # torchrun: an FSDP2 trainer (dp.policy) beside ``model``; else ``model`` itself
    trainer = dp.policy
    opt = build_optimizer(trainer.parameters(), g.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps)
    rng = random.Random(derive_seed(cfg.seed, "gvm"))
    n, b = batch.num_pairs, min(g.batch_size, batch.num_pairs)
    losses: list[float] = []
    skipped = 0
    for _ in range(g.steps):
        idx = torch.tensor(dp.share(rng.sample(range(n), b), "gvm.batch_size"))  # torchrun: this rank's pairs
        rows = torch.cat([idx, idx + n])  # chosen rows, then their rejected rows
        sub = batch.select(idx)
        ids_all, mask_all = sub.rows(slice(None))
        lab = labels[rows]
        size = g.micro_batch_size or len(rows)
        num_tokens = max(dp.total(float(mask_all.sum())), 1.0)  # the whole batch's (every rank's)
        opt.zero_grad(set_to_none=True)
        total, finite = 0.0, True
        for s in range(0, len(rows), size):
            loss, _ = gvm_loss(trainer, ids_all[s : s + size], mask_all[s : s + size], lab[s : s + size], g.gamma,
                               g.lam, num_tokens=num_tokens)
            if not all_finite(loss):  # under torchrun on every rank: they skip together
                finite = False
                break
            loss.backward()
            total += float(loss.detach())
        if not (finite and clipped_step(opt, None, cfg.optim.grad_clip)[0]):  # non-finite loss or gradient: skipped
            opt.zero_grad(set_to_none=True)
            skipped += 1
            continue
        losses.append(dp.total(total))
    opt.zero_grad(set_to_none=True)
    dp.sync()  # torchrun: the trained weights into ``model``
    out = {"gvm_loss_first": _mean(losses[:10]), "gvm_loss_last": _mean(losses[-10:]), "gvm_train_pairs": float(n),
           "gvm_skipped_steps": float(skipped)}
    if test:
        tb = encode_pairs(tokenizer, test, **enc)
        v = last_values(model, tb, g.micro_batch_size)
        out.update({"gvm_pair_accuracy": float((v[: tb.num_pairs] > v[tb.num_pairs :]).float().mean()),
                    "gvm_eval_pairs": float(tb.num_pairs)})
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))


def load_pairs(cfg: DVPORoot | DVPOValueRoot, task: Any,
               samples: list[dict[str, Any]]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs: from ``gvm.pairs_file``, else built from the task's demonstrations."""
    g = cfg.gvm
    if g.pairs_file:
        pairs = read_preference_pairs(g.pairs_file)
    else:
        if not hasattr(task, "wrong_demonstration"):
            raise ConfigError(f"gvm.pairs_file: task {task.name!r} has no wrong_demonstration to build pairs from; "
                              "give a preference file")
        from llmrl.tasks.preference import task_pairs

        pairs = task_pairs(task, samples[: g.num_pairs + g.eval_pairs], cfg.seed)
    k = min(g.eval_pairs, len(pairs) // 5)  # hold out at most a fifth
    return pairs[: len(pairs) - k], pairs[len(pairs) - k :]


def save_value_model(model: ScalarHeadModel, tokenizer: Any, path: Path, meta: dict[str, Any]) -> Path:
    """Atomic save (temporary directory + rename) with ``value_model.json`` (the training settings)."""
    with atomic_dir(path) as tmp:
        model.save(tmp, tokenizer)
        (tmp / GVM_META).write_text(json.dumps(meta, indent=2))
    return path


def build_value_model(cfg: DVPORoot | DVPOValueRoot) -> tuple[Path, dict[str, Any], Path | None]:
    """Train the GVM from the policy's weights (after the SFT warm start, whose model is saved to
    ``<output_dir>/sft_model``). Returns (value model dir, metrics, SFT model dir or None)."""
    from llmrl.train.build import build_data, build_policy, build_task
    from llmrl.train.run import save_model_atomic, warm_start

    seed_everything(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = build_task(cfg)
    train_samples, _ = build_data(cfg, task)
    policy, tok = build_policy(cfg)
    sft_dir = None
    t0 = time.time()
    if cfg.sft.steps > 0:
        warm_start(policy, tok, task, train_samples, cfg)
        sft_dir = out / "sft_model"
        save_model_atomic(policy, tok, sft_dir)
    train, test = load_pairs(cfg, task, train_samples)
    model = scalar_model_from_policy(policy, seed=derive_seed(cfg.seed, "gvm_head"))
    metrics = train_value_model(model, tok, train, test, cfg)
    metrics["gvm_seconds"] = time.time() - t0
    path = Path(cfg.gvm.output) if cfg.gvm.output else out / "value_model"
    meta = {"gamma": cfg.gvm.gamma, "lam": cfg.gvm.lam, "labels": cfg.gvm.reward_model or "+1 chosen / -1 rejected",
            **metrics}
    on_main(lambda: save_value_model(model, tok, path, meta))  # torchrun: rank 0 writes, the others wait for it
    return path, metrics, sft_dir


def train_gvm(cfg: DVPORoot | DVPOValueRoot, resume: bool = False) -> dict[str, Any]:
    """Trainer ``dvpo_value``: train and save the global value model only; summary in summary.json."""
    path, metrics, _ = build_value_model(cfg)
    summary = {**metrics, "value_model": str(path)}
    if is_main():
        (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def train(cfg: DVPORoot, resume: bool = False) -> dict[str, Any]:
    """Trainer ``dvpo``: PPO with a frozen value model (trained first from ``gvm`` when critic.path is null)."""
    from llmrl.rl import loop as rl

    if cfg.algo.advantage != "gae":
        raise ConfigError("trainer dvpo: algo.advantage must be gae (advantages from the frozen value model)")
    gvm: dict[str, Any] = {}
    if not cfg.critic.path:
        out = Path(cfg.output_dir)
        path, sft_dir = Path(cfg.gvm.output) if cfg.gvm.output else out / "value_model", out / "sft_model"
        if resume and (path / HEAD_WEIGHTS).is_file():  # trained before the interruption: reuse
            sft = sft_dir if cfg.sft.steps > 0 and (sft_dir / "config.json").is_file() else None
        else:
            path, gvm, sft = build_value_model(cfg)
        cfg = replace(cfg, critic=replace(cfg.critic, path=str(path)))
        if sft is not None:  # the RL loop starts from the warm-started policy the value model was built from
            cfg = replace(cfg, model=replace(cfg.model, path=str(sft)), sft=replace(cfg.sft, steps=0))
    cfg = replace(cfg, critic=replace(cfg.critic, frozen=True))
    summary = rl.train(cfg, resume)
    if gvm and is_main():
        summary.update(gvm)
        (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["GVM_META", "build_value_model", "gvm_loss", "last_values", "load_pairs", "pair_labels",
           "save_value_model", "train", "train_gvm", "train_value_model"]
