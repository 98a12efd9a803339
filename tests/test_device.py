"""``model.device`` / ``reference_device`` / ``gradient_checkpointing``, the attention choice and the float32
log-probs of half-precision models. The CPU tests run everywhere; the ``gpu`` ones need CUDA
(``pytest -m gpu tests/test_device.py``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY

from llmrl.cli.main import main
from llmrl.config import load_config
from llmrl.core.errors import ConfigError
from llmrl.core.ops import token_logprobs
from llmrl.core.types import Batch, Episode
from llmrl.models.device import (
    attention_implementation,
    enable_gradient_checkpointing,
    module_device,
    resolve_device,
)
from llmrl.models.loading import from_pretrained, load_model, reference_model
from llmrl.models.tiny import TinyModelSpec, build_char_tokenizer, build_tiny_model, save_tiny_model
from llmrl.rollout.base import SamplingParams
from llmrl.rollout.sampler import KVCacheSampler
from llmrl.train.update import LossSpec, minibatch_loss, policy_logprobs

CUDA = torch.cuda.is_available()

RECIPE = """trainer: rl
task: {name: test_char_a}
algo: {advantage: grpo, kl_coef: 0.05, loss_agg: token-mean, entropy_coef: 0.01}
optim: {lr: 1.0e-3}
"""
RUN = [*TINY, "steps=2", "save_every=0", "save_minutes=0", "logging.tensorboard=false"]


def _recipe(tmp_path: Path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return str(path)


def _metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the timings (the only values that may differ between identical runs)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _train(tmp_path: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    assert main(["train", _recipe(tmp_path), *RUN, f"output_dir={out}", *overrides]) == 0
    return out


def _one_line_error(capsys) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1, err
    return err[0]


def tiny(seed: int = 0) -> tuple[torch.nn.Module, object]:
    return build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                          intermediate_size=64), build_char_tokenizer(), seed=seed)


def rl_batch(n: int = 6) -> Batch:
    """A batch with advantages, sampler and reference log-probs: what one RL minibatch carries."""
    g = torch.Generator().manual_seed(0)
    eps = []
    for i in range(n):
        p = torch.randint(4, 90, (3 + i % 4,), generator=g).tolist()
        c = torch.randint(4, 90, (2 + (i * 3) % 5,), generator=g).tolist()
        eps.append(Episode.single_turn(p, c, (-4.0 - torch.rand(len(c), generator=g)).tolist(),
                                       {"prompt": "", "answer": ""}, reward=float(i % 2), group_id=i // 3))
    batch = Batch.collate(eps, 0)
    batch.advantages = (torch.arange(n, dtype=torch.float32)[:, None] - n / 2) * batch.mask
    batch.ref_logprobs = (batch.old_logprobs - 0.1) * batch.mask
    return batch


SPEC = LossSpec("ppo_clip", {}, "token-mean", None, 0.9, kl_coef=0.05, entropy_coef=0.01)


# ------------------------------------------------------------------------------------- device: the setting
def test_cpu_and_auto_give_exactly_the_run_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto -> cpu even on a GPU machine
    base = _metrics(_train(tmp_path, "default"))
    train = [r for r in base if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["grad_norm"] > 0 for r in train) and train[1]["kl"] > 0
    assert _metrics(_train(tmp_path, "cpu", "model.device=cpu")) == base
    assert _metrics(_train(tmp_path, "auto", "model.device=auto")) == base
    assert _metrics(_train(tmp_path, "ref_cpu", "model.reference_device=cpu")) == base
    final = [(tmp_path / d / "final_model" / "model.safetensors").read_bytes() for d in ("default", "cpu", "auto")]
    assert final[0] == final[1] == final[2]


@pytest.mark.parametrize(("key", "value"), [("model.device", "cuda"), ("model.device", "cuda:1"),
                                            ("model.reference_device", "cuda")])
def test_cuda_without_cuda_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, key, value):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", _recipe(tmp_path), *RUN, f"output_dir={out}", f"{key}={value}"]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("llmrl: error:") and key in line and "CUDA is not available" in line, line
    assert not out.exists()


def test_missing_gpu_index_names_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"^model.device: cuda:2 requested but this machine has 2 CUDA"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:x", "cuda:-1", "cuda0", "mps", "cuda:", 3])
def test_misspelt_devices_are_refused_when_the_config_is_read(bad):
    for key in ("device", "reference_device"):
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"model.{key}={bad}"])
        msg = str(err.value)
        assert msg.startswith(f"model.{key}: ") and "\n" not in msg, msg
        if isinstance(bad, str) and not bad.endswith(":"):  # YAML reads "cuda:" / 3 as a mapping / a number
            assert f"must be one of auto, cpu, cuda or cuda:N, got {bad!r}" in msg, msg
        with pytest.raises(ConfigError, match=rf"^model\.{key}: "):
            resolve_device(bad, f"model.{key}")  # type: ignore[arg-type]


def test_a_gpu_recipe_reads_on_a_cpu_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(None, ["model.device=cuda:0", "model.reference_device=cpu", "model.gradient_checkpointing=true"])
    assert (cfg.model.device, cfg.model.reference_device, cfg.model.gradient_checkpointing) == ("cuda:0", "cpu", True)
    assert main(["config", _recipe(tmp_path), "model.device=cuda"]) == 0
    assert "device" in capsys.readouterr().out


# ------------------------------------------------------------------------------ placement helpers (CPU)
def test_batch_to_its_own_device_is_the_batch_itself():
    batch = rl_batch()
    assert batch.to("cpu") is batch and batch.to(torch.device("cpu")) is batch


def test_reference_copy_onto_a_device_keeps_ties_and_shares_nothing():
    model, _ = tiny()
    ref = reference_model(model, "cpu")
    assert ref.lm_head.weight is ref.model.embed_tokens.weight  # tied weights stay tied
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr() and not q.requires_grad, name
    assert not ref.training and module_device(ref) == torch.device("cpu")


def test_attention_choice(monkeypatch, tmp_path):
    assert attention_implementation("cpu", torch.bfloat16) == "sdpa"
    assert attention_implementation("cuda", torch.float32) == "sdpa"  # flash-attention takes only half precision
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert attention_implementation("cuda:0", torch.bfloat16) == "sdpa"
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "flash_attn" else None)
    assert attention_implementation("cuda:0", torch.bfloat16) == "flash_attention_2"
    assert attention_implementation("cpu", torch.bfloat16) == "sdpa"
    monkeypatch.undo()
    model = load_model(save_tiny_model(tmp_path / "m", TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2,
                                                                     num_kv_heads=2, intermediate_size=64)))
    assert model.config._attn_implementation == "sdpa"

    class NoSdpa:  # an architecture without the requested attention: transformers' default instead
        calls: list[dict] = []

        @classmethod
        def from_pretrained(cls, path, **kw):
            cls.calls.append(kw)
            if "attn_implementation" in kw:
                raise ValueError("NoSdpa does not support an attention implementation through sdpa yet")
            return "loaded"

    assert from_pretrained(NoSdpa, tmp_path, torch.float32, "sdpa") == "loaded"
    assert [("attn_implementation" in kw) for kw in NoSdpa.calls] == [True, False]

    class Broken(NoSdpa):
        @classmethod
        def from_pretrained(cls, path, **kw):
            raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):  # other errors are not retried
        from_pretrained(Broken, tmp_path, torch.float32, "sdpa")


def test_half_precision_logits_give_float32_logprobs():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 5, 40, generator=g) * 4, torch.randint(0, 40, (2, 5), generator=g)
    half = logits.to(torch.bfloat16)
    lp = token_logprobs(half, targets, 0.7)
    ref = torch.log_softmax(half.float() / 0.7, -1).gather(-1, targets[..., None])[..., 0]
    assert lp.dtype == torch.float32 and torch.allclose(lp, ref, atol=1e-6)
    model, tok = tiny()
    out, _ = policy_logprobs(model.to(torch.bfloat16), rl_batch(), 0.9)
    assert out.dtype == torch.float32


# --------------------------------------------------------------------------------- gradient checkpointing
def _loss_and_grads(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    n = float(batch.mask.sum())
    loss, _ = minibatch_loss(model, batch, SPEC, float(batch.size), n)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(lora):
    base, _ = tiny()
    plain, ckpt = copy.deepcopy(base).eval(), enable_gradient_checkpointing(copy.deepcopy(base)).eval()
    if lora:
        from llmrl.models.lora import apply_lora

        def adapt(m: torch.nn.Module) -> torch.nn.Module:
            torch.manual_seed(0)  # the same adapter init for both
            return apply_lora(m, r=4, alpha=8, dropout=0.0).eval()  # eval after, as build_run

        plain, ckpt = adapt(plain), adapt(ckpt)
    calls = []
    for layer in ckpt.get_base_model().model.layers if lora else ckpt.model.layers:
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda fn, *a, _f=inner, **k: calls.append(1) or _f(fn, *a, **k)
    batch = rl_batch()
    loss0, g0 = _loss_and_grads(plain, batch)
    loss1, g1 = _loss_and_grads(ckpt, batch)
    assert len(calls) == 2, "every layer was checkpointed, in eval mode (as the RL loop runs the policy)"
    assert not any(m.training for m in ckpt.modules()), "the layers' eval mode is restored after the forward"
    assert torch.allclose(loss0, loss1, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        assert torch.allclose(g0[k], g1[k], atol=1e-6, rtol=0), k
    with torch.no_grad():  # no-grad forwards (old / reference log-probs) are not checkpointed
        policy_logprobs(ckpt, batch)
    assert len(calls) == 2


def test_gradient_checkpointing_run_matches_and_reaches_the_critic(tmp_path):
    base = _metrics(_train(tmp_path, "plain", "algo.advantage=gae"))
    ck = _metrics(_train(tmp_path, "ckpt", "algo.advantage=gae", "model.gradient_checkpointing=true"))
    assert [r["step"] for r in ck] == [r["step"] for r in base]
    for a, b in zip(base, ck):
        for k, v in a.items():
            if isinstance(v, float) and not k.startswith("memory/"):  # the plan's estimate counts checkpointing
                assert b[k] == pytest.approx(v, abs=1e-5), k


# ------------------------------------------------------------------------------------------------- GPU
@pytest.mark.parametrize("overrides", [["model.device=cuda"], ["model.device=auto", "model.reference_device=cpu"],
                                       ["model.device=cuda", "model.gradient_checkpointing=true",
                                        "algo.advantage=gae", "algo.recompute_logprobs=true"]])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_rl_run_on_cuda(tmp_path, overrides):
    rows = _metrics(_train(tmp_path, "run", *overrides))
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(isinstance(r["loss"], float) and r["grad_norm"] > 0 for r in train), train
    assert (tmp_path / "run" / "final_model" / "model.safetensors").is_file()


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_greedy_tokens_on_cuda_equal_cpu(fast_path):
    model, tok = tiny(seed=3)
    prompts = [tok.encode(p, add_special_tokens=False) for p in ("12+7=", "a", "hello world: ", "99")]
    params = SamplingParams(max_new_tokens=12, temperature=0.0, n=2, seed=0)
    cpu = KVCacheSampler(model, tok, fast_path=fast_path).generate(prompts, params)
    gpu_model = copy.deepcopy(model).to("cuda")
    cuda = KVCacheSampler(gpu_model, tok, fast_path=fast_path).generate(prompts, params)
    for a, b in zip(cpu, cuda):
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids and x.text == y.text
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    batch = rl_batch()
    lp_cpu, _ = policy_logprobs(model, batch, 0.9)
    lp_cuda, _ = policy_logprobs(gpu_model, batch, 0.9)
    assert lp_cuda.device.type == "cuda" and torch.allclose(lp_cuda.cpu(), lp_cpu, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_bfloat16_loss_and_gradient_checkpointing_on_cuda():
    base, _ = tiny()
    plain = base.to("cuda", torch.bfloat16).eval()
    ckpt = enable_gradient_checkpointing(copy.deepcopy(plain)).eval()
    batch = rl_batch()
    lp, _ = policy_logprobs(plain, batch, 0.9)
    assert lp.dtype == torch.float32 and lp.device.type == "cuda"
    loss0, g0 = _loss_and_grads(plain, batch)
    loss1, g1 = _loss_and_grads(ckpt, batch)
    assert loss0.dtype == torch.float32 and torch.isfinite(loss0)
    assert torch.allclose(loss0, loss1, atol=1e-5)
    for k in g0:
        assert g0[k].dtype == torch.bfloat16 and torch.allclose(g0[k].float(), g1[k].float(), atol=1e-2), k
