"""Typed config: YAML recipes, dotted overrides, clear errors."""

import pytest

from llmrl.config import Config, load_config
from llmrl.core.config import ConfigError, describe


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_recipe_and_dotted_overrides(tmp_path):
    p = write(tmp_path, "steps: 7\nalgo:\n  advantage: grpo\n  loss_options: {eps_high: 0.28}\n")
    cfg = load_config(p, ["algo.advantage=rloo", "rollout.temperature=0.7", 'rollout.stop=["\\n"]'])
    assert cfg.steps == 7 and cfg.algo.advantage == "rloo"
    assert cfg.rollout.temperature == 0.7 and cfg.rollout.stop == ["\n"]
    assert cfg.algo.loss_options == {"eps_high": 0.28}
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)  # int accepted for a float field


def test_unknown_key_names_key_and_closest(tmp_path):
    p = write(tmp_path, "algo:\n  advantge: grpo\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "algo.advantge" in msg and "'advantage'" in msg and str(p) in msg
    with pytest.raises(ConfigError, match=r"rollout\.temprature.*'temperature'"):
        load_config(None, ["rollout.temprature=0.5"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "steps: 3\nalgo:\n  advantage: [grpo\n  loss: ppo_clip\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:" in str(e.value) and "malformed YAML" in str(e.value)
    line = int(str(e.value).split(f"{p}:")[1].split(":")[0])
    assert 3 <= line <= 5


def test_type_errors_and_bad_names(tmp_path):
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(None, ["steps=abc"])
    with pytest.raises(ConfigError, match="algo.advantage"):
        load_config(None, ["algo.advantage=grpoo"])
    with pytest.raises(ValueError, match="eps_hgh"):
        load_config(None, ["algo.loss_options={eps_hgh: 0.3}"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["steps"])


def test_every_field_documented():
    rows = describe(Config)
    assert len(rows) > 50
    assert all(help_ for _, _, help_ in rows), [k for k, _, h in rows if not h]


def test_shipped_recipes_load():
    from pathlib import Path

    recipes = sorted(Path(__file__).parent.parent.glob("recipes/*.yaml"))
    assert recipes
    for r in recipes:
        load_config(r)
