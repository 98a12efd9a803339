"""MPO (Wang et al., 2025, arXiv:2502.18699): mix K single-objective policies into one log-linear policy, no
further training.

Pipeline of ``trainer: mpo``:

1. The reference π_ref is the ``model`` section (after the ``sft`` warm start, if any; saved to
   ``<output_dir>/reference_model`` unless it is a local directory used as is).
2. The K policies are ``mix.policies`` (local model directories), or, when that is empty, one policy per
   reward component of the task (``mix.objectives``, default all of ``task.reward_functions()``), each trained
   from π_ref for ``mix.policy_steps`` steps by the ordinary RL loop (:func:`llmrl.rl.loop.train`) on the
   task ``single_objective`` (the same prompts, that component as the whole reward), written to
   ``<output_dir>/policies/<component>/``.
3. λ is ``mix.weights``, or the max–min weights: batch stochastic mirror descent on
   F(λ) = E_x log E_{y~π_ref} Π_k (π_k/π_ref)^{λ_k} (:func:`llmrl.algos.maxmin_weights`), each step on
   ``mix.md_prompts`` training prompts × ``mix.md_samples`` responses of π_ref, with sequence-level
   log-ratios ℓ_jk = log π_k(y_j|x) − log π_ref(y_j|x) summed over the (possibly truncated) completion at
   ``rollout.temperature``.
4. The mixture (token-level geometric mixture, :class:`llmrl.rollout.mixture.MixtureSampler`), π_ref and every
   π_k are evaluated on the held-out prompts with the same settings (``eval`` section); ``summary.json``
   records λ, the mirror-descent trace and every number.

Under torchrun (``llmrl train --nproc N``) steps 1–2 are data-parallel (the SFT warm start and each policy's RL
run, as ``trainer: rl``); steps 3–4 sample and score, and run on rank 0 alone while the others finish.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmrl.algos import MaxMinResult, maxmin_weights
from llmrl.core.config import ConfigError, from_dict, to_dict
from llmrl.core.seed import derive_seed, seed_everything
from llmrl.core.types import Batch, Sample
from llmrl.models.device import module_device
from llmrl.models.loading import load_model, load_tokenizer
from llmrl.rl.config import RLRoot
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.mixture import MixtureError, MixtureSampler, check_same_tokenizer
from llmrl.train.build import build_data, build_generator, build_policy, build_task
from llmrl.train.collect import DataStream, score_episodes, score_summary
from llmrl.train.distributed import barrier, is_main
from llmrl.train.evaluate import evaluate
from llmrl.train.run import save_model_atomic, warm_start
from llmrl.train.rundir import apply_threads, prepare_output
from llmrl.train.update import sequence_logprobs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmrl.preference.config import MPORoot
    from llmrl.tasks.base import Task


@torch.no_grad()
def sample_log_ratios(ref: torch.nn.Module, policies: Sequence[torch.nn.Module], tokenizer: Any,
                      samples: list[Sample], params: SamplingParams, *, chat_template: bool | None,
                      backend: str = "kvcache", micro_batch_size: int = 0) -> torch.Tensor:
    """ℓ_jk = log π_k(y_j|x) − log π_ref(y_j|x) for ``params.n`` responses y_j ~ π_ref of each sample.

    Sequence log-probs are sums over the completion tokens at ``params.temperature`` (1 when 0), all of
    them recomputed by a forward pass (the reference's too, so both sides are computed the same way).
    -> [B, m, K]
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    eps = generate_episodes(build_generator(ref, tokenizer, backend), tokenizer, samples, params, chat_template)
    batch = Batch.collate(eps, pad)
    temp = params.temperature if params.temperature > 0 else 1.0
    ref_lp = (sequence_logprobs(ref, batch, temp, micro_batch_size) * batch.mask).sum(-1)  # [B*m] (on the CPU)
    cols = [(sequence_logprobs(p, batch, temp, micro_batch_size) * batch.mask).sum(-1) - ref_lp for p in policies]
    return torch.stack(cols, -1).view(len(samples), params.n, len(policies)).double()


def estimate_maxmin(ref: torch.nn.Module, policies: Sequence[torch.nn.Module], tokenizer: Any,
                    prompts: list[Sample], *, steps: int, samples_per_prompt: int, prompts_per_step: int,
                    lr_c: float, max_new_tokens: int, temperature: float, seed: int,
                    chat_template: bool | None, stop: Sequence[str] = (), backend: str = "kvcache",
                    micro_batch_size: int = 0) -> MaxMinResult:
    """Max–min mixing weights by batch stochastic mirror descent, sampling fresh responses of π_ref for
    ``prompts_per_step`` prompts (cycling through a seeded shuffle of ``prompts``) at every step."""
    if temperature <= 0:
        raise ConfigError("max-min weights need responses sampled from pi_ref: the temperature must be > 0")
    data = DataStream(prompts, derive_seed(seed, "mpo"))

    def batch(t: int) -> torch.Tensor:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=samples_per_prompt,
                                stop=list(stop), seed=derive_seed(seed, "mpo", t))
        return sample_log_ratios(ref, policies, tokenizer, data.next(prompts_per_step), params,
                                 chat_template=chat_template, backend=backend, micro_batch_size=micro_batch_size)

    return maxmin_weights(batch, steps=steps, lr_c=lr_c)


def load_policies(dirs: Sequence[str | Path], names: Sequence[str], dtype: str, ref_tokenizer: Any = None,
                  device: str | torch.device = "cpu") -> tuple[list[torch.nn.Module], Any]:
    """Load K policy directories on ``device``; their tokenizers (and the reference's, when given) must be
    identical. Returns (models, the shared tokenizer)."""
    toks = [load_tokenizer(d) for d in dirs]
    try:
        if ref_tokenizer is not None:
            check_same_tokenizer([ref_tokenizer, *toks], ["the reference", *names])
        else:
            check_same_tokenizer(toks, list(names))
    except MixtureError as exc:
        raise ConfigError(str(exc)) from None
    return [load_model(d, dtype=dtype, device=device) for d in dirs], (ref_tokenizer if ref_tokenizer is not None else toks[0])


def mixture_sampler(models: Sequence[torch.nn.Module], tokenizer: Any, weights: Sequence[float]) -> MixtureSampler:
    """A :class:`MixtureSampler`; a bad weight vector or mismatched vocabularies are a ConfigError."""
    try:
        return MixtureSampler(models, tokenizer, weights)
    except MixtureError as exc:
        raise ConfigError(str(exc)) from None


def policy_config(cfg: MPORoot, reference: str | Path, component: str, output_dir: Path) -> RLRoot:
    """The rl root that trains the single-objective policy for ``component`` from the reference (every section
    of the mpo root but ``mix``)."""
    data = to_dict(cfg)
    data.pop("mix")
    data.update(trainer="rl", steps=cfg.mix.policy_steps, output_dir=str(output_dir))
    data["model"] = {**data["model"], "path": str(reference)}
    data["sft"] = {**data["sft"], "steps": 0}  # the reference is already warm-started
    data["task"] = {**data["task"], "name": "single_objective",
                    "options": {"task": cfg.task.name, "component": component, "task_options": dict(cfg.task.options)}}
    try:
        return from_dict(RLRoot, data).validate()
    except ValueError as exc:
        raise ConfigError(f"single-objective policy {component!r}: {exc}") from None


def _reference(cfg: MPORoot, task: Task, train: list[Sample], resume: bool) -> str | Path:
    """π_ref's directory: ``model.path`` itself, or the built (and warm-started) model saved under the run."""
    if cfg.model.path is not None and cfg.sft.steps == 0:
        return cfg.model.path
    path = Path(cfg.output_dir) / "reference_model"
    if resume and (path / "config.json").is_file():
        return path
    model, tok = build_policy(cfg)
    if cfg.sft.steps > 0:
        warm_start(model, tok, task, train, cfg)
    save_model_atomic(model, tok, path)
    return path


def _policies(cfg: MPORoot, task: Task, reference: str | Path, resume: bool) -> tuple[list[str], list[str]]:
    """(names, directories) of the K policies, training the missing ones."""
    if cfg.mix.policies:
        if cfg.mix.objectives:  # names given for the directories
            return list(cfg.mix.objectives), list(cfg.mix.policies)
        paths = [Path(p) for p in cfg.mix.policies]
        names = [(p.parent.name if p.name == "final_model" else p.name) or f"policy{i}" for i, p in enumerate(paths)]
        names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        return names, list(cfg.mix.policies)
    from llmrl.rl.loop import train as rl_train

    components = list(task.reward_functions())
    names = list(cfg.mix.objectives) or components
    unknown = [n for n in names if n not in components]
    if unknown:
        raise ConfigError(f"mix.objectives: task {cfg.task.name!r} has no reward component(s) {unknown}; "
                          f"its components: {components}")
    dirs = []
    for name in names:
        out = Path(cfg.output_dir) / "policies" / name
        final = out / "final_model"
        if not (resume and (final / "config.json").is_file()):
            started = resume and (out / "checkpoints" / "latest").is_file()
            rl_train(policy_config(cfg, reference, name, out), resume=started)
        dirs.append(str(final))
    return names, dirs


def _evaluate(generator: Any, tokenizer: Any, task: Task, test: list[Sample], cfg: MPORoot) -> dict[str, float]:
    """The held-out metrics of :func:`llmrl.train.evaluate.evaluate` (greedy accuracy and rewards, pass@k),
    plus ``sampled/...``: mean reward, per-component rewards and accuracy of ``eval.samples`` completions per
    prompt at ``eval.temperature`` (what a mixture *distribution* scores, not only its mode)."""
    e = cfg.eval
    max_new = e.max_new_tokens or cfg.rollout.max_new_tokens
    out = evaluate(generator, tokenizer, task, test, max_new_tokens=max_new, chat_template=cfg.model.chat_template,
                   pass_k=e.pass_k, n_samples=e.samples, temperature=e.temperature,
                   seed=derive_seed(cfg.seed, "mpo-eval"), batch_size=e.batch_size, stop=cfg.rollout.stop)
    if e.samples > 0 and e.temperature > 0:
        params = SamplingParams(max_new_tokens=max_new, temperature=e.temperature, n=e.samples,
                                seed=derive_seed(cfg.seed, "mpo-eval-sampled"), stop=list(cfg.rollout.stop))
        per = max(1, e.batch_size // e.samples)
        eps = []
        for i in range(0, len(test), per):
            eps += generate_episodes(generator, tokenizer, test[i : i + per], params, cfg.model.chat_template, i)
        score_episodes(eps, task, 0.0, max_new)
        summ = score_summary(eps)
        out.update({f"sampled/{k}": v for k, v in summ.items()
                    if k in ("reward", "accuracy", "length") or k.startswith("reward/")})
    return out


def train(cfg: MPORoot, resume: bool = False) -> dict[str, Any]:
    """Run the MPO pipeline (module docstring); returns the summary, also written to ``summary.json``."""
    t0 = time.time()
    seed_everything(cfg.seed)
    task = build_task(cfg)
    train_samples, test = build_data(cfg, task)
    out = Path(cfg.output_dir)
    if is_main():
        prepare_output(cfg)  # the inputs are valid: config.yaml, threads
    else:
        apply_threads(cfg)
    reference = _reference(cfg, task, train_samples, resume)
    barrier()  # torchrun: rank 0 has written the reference before any rank loads it
    names, dirs = _policies(cfg, task, reference, resume)
    if not is_main():  # torchrun: the weights and the evaluations are rank 0's (no collectives below)
        return {}
    t_policies = time.time()
    k, m = len(names), cfg.mix
    if m.weights is not None and len(m.weights) != k:
        raise ConfigError(f"mix.weights: {len(m.weights)} weight(s) for {k} policies {names}")
    ref, tok = build_policy(cfg, path=reference)
    ref.eval()
    models, tok = load_policies(dirs, names, cfg.model.dtype, tok, device=module_device(ref))  # beside it
    md: dict[str, Any] = {}
    if m.weights is not None:
        weights, source = [float(w) for w in m.weights], "fixed"
    else:
        res = estimate_maxmin(ref, models, tok, train_samples, steps=m.md_steps, samples_per_prompt=m.md_samples,
                              prompts_per_step=m.md_prompts, lr_c=m.md_lr_c,
                              max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                              seed=cfg.seed, chat_template=cfg.model.chat_template, stop=cfg.rollout.stop,
                              backend=cfg.rollout.backend, micro_batch_size=cfg.algo.micro_batch_size)
        weights, source = [float(w) for w in res.weights], "maxmin"
        md = {"steps": res.steps, "samples": m.md_samples, "prompts": m.md_prompts, "lr": res.lr,
              "last_iterate": [float(w) for w in res.last], "objective": res.objective,
              "gradients": res.gradients}
    t_weights = time.time()
    evals = {"reference": _evaluate(build_generator(ref, tok, cfg.rollout.backend), tok, task, test, cfg)}
    for name, model in zip(names, models):
        evals[f"policy/{name}"] = _evaluate(build_generator(model, tok, cfg.rollout.backend), tok, task, test, cfg)
    evals["mixture"] = _evaluate(mixture_sampler(models, tok, weights), tok, task, test, cfg)
    components = sorted({key.split("reward/", 1)[1] for ev in evals.values() for key in ev if "reward/" in key})
    summary: dict[str, Any] = {
        "accuracy_before": evals["reference"].get("accuracy"),
        "accuracy_after": evals["mixture"].get("accuracy"),
        "reward_before": evals["reference"].get("reward"),
        "reward_after": evals["mixture"].get("reward"),
        "weights": weights,
        "weights_source": source,
        "objectives": names,
        "policies": dirs,
        "reference": str(reference),
        "accuracy": {who: ev.get("accuracy") for who, ev in evals.items()},
        "objective_rewards": {c: {who: ev.get(f"reward/{c}") for who, ev in evals.items()} for c in components},
        "objective_rewards_sampled": {c: {who: ev.get(f"sampled/reward/{c}") for who, ev in evals.items()}
                                      for c in components},
        "mirror_descent": md,
        "eval": evals,
        "policy_seconds": t_policies - t0,
        "weights_seconds": t_weights - t_policies,
        "wall_seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["estimate_maxmin", "load_policies", "mixture_sampler", "policy_config", "sample_log_ratios", "train"]
