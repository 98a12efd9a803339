"""ReVISE (trainer revise; PAPERS.md §11; docs/agents.md): pairs, the [refine] token, the loss, decoding, a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.models.loading import load_model, load_tokenizer, save_model
from llmrl.models.special_tokens import add_special_token
from llmrl.models.tiny import TinyModelSpec, build_tiny_model
from llmrl.preference.revise import (
    TokenPair,
    evaluate_revise,
    revise_pairs,
    sft_plus_dpo,
    token_pair_batch,
)
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.refine import Trajectory, eos_confidence, split_answers, weighted_vote
from llmrl.tasks import get_task
from llmrl.trainers import run_trainer
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
SMALL = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                      max_position_embeddings=64)

# -- pairs --------------------------------------------------------------------------------------------------


def test_revise_pairs_by_hand() -> None:
    eos, ref = 2, 9
    v, c = revise_pairs([10, 11], [20, 21], True, [30], eos, ref)
    # correct y: accept over refine; y is in both completions (SFT covers y + eos, DPO's margin is unchanged)
    assert v == TokenPair((10, 11), (20, 21, 2), (20, 21, 9)) and c is None
    v, c = revise_pairs([10, 11], [20, 21], True, [30], eos, ref, sft_answer=False)
    assert v == TokenPair((10, 11, 20, 21), (2,), (9,)) and c is None  # only the decision token
    for sft_answer in (True, False):  # a wrong y is never in a completion (never imitated)
        v, c = revise_pairs([10, 11], [20], False, [30, 31], eos, ref, sft_answer)
        assert v == TokenPair((10, 11, 20), (9,), (2,))  # wrong y: refine over accept
        assert c == TokenPair((10, 11, 20), (9, 30, 31, 2), (2,))  # wrong y: refine + gold + eos over accept


def test_token_pair_batch_layout() -> None:
    pairs = [TokenPair((5, 6), (2,), (9,)), TokenPair((7,), (9, 30, 2), (2,))]
    b = token_pair_batch(pairs, pad_id=0)
    assert b.num_pairs == 2
    assert b.input_ids.tolist() == [[5, 6, 2, 0], [7, 9, 30, 2], [5, 6, 9, 0], [7, 2, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    # target-aligned: loss_mask[r, t] = 1 iff token t+1 is a completion token
    assert b.loss_mask.tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]]
    assert b.completion_lengths.tolist() == [1, 3, 1, 1]
    assert not b.truncated.any()


def test_dpo_margin_is_the_same_with_the_answer_in_the_completion() -> None:
    # invariance: y's log-probs are the same in both rows, so the DPO margin of (x, y+eos, y+refine) equals that
    # of (x+y, eos, refine); only the SFT term differs
    from llmrl.preference.dpo import score_pairs

    policy, _ = build_tiny_model(SMALL, seed=1)
    ref, _ = build_tiny_model(SMALL, seed=2)
    margins = []
    for sft_answer in (True, False):
        pairs = [revise_pairs([10, 11, 12], [20, 21], True, [30], 2, 9, sft_answer)[0],
                 revise_pairs([13], [22, 23, 24], True, [30], 2, 9, sft_answer)[0]]
        b = token_pair_batch(pairs, pad_id=0)
        pol, rf = score_pairs(policy, b), score_pairs(ref, b)  # [2, 2]
        margins.append((pol[:, 0] - rf[:, 0]) - (pol[:, 1] - rf[:, 1]))
    assert torch.allclose(margins[0], margins[1], atol=1e-5)


def test_sft_plus_dpo_by_hand() -> None:
    # one pair: policy chosen/rejected summed log-probs -1 / -2, reference -1.5 / -1.5, 1 token each
    logps = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([[-1.5, -1.5]])
    losses, m = sft_plus_dpo(lam=0.1, beta=0.1)(logps, ref, torch.tensor([1.0, 1.0]))
    # margin = (-1 + 1.5) - (-2 + 1.5) = 1; DPO = -log sigmoid(0.1) = log(1 + e^-0.1) = 0.644397; NLL = 1
    assert losses.tolist() == pytest.approx([1.0 + 0.1 * 0.6443967])
    assert float(m["sft/nll"]) == pytest.approx(1.0)
    # a 2-token chosen continuation: the SFT term is its summed NLL (3), not the per-token mean (1.5)
    losses, _ = sft_plus_dpo(lam=0.5, beta=1.0)(torch.tensor([-3.0, -1.0]), torch.tensor([[-3.0, -1.0]]),
                                                torch.tensor([2.0, 1.0]))
    assert losses.tolist() == pytest.approx([3.0 + 0.5 * math.log(2.0)])  # margin 0: -log sigmoid(0) = log 2


# -- the [refine] token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_add_special_token_resizes_and_round_trips(tmp_path: Path, tied: bool) -> None:
    model, tok = build_tiny_model(TinyModelSpec(**{**SMALL.__dict__, "tie_word_embeddings": tied}), seed=3)
    old_emb = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings().weight.detach().clone()
    n = len(tok)
    tid = add_special_token(model, tok, "[refine]")
    assert tid == n and len(tok) == n + 1
    assert tok.encode("12[refine]3", add_special_tokens=False) == [*tok.encode("12", add_special_tokens=False), tid,
                                                                     *tok.encode("3", add_special_tokens=False)]
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == n + 1 and model.config.vocab_size == n + 1
    assert torch.equal(emb[:n], old_emb) and torch.equal(head[:n], old_head)  # old rows bit-for-bit
    assert torch.allclose(emb[tid], old_emb.mean(0)) and torch.allclose(head[tid], old_head.mean(0))
    assert (head.data_ptr() == emb.data_ptr()) == tied
    assert add_special_token(model, tok, "[refine]") == tid and len(tok) == n + 1  # idempotent
    save_model(model, tok, tmp_path / "m")
    model2, tok2 = load_model(tmp_path / "m"), load_tokenizer(tmp_path / "m")
    assert tok2.convert_tokens_to_ids("[refine]") == tid and len(tok2) == n + 1
    assert tok2.encode("7[refine]", add_special_tokens=False)[-1] == tid
    assert torch.equal(model2.get_input_embeddings().weight, emb.detach())
    assert torch.equal(model2.get_output_embeddings().weight, head.detach())
    assert add_special_token(model2, tok2, "[refine]") == tid  # reloaded: found, nothing resized
    assert model2.get_input_embeddings().weight.shape[0] == n + 1


# -- decoding -----------------------------------------------------------------------------------------------


def test_split_answers() -> None:
    assert split_answers([5, 6, 9, 7, 2, 8], 9, [2]) == Trajectory([[5, 6], [7]], True)
    t = split_answers([5, 9, 6, 9, 7], 9, [2])  # budget ran out after a second [refine]
    assert t == Trajectory([[5], [6], [7]], False) and t.final == [6] and t.first == [5] and t.refines == 2
    assert split_answers([5, 6], 9, [2]).final == [5, 6]  # cut, never refined: the unfinished answer
    assert split_answers([2], 9, [2]) == Trajectory([[]], True)


def test_weighted_vote_confidence_vs_majority() -> None:
    keys = ["13", "13", "13", "12", None]
    conf = [0.1, 0.2, 0.1, 0.9, 1.0]
    assert weighted_vote(keys) == "13"  # majority: 3 votes to 1
    assert weighted_vote(keys, conf) == "12"  # confidence: 12 -> 0.9 > 13 -> 0.4; None never wins
    assert weighted_vote(["4", "5", "5", "4"], [0.5, 0.25, 0.25, 0.0]) == "4"  # tie 0.5 : 0.5 -> first seen
    assert weighted_vote([None, None]) is None


def test_eos_confidence_matches_single_rows() -> None:
    model, _ = build_tiny_model(SMALL, seed=1)
    prompts, answers = [[10, 11, 12], [13]], [[20], [21, 22, 23]]
    got = eos_confidence(model, prompts, answers, eos_id=2, pad_id=0)
    for p, a, c in zip(prompts, answers, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0, -1]
        assert c == pytest.approx(float(torch.softmax(logits, -1)[2]), abs=1e-6)


class _Fixed:
    """A generator returning fixed token rows: greedy rows for temperature 0, else the sampled rows."""

    def __init__(self, greedy: list[list[int]], sampled: list[list[list[int]]]) -> None:
        self.greedy, self.sampled = greedy, sampled

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        rows = [[g] for g in self.greedy] if params.temperature == 0 else self.sampled
        return [[Generation(r, [0.0] * len(r), "", "stop") for r in rs] for rs in rows[: len(prompts)]]


class _LastTokenLM(nn.Module):
    """P(eos | ..., t) = table[t] (the rest of the mass on token 0): a model whose confidences are known."""

    def __init__(self, table: dict[int, float], vocab: int = 128, eos: int = 2) -> None:
        super().__init__()
        self.table, self.vocab, self.eos = table, vocab, eos
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        B, L = input_ids.shape
        probs = torch.full((B, L, self.vocab), 1e-9)
        for b in range(B):
            for t in range(L):
                p = self.table.get(int(input_ids[b, t]), 0.5)
                probs[b, t, self.eos], probs[b, t, 0] = p, 1 - p
        return type("Out", (), {"logits": probs.log()})()


def test_evaluate_revise_by_hand() -> None:
    task = get_task("arithmetic", digits=1, ops=["+"], style="plain")
    _, tok = build_tiny_model(SMALL)
    refine = 101  # an id past the char vocabulary stands for [refine]
    d = {ch: tok.convert_tokens_to_ids(ch) for ch in "0123456789"}
    eos = tok.eos_token_id
    samples = [{"prompt": "3+4=", "answer": "7"}, {"prompt": "5+5=", "answer": "10"}]
    greedy = [[d["6"], refine, d["7"], eos],  # refine loop fixes 6 -> 7 (plain wrong, refine right)
              [d["1"], d["0"], eos]]  # right at once
    sampled = [[[d["6"], eos], [d["6"], eos], [d["7"], eos]],  # majority 6 (wrong); confidence 7
               [[d["0"], eos], [d["1"], d["0"], refine, d["9"], eos], [d["0"], eos]]]  # majority 0 (wrong)
    # P(eos) after the last answer token: after "6" 0.1, after "7" 0.9, after "0" 0.3 ("10" also ends in "0")
    model = _LastTokenLM({d["6"]: 0.1, d["7"]: 0.9, d["0"]: 0.3})
    m = evaluate_revise(model, _Fixed(greedy, sampled), tok, task, samples, refine, n=3, temperature=1.0,
                        max_new_tokens=8, seed=0)
    assert m["accuracy/plain"] == 0.5 and m["accuracy/refine"] == 1.0
    assert m["accuracy/sample"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # final answers: 6, 6, 7 | 0, 9 (refined away from the right 10), 0 -> 1/3 and 0
    assert m["accuracy/sample_refine"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["accuracy/majority"] == 0.0  # 6 (2 of 3) and 0 (2 of 3)
    # confidence: q1 6 -> 0.2 vs 7 -> 0.9: 7 (right); q2 0 -> 0.6 vs 10 -> 0.3: 0 (wrong)
    assert m["accuracy/confidence"] == 0.5
    # c > 1/2 predicts correctness: q1 (0.1 wrong, 0.1 wrong, 0.9 right) 3 hits; q2 (0.3 wrong, 0.3 right, 0.3
    # wrong) 2 hits -> 5 / 6
    assert m["verify/accuracy"] == pytest.approx(5 / 6)
    assert m["verify/conf_correct"] == pytest.approx((0.9 + 0.3) / 2)
    assert m["verify/conf_wrong"] == pytest.approx((0.1 + 0.1 + 0.3 + 0.3) / 4)
    assert m["verify/refine_rate_greedy"] == 0.5 and m["verify/refine_rate_sampled"] == pytest.approx(1 / 6)


# -- config and a run ---------------------------------------------------------------------------------------


def _tiny(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, f"output_dir={tmp_path / 'run'}", "sft.steps=40", "sft.lr=3e-3", "sft.num_examples=64",
            "sft.warmup_steps=0", "revise.prompts=48", "revise.eval_samples=4", "eval.size=8", "steps=15",
            "optim.lr=3e-3", "optim.warmup_steps=0", "revise.batch_size=32", *extra]


def test_config_errors(tmp_path: Path) -> None:
    recipe = str(ROOT / "recipes" / "revise.yaml")
    with pytest.raises(ConfigError, match="revise.stages"):
        load_config(recipe, [*_tiny(tmp_path), "revise.stages=[verify,fix]"])
    with pytest.raises(ConfigError, match="revise.lam"):
        load_config(recipe, [*_tiny(tmp_path), "revise.lam=0"])
    with pytest.raises(ConfigError, match="model.lora.enabled"):
        load_config(recipe, [*_tiny(tmp_path), "model.lora.enabled=true"])


def test_tiny_run_trains_verification_and_saves_the_token(tmp_path: Path) -> None:
    cfg = load_config(str(ROOT / "recipes" / "revise.yaml"), _tiny(tmp_path))
    summary = run_trainer(cfg)
    out = Path(cfg.output_dir)
    assert json.loads((out / "summary.json").read_text())["refine_token_id"] == summary["refine_token_id"]
    ev, p = summary["evals"], summary["pairs"]
    assert p["pairs/verify"] == p["pairs/answers"] > 0
    assert p["pairs/correct"] == p["pairs/answers"] - p["pairs/answers_correct"]
    # the tiny model gets nearly everything wrong: the verify stage teaches [refine] after its answers
    assert ev["verify"]["verify/conf_wrong"] < ev["before"]["verify/conf_wrong"] - 0.1
    assert ev["verify"]["verify/refine_rate_sampled"] > ev["before"]["verify/refine_rate_sampled"]
    tok = load_tokenizer(out / "final_model")
    model = load_model(out / "final_model")
    assert tok.convert_tokens_to_ids("[refine]") == summary["refine_token_id"] == len(tok) - 1
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 15, 30]
    assert any("correct/sft/nll" in r for r in rows) and any("verify/rewards/accuracies" in r for r in rows)
