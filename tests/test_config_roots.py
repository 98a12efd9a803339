"""One root config per trainer: recipes resolve as before, each root holds exactly its sections, keys of other
trainers and bad choices / bounds are errors that name the key."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
import yaml

from llmrl.config import Config, load_config, readers, root_for
from llmrl.core.config import ConfigError, describe, to_dict
from llmrl.trainers import TRAINERS

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# every recipe's resolved values and the defaults, recorded with the universal Config before the per-trainer roots
# (tests/data/make_config_snapshot.py)
SNAPSHOT = json.loads((ROOT / "tests" / "data" / "config_snapshot.json").read_text())

TOP = ["trainer", "seed", "output_dir", "steps", "log_every", "threads", "progress", "save_every", "save_minutes",
       "keep_checkpoints"]
RL = ["model", "task", "rollout", "reward", "ray", "logging", "algo", "optim", "eval", "sft", "critic"]
PREF = ["model", "task", "rollout", "reward", "ray", "logging", "algo", "optim", "eval", "sft", "pref"]
SECTIONS = {
    "rl": RL,
    "dvpo": [*RL, "gvm"],
    "dvpo_value": ["model", "task", "rollout", "reward", "ray", "logging", "optim", "eval", "sft", "gvm"],
    "mpo": [*RL, "mix"],
    "dpo": PREF,
    "online_dpo": [*PREF, "online"],
    "onpo": [*PREF, "online"],
    "reward_model": ["model", "task", "rollout", "reward", "ray", "logging", "optim", "eval", "sft", "rm"],
    "revise": ["model", "task", "rollout", "reward", "ray", "logging", "optim", "eval", "sft", "revise"],
    "reasoner_critic": ["model", "task", "rollout", "reward", "ray", "logging", "optim", "eval", "sft", "reflect"],
}


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_resolves_to_the_values_it_had(recipe: Path) -> None:
    before = SNAPSHOT["recipes"][recipe.stem]
    cfg = load_config(recipe)
    assert type(cfg) is root_for(before["trainer"])
    now = to_dict(cfg)
    keys = [k for k, _, _ in describe(type(cfg))]
    assert [k for k in keys if _get(now, k) != _get(before, k)] == []


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_defaults_are_the_old_defaults(trainer: str) -> None:
    root = root_for(trainer)
    now = to_dict(root())
    assert [k for k, _, _ in describe(root) if k != "trainer" and _get(now, k) != _get(SNAPSHOT["defaults"], k)] == []
    assert load_config(None, [f"trainer={trainer}"]).trainer == trainer


def test_snapshot_covers_every_recipe_and_config_is_the_rl_root() -> None:
    assert sorted(SNAPSHOT["recipes"]) == [r.stem for r in RECIPES]
    assert Config is root_for("rl") and type(load_config(None)) is Config


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_root_holds_exactly_the_sections_its_trainer_reads(trainer: str) -> None:
    assert [f.name for f in dataclasses.fields(root_for(trainer))] == TOP + SECTIONS[trainer]


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_every_field_of_every_root_is_documented(trainer: str) -> None:
    rows = describe(root_for(trainer))
    assert [k for k, _, help_ in rows if not help_] == []


def test_preference_roots_read_only_the_failure_value_of_algo() -> None:
    for trainer in ("dpo", "online_dpo", "onpo"):
        algo = get_type_hints(root_for(trainer))["algo"]
        assert [f.name for f in dataclasses.fields(algo)] == ["reward_failure_value"]
    cfg = load_config(None, ["trainer=dpo", "algo.reward_failure_value=-1"])  # a user's key still works
    assert cfg.algo.reward_failure_value == -1.0


def test_mpo_policy_config_is_an_rl_root(tmp_path: Path) -> None:
    from llmrl.preference.mpo import policy_config

    cfg = load_config(None, ["trainer=mpo", "algo.kl_coef=0.01", "critic.lr=1e-4", "mix.objectives=[a, b]"])
    pc = policy_config(cfg, tmp_path / "ref", "a", tmp_path / "p")
    assert type(pc) is root_for("rl") and pc.trainer == "rl" and not hasattr(pc, "mix")
    assert pc.algo == cfg.algo and pc.critic == cfg.critic


def test_config_yaml_of_a_run_holds_only_its_roots_keys(tmp_path: Path) -> None:
    from llmrl.train.rundir import prepare_output

    for trainer in TRAINERS:
        cfg = load_config(None, [f"trainer={trainer}", f"output_dir={tmp_path / trainer}"])
        out = prepare_output(cfg)
        saved = yaml.safe_load((out / "config.yaml").read_text())
        assert list(saved) == TOP + SECTIONS[trainer]
        assert load_config(out / "config.yaml") == cfg  # a run's config.yaml loads back to the same root


def test_llmrl_config_prints_the_keys_of_one_trainer(capsys) -> None:
    from llmrl.cli.main import main

    assert main(["config"]) == 0
    rl = capsys.readouterr().out
    assert "algo.kl_coef" in rl and "critic.lr" in rl and "pref.beta" not in rl and "gvm.steps" not in rl
    assert main(["config", "trainer=dpo"]) == 0
    dpo = capsys.readouterr().out
    assert dpo.startswith("trainer ") and "'dpo'" in dpo.splitlines()[0]
    assert "pref.beta" in dpo and "algo.reward_failure_value" in dpo and "algo.kl_coef" not in dpo
    assert main(["config", str(ROOT / "recipes" / "dpo.yaml")]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == TOP + SECTIONS["dpo"]


# -- errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["pref.beta=0.5"], r"pref\.beta is read by trainer dpo/online_dpo/onpo, not rl"),
    (["gvm.steps=3"], r"gvm\.steps is read by trainer dvpo/dvpo_value, not rl"),
    (["mix.md_steps=3"], r"mix\.md_steps is read by trainer mpo, not rl"),
    (["trainer=dpo", "algo.kl_coef=0.1"], r"algo\.kl_coef is read by trainer rl/dvpo/mpo, not dpo"),
    (["trainer=dpo", "critic.lr=0.1"], r"critic\.lr is read by trainer rl/dvpo/mpo, not dpo"),
    (["trainer=reward_model", "online.eta=2"], r"online\.eta is read by trainer online_dpo/onpo, not reward_model"),
    (["trainer=dvpo_value", "algo.advantage=gae"], r"algo\.advantage is read by trainer rl/dvpo/mpo, not dvpo_value"),
])
def test_key_of_another_trainer_names_the_trainers_that_read_it(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_other_trainers_key_in_a_recipe_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("trainer: dpo\nsteps: 3\nalgo:\n  kl_coef: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: algo.kl_coef is read by trainer rl/dvpo/mpo, not dpo")
    assert readers("pref") == ["dpo", "online_dpo", "onpo"] and readers("nope") == []


def test_unknown_keys_and_trainers_still_name_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'pref\.betta'; did you mean 'beta'"):
        load_config(None, ["trainer=dpo", "pref.betta=0.5"])
    with pytest.raises(ConfigError, match=r"unknown config key 'critic\.lrr'; did you mean 'lr'"):
        load_config(None, ["critic.lrr=0.5"])
    with pytest.raises(ConfigError, match=r"trainer: unknown trainer 'dpoo'; did you mean 'dpo'"):
        load_config(None, ["trainer=dpoo"])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.backend=sglang"], r"rollout\.backend: must be one of \['kvcache', 'hf', 'vllm'\], got 'sglang'"),
    (["algo.loss_agg=mean"], r"algo\.loss_agg: must be one of \['token-mean', "),
    (["algo.kl_estimator=k4"], r"algo\.kl_estimator: must be one of \['k1', 'k2', 'k3'\]"),
    (["optim.schedule=linear"], r"optim\.schedule: must be one of \['constant', 'cosine'\]"),
    (["model.tiny.arch=gpt2"], r"model\.tiny\.arch: must be one of \['llama', 'qwen2'\]"),
    (["sft.noise=1.5"], r"sft\.noise: must be in \[0, 1\], got 1\.5"),
    (["rollout.samples_per_prompt=0"], r"rollout\.samples_per_prompt: must be >= 1, got 0"),
    (["steps=-1"], r"^steps: must be >= 0, got -1"),
    (["algo.minibatches=0"], r"algo\.minibatches: must be >= 1"),
    (["critic.lr=0"], r"critic\.lr: must be > 0, got 0\.0"),
    (["trainer=reward_model", "rm.privacy.delta=1"], r"rm\.privacy\.delta: must be in \(0, 1\), got 1\.0"),
    (["trainer=reward_model", "rm.distill.label=oracle"], r"rm\.distill\.label: must be one of \['vote', 'judge'\]"),
    (["trainer=onpo", "online.bottom_frac=0"], r"online\.bottom_frac: must be in \(0, 0\.5\], got 0\.0"),
    (["trainer=online_dpo", "online.similarity=cosine"], r"online\.similarity: must be one of \['ratio', 'ngram'\]"),
    (["trainer=dvpo_value", "gvm.gamma=2"], r"gvm\.gamma: must be in \[0, 1\], got 2\.0"),
    (["trainer=mpo", "mix.md_steps=0"], r"mix\.md_steps: must be >= 1, got 0"),
    (["trainer=dpo", "pref.on_error=ignore"], r"pref\.on_error: must be one of \['raise', 'skip'\], got 'ignore'"),
])
def test_choices_and_bounds_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_choices_and_bounds_are_checked_on_a_root_built_in_code() -> None:
    from llmrl.train.config import RolloutConfig, SFTConfig

    with pytest.raises(ConfigError, match=r"rollout\.backend: must be one of"):
        Config(rollout=RolloutConfig(backend="sglang")).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sft\.rejection_k: must be >= 1, got 0"):
        Config(sft=SFTConfig(rejection_k=0)).validate()
    Config().validate()


def test_declared_choices_match_the_code_that_reads_them() -> None:
    from llmrl.algos import AGG_MODES
    from llmrl.models.tiny import TinyModelSpec
    from llmrl.preference.config import OnlineConfig, RMDistillConfig
    from llmrl.rewards.judge import CATEGORY_INSTRUCTIONS
    from llmrl.rl.config import AlgoConfig
    from llmrl.train.config import TinyModelConfig

    assert get_args(get_type_hints(AlgoConfig)["loss_agg"]) == AGG_MODES
    assert get_args(get_type_hints(TinyModelConfig)["arch"]) == get_args(get_type_hints(TinyModelSpec)["arch"])
    for cls in (OnlineConfig, RMDistillConfig):
        assert set(get_args(get_type_hints(cls)["judge_category"])) == set(CATEGORY_INSTRUCTIONS)


def test_registry_is_cheap_to_import() -> None:
    code = ("import sys; from llmrl.cli.main import main; from llmrl.trainers import TRAINERS\n"
            "assert main(['tasks', 'list']) == 0; [t.root_class() for t in TRAINERS.values()]\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
