"""A broken model directory or an out-of-range config value is one line on stderr (``llmrl: error: ...``, exit 2)
naming the file, tensor or key: never a traceback (exit 1) or a misleading hint."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file, save_file

from llmrl.cli.main import main
from llmrl.config import Config, load_config
from llmrl.core.errors import ConfigError, ModelLoadError
from llmrl.models import TinyModelSpec, load_model, load_tokenizer, save_tiny_model
from llmrl.models.loading import check_finite, check_safetensors, first_non_finite
from llmrl.models.value_head import HEAD_WEIGHTS, load_scalar_model, scalar_model_from_policy
from llmrl.train.config import OptimConfig

SMALL = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
BAD_TENSOR = "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", spec=SMALL)


@pytest.fixture
def model_dir(tiny_dir: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny model directory for a test to break."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "model"))


def train_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    """``llmrl train`` on a one-step tiny recipe: (exit code, the one stderr line; fails if there are more)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 1\n")
    code = main(["train", str(recipe), *TINY, f"output_dir={tmp_path / 'run'}", *overrides])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("llmrl: error: ") and "Traceback" not in lines[0]
    return code, lines[0].removeprefix("llmrl: error: ")


def _set(f: Path, offset: int, data: bytes) -> None:
    with f.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


# -- (a) corrupted model.safetensors ---------------------------------------------------------------------------
def test_truncated_safetensors_names_the_file(model_dir: Path, tmp_path: Path, capsys) -> None:
    f = model_dir / "model.safetensors"
    size, n = f.stat().st_size, struct.unpack("<Q", f.read_bytes()[:8])[0]
    os.truncate(f, size - 1000)  # the data of the last tensors is gone
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    data = size - 8 - n
    assert code == 2 and err == (f"{f}: truncated safetensors file (the header describes {data} bytes of tensor "
                                 f"data, the file holds {data - 1000})")
    os.truncate(f, 5)  # not even the header length is left
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    assert code == 2 and err.startswith(f"{f}: corrupted safetensors file") and "only 5 bytes" in err


def test_overwritten_header_bytes_name_the_file(model_dir: Path, tmp_path: Path, capsys) -> None:
    f = model_dir / "model.safetensors"
    _set(f, 10, b"\x00garbage!!")  # inside the JSON header
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    assert code == 2 and err.startswith(f"{f}: corrupted safetensors file (header is not valid JSON")
    _set(f, 0, struct.pack("<Q", 1 << 40))  # the header length field itself
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    assert code == 2 and err.startswith(f"{f}: corrupted safetensors file (truncated or overwritten header")


def test_header_entry_that_does_not_match_its_bytes(model_dir: Path) -> None:
    f = model_dir / "model.safetensors"
    n = struct.unpack("<Q", f.read_bytes()[:8])[0]
    header = f.read_bytes()[8 : 8 + n]
    shape = b'"shape":[64,32]'
    assert shape in header
    _set(f, 8 + header.index(shape), b'"shape":[64,31]')  # same length, a size that no longer matches the bytes
    with pytest.raises(ModelLoadError, match=r"corrupted safetensors file \(tensor '.+': 8192 bytes for shape"):
        check_safetensors(f)


def test_sharded_index_naming_a_missing_shard(model_dir: Path) -> None:
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    keys = list(load_file(str(model_dir / "model-00001-of-00002.safetensors")))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys[1:]}
    weight_map[keys[0]] = "model-00002-of-00002.safetensors"
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelLoadError, match=r"index\.json: names shard file\(s\) that are missing: "
                                             r"model-00002-of-00002\.safetensors$"):
        load_model(model_dir)


# -- (b) non-finite weights ------------------------------------------------------------------------------------
def _poison(f: Path, name: str, *values: float) -> None:
    state = load_file(str(f))
    flat = state[name].view(-1)
    for i, v in enumerate(values):
        flat[7 * i + 3] = v
    save_file(state, str(f), metadata={"format": "pt"})


def test_nan_weight_names_the_file_tensor_and_count(model_dir: Path, tmp_path: Path, capsys) -> None:
    f = model_dir / "model.safetensors"
    _poison(f, BAD_TENSOR, math.nan)
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    assert code == 2
    assert err == (f"{f}: tensor '{BAD_TENSOR}' has 1 non-finite value(s) (NaN/inf) of {64 * 32}; "
                   "the weights are unusable")
    _poison(f, "model.embed_tokens.weight", math.inf, -math.inf, math.nan)  # the first tensor with one is named
    with pytest.raises(ModelLoadError, match=r"tensor 'model\.embed_tokens\.weight' has 3 non-finite"):
        load_model(model_dir)


def test_weights_beyond_float16_name_the_dtype(model_dir: Path) -> None:
    f = model_dir / "model.safetensors"
    _poison(f, BAD_TENSOR, 1e6)  # finite in float32, inf in float16
    assert load_model(model_dir).model.layers[1].mlp.up_proj.weight.abs().max() == 1e6
    with pytest.raises(ModelLoadError, match=r"has 1 non-finite .* overflow float16: .* model\.dtype=bfloat16"):
        load_model(model_dir, dtype="float16")


def test_first_non_finite_counts_exactly_and_ignores_integer_tensors() -> None:
    big = torch.full((4,), 3e38)  # its float32 sum overflows, yet every value is finite
    nan = torch.zeros(5)
    nan[[1, 4]] = math.nan
    ints = torch.zeros(3, dtype=torch.long)
    assert first_non_finite([("big", big), ("ints", ints)]) is None
    assert first_non_finite([("big", big), ("a", torch.ones(2, dtype=torch.bfloat16)), ("nan", nan)]) == ("nan", 2, 5)


def test_computed_buffers_may_hold_inf_stored_ones_may_not(tmp_path: Path) -> None:
    m = torch.nn.Linear(2, 2)
    m.register_buffer("mask", torch.tensor([-math.inf]), persistent=False)  # a causal mask, not a weight
    check_finite(m, tmp_path, {})
    with pytest.raises(ModelLoadError, match=r"^w\.safetensors: tensor 'mask' has 1 non-finite value\(s\)"):
        check_finite(m, tmp_path, {"mask": Path("w.safetensors")})
    m.weight.data[0, 0] = math.nan  # a weight with no known file: the directory is named
    with pytest.raises(ModelLoadError, match=rf"^model directory '{tmp_path}': tensor 'weight' has 1 non-finite"):
        check_finite(m, tmp_path, {})


def test_value_head_loader_checks_the_head_file(tmp_path: Path, tiny_dir: Path) -> None:
    policy = load_model(tiny_dir)
    rm = tmp_path / "rm"
    scalar_model_from_policy(policy, seed=0).save(rm, load_tokenizer(tiny_dir))
    head = rm / HEAD_WEIGHTS
    _poison(head, "weight", math.nan)
    with pytest.raises(ModelLoadError, match=rf"^{head}: tensor 'head\.weight' has 1 non-finite"):
        load_scalar_model(rm)
    os.truncate(head, head.stat().st_size - 4)
    with pytest.raises(ModelLoadError, match=rf"^{head}: truncated safetensors file"):
        load_scalar_model(rm)
    shutil.copy(tiny_dir / "model.safetensors", rm / "model.safetensors")  # a causal LM's names, same weights
    head.unlink()
    _poison(rm / "model.safetensors", BAD_TENSOR, math.nan)
    with pytest.raises(ModelLoadError, match=rf"model\.safetensors: tensor '{BAD_TENSOR}' has 1 non-finite"):
        load_scalar_model(rm)  # the backbone's name is found under the causal LM's prefix


# -- (d) empty / incomplete directories ------------------------------------------------------------------------
def test_empty_directory_says_what_a_model_directory_holds(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = train_cli(tmp_path, capsys, f"model.path={empty}")
    assert code == 2 and err.startswith(f"model directory '{empty}' is empty") and "config.json" in err
    assert "sentencepiece" not in err and "tiktoken" not in err


def test_missing_tokenizer_weights_or_config_name_the_expected_files(model_dir: Path, tmp_path: Path,
                                                                     capsys) -> None:
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / f).unlink()
    code, err = train_cli(tmp_path, capsys, f"model.path={model_dir}")
    assert code == 2 and err.startswith(f"model directory '{model_dir}' has no tokenizer files (expected "
                                        "tokenizer.json")
    (model_dir / "model.safetensors").rename(model_dir / "weights.bak")
    with pytest.raises(ModelLoadError, match=r"has no weights file \(expected model\.safetensors, "):
        load_model(model_dir)
    (model_dir / "config.json").write_text('{"model_type": "llama",\n')
    with pytest.raises(ModelLoadError, match=rf"^{model_dir / 'config.json'}: not valid JSON \(line 2"):
        load_model(model_dir)
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_model(model_dir)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_weights_file(model_dir: Path) -> None:
    f = model_dir / "model.safetensors"
    f.chmod(0)
    try:
        with pytest.raises(ModelLoadError, match=rf"^{f}: cannot read it: .*Permission denied"):
            load_model(model_dir)
    finally:
        f.chmod(0o644)


# -- (c) config values out of range ----------------------------------------------------------------------------
def test_negative_learning_rate_is_one_line_naming_the_key(tmp_path: Path, capsys) -> None:
    code, err = train_cli(tmp_path, capsys, "optim.lr=-0.001")  # load_config names the recipe too
    assert (code, err) == (2, f"{tmp_path / 'r.yaml'}: optim.lr: must be > 0, got -0.001")


@pytest.mark.parametrize("override, message", [
    ("sft.lr=0", "sft.lr: must be > 0, got 0.0"),
    ("optim.betas=[0.9, 1.0]", "optim.betas[1]: must be in [0, 1), got 1.0"),
    ("optim.weight_decay=-0.01", "optim.weight_decay: must be >= 0, got -0.01"),
    ("optim.eps=0", "optim.eps: must be > 0, got 0.0"),
    ("rollout.top_p=1.5", "rollout.top_p: must be in (0, 1], got 1.5"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens: must be >= 1, got 0"),
    ("rollout.temperature=-1", "rollout.temperature: must be >= 0, got -1.0"),
    ("optim.max_bad_steps=0", "optim.max_bad_steps: must be >= 1, got 0"),
    ("model.lora.dropout=1", "model.lora.dropout: must be in [0, 1), got 1.0"),
    ("eval.pass_k=[1, 0]", "eval.pass_k[1]: must be >= 1, got 0"),
    ("algo.kl_coef=-0.1", "algo.kl_coef: must be >= 0, got -0.1"),
    ("optim.lr=.nan", "optim.lr: must be > 0, got nan"),
])
def test_out_of_range_values_name_the_key(override: str, message: str, tmp_path: Path, capsys) -> None:
    assert train_cli(tmp_path, capsys, override) == (2, f"{tmp_path / 'r.yaml'}: {message}")


def test_temperature_zero_is_greedy_sampling_but_not_rl(tmp_path: Path, capsys) -> None:
    code, err = train_cli(tmp_path, capsys, "rollout.temperature=0")
    assert code == 2 and err.startswith("rollout.temperature: must be > 0 for RL") and err.endswith("got 0.0")
    assert load_config(None, ["trainer=dpo", "rollout.temperature=0"]).rollout.temperature == 0.0
    assert load_config(None, ["eval.temperature=0"]).eval.temperature == 0.0


def test_list_bounds_are_checked_on_a_config_built_in_code() -> None:
    with pytest.raises(ConfigError, match=r"^optim\.betas\[0\]: must be in \[0, 1\), got -0\.1$"):
        Config(optim=OptimConfig(betas=[-0.1, 0.999])).validate()
    Config(optim=OptimConfig(betas=[0.0, 0.5])).validate()
