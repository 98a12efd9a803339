"""The offline preference trainer (``trainer: dpo``): learning on arithmetic, resume == uninterrupted,
gradient accumulation, reference scoring modes, pairs from files (chat prompts), reference-free SimPO, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.preference import dpo
from llmrl.tasks.preference import PreferencePair, write_preference_pairs
from llmrl.train.metrics import read_metrics
from tests.conftest import TINY

SMALL = [*TINY, "trainer=dpo", "task.name=arithmetic", "seed=3", "sft.steps=5", "sft.batch_size=8",
         "pref.batch_size=8", "pref.pairs_from_task=24", "pref.eval_pairs=8", "pref.max_length=16",
         "pref.max_prompt_length=8", "optim.lr=1e-3"]


def cfg_for(out: Path, *extra: str):
    return load_config(None, [*SMALL, f"output_dir={out}", *extra])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final_model" / "model.safetensors"))


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


# Acceptance: 1-digit sums of three numbers ("3+5+7="; ~900 training and 90 held-out prompts), a tiny model
# warm-started by SFT on demonstrations of which half come from the sloppy teacher (carries dropped), then
# offline preference training on pairs built from the task (chosen = the correct sum, rejected = the
# teacher's carry-free sum, or another prompt's answer where the teacher is right).
ACCEPT = ["trainer=dpo", "seed=0", "threads=1", "progress=false", "log_every=0",
          "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
          "model.tiny.intermediate_size=256", "model.tiny.max_position_embeddings=16",
          "task.name=arithmetic", "task.options={digits: 1, num_operands: 3, ops: ['+'], style: plain}",
          "task.train_size=900", "task.test_size=90", "rollout.max_new_tokens=5",
          "sft.steps=300", "sft.batch_size=64", "sft.lr=3e-3", "sft.schedule=constant", "sft.warmup_steps=20",
          "sft.noise=0.5", "sft.num_examples=900", "eval.every=0", "eval.samples=0", "eval.pass_k=[]",
          "pref.batch_size=32", "pref.max_length=16", "pref.max_prompt_length=8", "pref.pairs_from_task=900",
          "pref.eval_pairs=200", "optim.lr=3e-4", "steps=60"]


def test_offline_preference_training_raises_heldout_accuracy(tmp_path: Path) -> None:
    """Seed 0 (measured): greedy accuracy on the 90 held-out prompts 0.500 after SFT; then 60 steps of
    DPO-Positive 0.656, DPO + RPO (alpha 1) 0.844, plain DPO 0.622. Seeds 1-3 (docs/preference.md) gain more
    with dpop/rpo; plain DPO gains least and least reliably (it lowers the chosen answers' likelihood too)."""
    first = tmp_path / "dpop"
    s = dpo.train(load_config(None, [*ACCEPT, f"output_dir={first}", "pref.loss_type=dpop"]))
    before = s["accuracy_before"]
    assert s["accuracy_after"] >= before + 0.1, s
    assert s["after"]["pairs/logp_accuracy"] >= 0.9 > s["before"]["pairs/logp_accuracy"]
    same_start = [f"model.path={first / 'sft_model'}", "sft.steps=0"]  # the same SFT model, loaded back
    r = dpo.train(load_config(None, [*ACCEPT, *same_start, f"output_dir={tmp_path / 'rpo'}", "pref.rpo_alpha=1.0"]))
    assert r["accuracy_before"] == before
    assert r["accuracy_after"] >= before + 0.25, r
    d = dpo.train(load_config(None, [*ACCEPT, *same_start, f"output_dir={tmp_path / 'dpo'}"]))
    assert d["accuracy_after"] >= before + 0.05, d
    assert d["after"]["pairs/logp_accuracy"] >= d["before"]["pairs/logp_accuracy"] + 0.1, d
    assert d["after"]["pairs/rewards/accuracies"] >= 0.9


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("drop_cache", [False, True], ids=["ref-cache", "ref-recomputed"])
def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop_cache: bool) -> None:
    # 6 steps of 8 pairs over ~12 pairs: batches straddle epochs; micro-batches of 3; RPO term; cosine schedule
    extra = ["steps=6", "save_every=1", "eval.every=2", "pref.micro_batch_size=3", "pref.rpo_alpha=0.5",
             "optim.schedule=cosine", "optim.warmup_steps=2"]
    a, b = tmp_path / "a", tmp_path / "b"
    dpo.train(cfg_for(a, *extra))

    real_save = dpo.save_checkpoint

    def save_then_stop(root, step, *args, **kw):
        path = real_save(root, step, *args, **kw)
        if step == 3:
            raise Interrupted
        return path

    monkeypatch.setattr(dpo, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        dpo.train(cfg_for(b, *extra))
    monkeypatch.setattr(dpo, "save_checkpoint", real_save)
    assert (b / "ref_logps.pt").is_file() and not (b / "final_model").exists()
    if drop_cache:  # the reference is then re-scored by the rebuilt starting (SFT) policy
        (b / "ref_logps.pt").unlink()
    dpo.train(cfg_for(b, *extra), resume=True)

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
    ma, mb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["step"] for r in ma if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in ma if r["kind"] == "eval"] == [0, 2, 4, 6]
    assert strip_times(ma) == strip_times(mb)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["accuracy_before"] == sb["accuracy_before"] and sa["pairs"] == sb["pairs"]


def test_gradient_accumulation_matches_one_batch(tmp_path: Path) -> None:
    """pair_step's gradient is the same whether the 8 pairs go through in one forward or in micro-batches."""
    cfg = cfg_for(tmp_path / "r", "pref.rpo_alpha=0.3", "pref.loss_type=ipo")
    run = dpo.build_run(cfg, False)
    train, _, _ = dpo.load_pairs(cfg, run)
    batch = dpo.encode_pairs(run.tokenizer, train[:8], max_length=16, max_prompt_length=8)
    ref = dpo.score_pairs(run.model, batch) + torch.linspace(-1, 1, 16).view(8, 2)  # policy != reference
    objective = dpo.PairObjective.from_config(cfg)
    assert objective.average  # ipo averages log-probs by default (as TRL)
    grads = []
    for micro in (0, 1, 3):
        opt = torch.optim.SGD(run.model.parameters(), lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        ok, metrics = dpo.pair_step(run.model, opt, sched, batch, ref, objective, micro, grad_clip=0.0)
        assert ok and metrics["loss"] > 0
        grads.append(torch.cat([p.grad.flatten() for p in run.model.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], atol=1e-6, rtol=1e-5)


def test_reference_copy_matches_precomputed_reference(tmp_path: Path) -> None:
    """precompute_ref_logps=false (a frozen copy scores each batch) trains like the precomputed reference."""
    runs = {}
    for pre in (True, False):
        out = tmp_path / str(pre)
        dpo.train(cfg_for(out, "steps=3", f"pref.precompute_ref_logps={str(pre).lower()}", "eval.size=4"))
        runs[pre] = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
        assert (out / "ref_logps.pt").is_file() == pre
    for r1, r2 in zip(runs[True], runs[False]):
        for key in ("loss", "rewards/margins", "rewards/chosen"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-5), key


def test_pairs_from_files_with_chat_prompts_epochs_and_simpo(tmp_path: Path) -> None:
    conv = [{"role": "user", "content": "say hi"}]
    pairs = [PreferencePair(conv, "hi", "go away"), PreferencePair("2+2=", "4", "5"),
             PreferencePair([{"role": "user", "content": "name?"}], "tiny", "no"),
             PreferencePair("sky?", "blue", "green, obviously and forever"), PreferencePair("x", "y", "z")]
    write_preference_pairs(tmp_path / "train.jsonl", pairs)
    write_preference_pairs(tmp_path / "test.jsonl", pairs[:2])
    out = tmp_path / "run"
    rc = main(["train", str(_recipe(tmp_path)), *SMALL, f"output_dir={out}", f"pref.train_file={tmp_path / 'train.jsonl'}",
               f"pref.test_file={tmp_path / 'test.jsonl'}", "pref.epochs=2", "pref.batch_size=2", "eval.size=0",
               "pref.loss_type=simpo", "pref.beta=2.0", "pref.max_length=32", "pref.max_prompt_length=24"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 5 and s["pairs"]["train"] == 5 and s["pairs"]["eval"] == 2  # ceil(2 * 5 / 2)
    # only "green, obviously and forever" (28 chars + EOS) is cut, to 32 - len("sky?") = 28 tokens; the chat
    # prompt "user: say hi\nassistant: " (24 tokens) fits max_prompt_length exactly
    assert s["pairs"]["train_truncated"] == 1
    assert s["accuracy_before"] is None  # eval.size=0: no task evaluation, only the held-out pairs
    assert s["after"]["pairs/loss"] < s["before"]["pairs/loss"]
    assert not (out / "ref_logps.pt").exists()  # simpo is reference-free


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("trainer: dpo\n")
    return path


def test_lora_reference_is_the_policy_with_adapters_off(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    s = dpo.train(cfg_for(out, "steps=3", "model.lora.enabled=true", "model.lora.r=4", "optim.lr=1e-2",
                          "pref.precompute_ref_logps=false", "eval.size=4"))
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert train[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference
    assert abs(train[-1]["rewards/margins"]) > 1e-4  # the adapters moved the policy away from it
    assert (out / "final_model" / "config.json").is_file() and s["steps"] == 3


def test_task_pairs_cover_every_prompt_the_teacher_gets_right_too() -> None:
    from llmrl.tasks import get_task

    task = get_task("arithmetic", digits=2, ops=["+"])
    samples = [{"prompt": "47+38=", "answer": "85", "operands": [47, 38], "ops": ["+"]},  # carry: sloppy 75
               {"prompt": "23+6=", "answer": "29", "operands": [23, 6], "ops": ["+"]},  # no carry: sloppy = 29
               {"prompt": "10+10=", "answer": "20", "operands": [10, 10], "ops": ["+"]}]
    pairs, skipped = dpo.task_pairs(task, samples, seed=0)
    assert skipped == 0 and [p.chosen for p in pairs] == ["85", "29", "20"]
    assert pairs[0].rejected == "75"  # the sloppy teacher's answer
    # the teacher is right on the others: rejected = another prompt's answer, never a correct one
    assert pairs[1].rejected in ("85", "20") and pairs[2].rejected in ("85", "29")
    assert all(p.meta["answer"] == s["answer"] for p, s in zip(pairs, samples))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="pref.loss_type"):
        load_config(None, ["trainer=dpo", "pref.loss_type=kto"])
    with pytest.raises(ConfigError, match="pref.loss_options: .*unknown option 'gamma'"):
        load_config(None, ["trainer=dpo", "pref.loss_options={gamma: 1.0}"])
    with pytest.raises(ConfigError, match="pref.max_prompt_length"):
        load_config(None, ["trainer=dpo", "pref.max_prompt_length=512", "pref.max_length=512"])
    with pytest.raises(ConfigError, match="pref.rejected_source"):
        load_config(None, ["trainer=dpo", "pref.rejected_source=oracle"])
