"""MPO end to end: single-objective policies by RL, max–min weights, the mixture evaluated; ``llmrl mix``."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.config import ConfigError
from llmrl.models import save_tiny_model
from llmrl.models.tiny import TinyModelSpec
from llmrl.preference.mpo import policy_config, train
from llmrl.tasks.base import TASKS, Task
from tests.conftest import TINY


class TwoLettersTask(Task):
    """Two conflicting objectives: the fraction of 'a' characters and the fraction of 'b' characters.
    Correct = both letters occur (what neither single-objective policy is trained to do)."""

    name = "test_ab"

    def make_sample(self, rng: random.Random) -> dict[str, Any]:
        return {"task": self.name, "prompt": f"{rng.randrange(10**6)}:", "answer": "ab"}

    def reward_functions(self):
        return {"a": lambda c, s: c.count("a") / max(len(c), 1), "b": lambda c, s: c.count("b") / max(len(c), 1)}

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return "a" in completion and "b" in completion

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return len(completion) > 0


@pytest.fixture(autouse=True)
def _ab_task(monkeypatch):
    monkeypatch.setitem(TASKS._items, "test_ab", TwoLettersTask)


def _overrides(out: Path, *extra: str) -> list[str]:
    return [*TINY, "trainer=mpo", "task.name=test_ab", "eval.samples=8", "eval.pass_k=[1,8]",
            "rollout.prompts_per_step=8", "rollout.samples_per_prompt=8", "optim.lr=1e-2", "seed=1",
            "mix.policy_steps=10", "mix.md_steps=20", "mix.md_samples=8", "mix.md_prompts=4",
            f"output_dir={out}", *extra]


@pytest.fixture(scope="module")
def mpo_run(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("mpo") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TASKS._items, "test_ab", TwoLettersTask)
        summary = train(load_config(None, _overrides(out)))
    return out, summary


def test_mpo_trains_policies_and_the_maxmin_mixture_balances_objectives(mpo_run) -> None:
    out, s = mpo_run
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert s["objectives"] == ["a", "b"] and s["weights_source"] == "maxmin"
    assert all(Path(p, "config.json").is_file() for p in s["policies"])
    lam = s["weights"]
    assert sum(lam) == pytest.approx(1.0) and all(0.3 < w < 0.7 for w in lam), lam  # symmetric objectives
    r = s["objective_rewards_sampled"]  # mean of each component over 8 samples x 16 held-out prompts
    # each RL run learned its own objective (the reference emits either letter ~1% of the time)
    assert r["a"]["policy/a"] > r["a"]["reference"] + 0.1 and r["b"]["policy/b"] > r["b"]["reference"] + 0.1
    # max-min: the mixture's worst objective beats every single policy's worst objective
    worst = {who: min(r["a"][who], r["b"][who]) for who in ("policy/a", "policy/b", "mixture")}
    assert worst["mixture"] > max(worst["policy/a"], worst["policy/b"]), r
    md = s["mirror_descent"]
    assert md["steps"] == 20 and len(md["objective"]) == 20 and md["lr"] == pytest.approx(1 / 20**0.5)
    assert set(s["eval"]) == {"reference", "policy/a", "policy/b", "mixture"}


def test_fixed_weights_on_given_policies_and_resume(mpo_run, tmp_path) -> None:
    out, s = mpo_run
    dirs = s["policies"]
    before = [Path(d, "model.safetensors").stat().st_mtime_ns for d in dirs]
    fixed = train(load_config(None, _overrides(tmp_path / "fixed", f"mix.policies=[{dirs[0]},{dirs[1]}]",
                                               "mix.weights=[1.0,0.0]", f"model.path={s['reference']}",
                                               "sft.steps=0")))
    assert fixed["weights_source"] == "fixed" and fixed["weights"] == [1.0, 0.0]
    assert fixed["objectives"] == ["a", "b"]  # names from the directories .../policies/<name>/final_model
    assert fixed["mirror_descent"] == {}
    # λ = (1, 0) is policy a itself: identical generations, identical metrics
    assert fixed["eval"]["mixture"] == fixed["eval"]["policy/a"]
    # resume: the trained policies are reused, not retrained
    again = train(load_config(None, _overrides(out)), resume=True)
    assert [Path(d, "model.safetensors").stat().st_mtime_ns for d in dirs] == before
    assert again["weights"] == s["weights"]


def test_policy_config_derives_a_single_objective_rl_run(tmp_path) -> None:
    cfg = load_config(None, _overrides(tmp_path, "task.options={target: x}", "sft.steps=5"))
    pc = policy_config(cfg, tmp_path / "ref", "b", tmp_path / "p")
    assert pc.trainer == "rl" and pc.steps == 10 and pc.sft.steps == 0 and pc.model.path == str(tmp_path / "ref")
    assert pc.task.name == "single_objective"
    assert pc.task.options == {"task": "test_ab", "component": "b", "task_options": {"target": "x"}}
    assert pc.optim.lr == cfg.optim.lr and pc.rollout == cfg.rollout


def test_single_objective_task_narrows_rewards_only() -> None:
    from llmrl.tasks import get_task

    t = get_task("single_objective", task="test_ab", component="b")
    assert list(t.reward_functions()) == ["b"] and t.reward_functions()["b"]("abb", {}) == pytest.approx(2 / 3)
    assert t.samples(3, "test", 0) == TwoLettersTask().samples(3, "test", 0)
    assert t.is_correct("ab", {}) and not t.is_correct("bb", {})
    with pytest.raises(ValueError, match="no reward component 'c'"):
        get_task("single_objective", task="test_ab", component="c")


def test_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="mix.weights: must be >= 0"):
        load_config(None, _overrides(tmp_path, "mix.weights=[-1.0,2.0]"))
    with pytest.raises(ConfigError, match="mix.weights: 3 weight"):
        load_config(None, _overrides(tmp_path, "mix.objectives=[a,b]", "mix.weights=[0.2,0.3,0.5]"))
    with pytest.raises(ConfigError, match="mix.objectives: with mix.policies, one name per policy"):
        load_config(None, _overrides(tmp_path, "mix.policies=[x,y]", "mix.objectives=[a]"))
    with pytest.raises(ConfigError, match="mix.md_lr_c"):
        load_config(None, _overrides(tmp_path, "mix.md_lr_c=0"))
    cfg = load_config(None, _overrides(tmp_path, "mix.objectives=[a,c]", "sft.steps=0"))
    with pytest.raises(ConfigError, match=r"mix.objectives: .* no reward component\(s\) \['c'\]"):
        train(cfg)


# -- llmrl mix ------------------------------------------------------------------------------------------------
SPEC = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                     max_position_embeddings=64)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mixcli")
    return {name: str(save_tiny_model(root / name, SPEC, seed=seed)) for name, seed in (("ref", 0), ("p1", 1), ("p2", 2))}


def test_mix_cli_generates_jsonl(dirs, tmp_path, capsys) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"prompt": "12+3=", "id": 7}\n')
    rc = main(["mix", "--policy", dirs["p1"], "--policy", dirs["p2"], "--weights", "0.3,0.7", "--prompt", "hi",
               "--input", str(inp), "--output", str(out), "--n", "2", "--max-new-tokens", "5", "--threads", "1"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights"] == [0.3, 0.7] and summary["generations"] == 4
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["hi", "hi", "12+3=", "12+3="] and rows[2]["id"] == 7
    assert [r["sample"] for r in rows] == [0, 1, 0, 1] and all(r["logprob"] <= 0 for r in rows)
    # greedy to stdout: deterministic
    args = ["mix", "--policy", dirs["p1"], "--policy", dirs["p2"], "--weights", "1,1", "--prompt", "ab",
            "--temperature", "0", "--max-new-tokens", "4"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and json.loads(first.splitlines()[0])["finish_reason"] in ("stop", "length")


def test_mix_cli_maxmin(dirs, capsys) -> None:
    rc = main(["mix", "--policy", dirs["p1"], "--policy", dirs["p2"], "--maxmin", "--ref", dirs["ref"],
               "--task", "arithmetic", "--option", "digits=1", "--md-steps", "3", "--md-samples", "2",
               "--md-prompts", "2", "--max-new-tokens", "4"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["weights_source"] == "maxmin" and sum(s["weights"]) == pytest.approx(1.0)
    assert all(w > 0 for w in s["weights"])


@pytest.mark.parametrize("args, message", [
    (["--weights", "0.5"], "1 weight(s) for 2 --policy directories"),
    (["--weights", "0.5,-0.5"], "finite number >= 0"),
    (["--weights", "0,0"], "must not all be 0"),
    (["--weights", "a,b"], "comma-separated numbers"),
    ([], "either --weights"),
    (["--maxmin"], "--maxmin needs --ref"),
    (["--weights", "1,1", "--temperature", "-1"], "temperature"),
])
def test_mix_cli_bad_input(dirs, capsys, args, message) -> None:
    rc = main(["mix", "--policy", dirs["p1"], "--policy", dirs["p2"], "--prompt", "x", *args])
    assert rc == 2 and message in capsys.readouterr().err


def test_mix_cli_mismatched_tokenizers(dirs, tmp_path, capsys) -> None:
    from llmrl.models import build_char_tokenizer, build_tiny_model, save_model

    tok = build_char_tokenizer()
    tok.add_tokens(["<extra>"])
    model, _ = build_tiny_model(SPEC, tok, seed=3)
    other = save_model(model, tok, tmp_path / "other")
    rc = main(["mix", "--policy", dirs["p1"], "--policy", str(other), "--weights", "1,1", "--prompt", "x"])
    assert rc == 2 and "tokenizer of" in capsys.readouterr().err
    rc = main(["mix", "--policy", dirs["p1"], "--policy", str(tmp_path / "missing"), "--weights", "1,1",
               "--prompt", "x"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
