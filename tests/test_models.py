"""Models layer: char tokenizer, tiny models, local load/save, prompt rendering, reference copies, LoRA."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmrl.models import (
    ModelLoadError,
    TinyModelSpec,
    adapters_disabled,
    apply_lora,
    build_char_tokenizer,
    build_tiny_model,
    encode_prompt,
    load_model,
    load_tokenizer,
    reference_model,
    render_prompt,
    save_model,
    save_tiny_model,
)

SMALL = TinyModelSpec(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
TEXTS = [
    "Hello, world!",
    "  two  spaces\tand tabs\n\nnew lines \n",
    "".join(chr(i) for i in range(32, 127)),
    "",
    "x",
]




def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_char_tokenizer_round_trip() -> None:
    tok = build_char_tokenizer()
    for s in TEXTS:
        ids = tok.encode(s, add_special_tokens=False)
        assert len(ids) == len(s)  # one token per character
        assert tok.decode(ids) == s
    assert tok.encode("ab") == tok.encode("ab", add_special_tokens=False)  # never adds BOS/EOS
    assert tok.decode(tok.encode("hi") + [tok.eos_token_id], skip_special_tokens=True) == "hi"
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.pad_token_id == 0 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.padding_side == "left"
    assert set(tok.encode("é")) == {tok.unk_token_id}  # non-ASCII: <unk> (one per UTF-8 byte)
    assert len(tok) == 4 + 95 + 2  # specials + printable ASCII + newline, tab


def test_char_tokenizer_save_reload(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    for reloaded in (
        AutoTokenizer.from_pretrained(tmp_path, local_files_only=True),
        load_tokenizer(tmp_path),
    ):
        for s in TEXTS:
            assert reloaded.encode(s) == tok.encode(s)
            assert reloaded.decode(reloaded.encode(s)) == s
        assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.bos_token_id) == (0, 2, 1)
        assert reloaded.padding_side == "left"


def test_pad_token_falls_back_to_eos(tmp_path: Path) -> None:
    tok = build_char_tokenizer()
    tok.pad_token = None
    tok.padding_side = "right"
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token_id == loaded.eos_token_id == 2 and loaded.padding_side == "left"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_model_save_load_identical(tmp_path: Path, arch: str) -> None:
    spec = TinyModelSpec(arch=arch, hidden_size=32, num_layers=2, intermediate_size=64)
    path = save_tiny_model(tmp_path / "m", spec=spec, seed=3)
    assert path == tmp_path / "m"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (path / f).is_file(), f
    built, tok = build_tiny_model(spec, seed=3)
    model, tok2 = load_model(path), load_tokenizer(path)
    plain = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    ids = tok.encode("the cat sat")
    assert ids == tok2.encode("the cat sat")
    ref = _logits(built, ids)
    assert torch.equal(_logits(model, ids), ref)
    assert torch.equal(_logits(plain, ids), ref)
    assert model.config.model_type == arch and model.dtype == torch.float32 and not model.training
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id


def test_tiny_model_seed_and_spec() -> None:
    a, _ = build_tiny_model(SMALL, seed=0)
    b, _ = build_tiny_model(SMALL, seed=0)
    c, _ = build_tiny_model(SMALL, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert a.config.num_key_value_heads == 2 and a.config.tie_word_embeddings
    assert a.lm_head.weight is a.model.embed_tokens.weight
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(TinyModelSpec(arch="gpt2"))  # type: ignore[arg-type]


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match="nope") as e:
        load_model(missing)
    assert isinstance(e.value, ValueError) and "does not exist" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="config.json") as e:
        load_model(empty)
    assert str(empty) in str(e.value)
    with pytest.raises(ModelLoadError, match="nope"):
        load_tokenizer(missing)
    with pytest.raises(ValueError, match="dtype"):
        load_model(empty, dtype="float8")


def test_load_model_dtype(tmp_path: Path) -> None:
    path = save_tiny_model(tmp_path, spec=SMALL)
    assert load_model(path, dtype="bfloat16").dtype == torch.bfloat16


def test_save_model_round_trip(tmp_path: Path) -> None:
    model, tok = build_tiny_model(SMALL, seed=5)
    save_model(model, tok, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    ids = tok.encode("abc")
    assert torch.equal(_logits(load_model(tmp_path / "out"), ids), _logits(model, ids))


def test_render_prompt_without_template() -> None:
    tok = build_char_tokenizer()
    assert render_prompt(tok, {"prompt": "2+2="}) == "2+2="
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_prompt(tok, {"prompt": msgs}) == "system: Be brief.\nuser: Hi\nassistant: "
    assert render_prompt(tok, {"prompt": "Q", "assistant_prefix": " A:"}) == "Q A:"
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt(tok, {"prompt": "x"}, use_chat_template=True)


def test_render_prompt_with_template() -> None:
    tok = copy.deepcopy(build_char_tokenizer())
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert render_prompt(tok, {"prompt": "Hi"}) == "<user>Hi\n<assistant>"
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert (
        render_prompt(tok, {"prompt": msgs, "assistant_prefix": "ok"}) == "<system>S\n<user>U\n<assistant>ok"
    )
    assert render_prompt(tok, {"prompt": "Hi"}, use_chat_template=False) == "Hi"
    assert build_char_tokenizer().chat_template is None  # the copy did not leak


def test_encode_prompt() -> None:
    tok = build_char_tokenizer()
    assert encode_prompt(tok, "ab") == tok.convert_tokens_to_ids(["a", "b"])
    tok.add_bos_token = True  # Llama-style tokenizers get exactly one leading BOS
    assert encode_prompt(tok, "ab")[0] == tok.bos_token_id
    assert encode_prompt(tok, "<bos>ab").count(tok.bos_token_id) == 1


def test_reference_model_is_frozen_copy() -> None:
    model, tok = build_tiny_model(SMALL, seed=0)
    model.train()
    ref = reference_model(model)
    assert not ref.training and all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())
    ids = tok.encode("abc")
    base = _logits(ref, ids)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert torch.equal(_logits(ref, ids), base)


def test_lora_and_adapters_disabled() -> None:
    model, tok = build_tiny_model(SMALL, seed=0)
    ids = tok.encode("hello")
    base = _logits(model, ids)
    peft_model = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.allclose(_logits(peft_model, ids), base, atol=1e-6)  # lora_B starts at zero
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    adapted = _logits(peft_model, ids)
    assert not torch.allclose(adapted, base, atol=1e-3)
    with adapters_disabled(peft_model):
        assert torch.allclose(_logits(peft_model, ids), base, atol=1e-6)
    assert torch.equal(_logits(peft_model, ids), adapted)
    with adapters_disabled(model):  # a plain model: no-op
        pass


def test_eval_mode_restores_each_models_own_mode_even_after_an_error():
    from torch import nn

    from llmrl.models import eval_mode

    a, b = nn.Dropout(0.5).train(), nn.Dropout(0.5).eval()
    with pytest.raises(RuntimeError), eval_mode(a, b):
        assert not a.training and not b.training
        raise RuntimeError("boom")
    assert a.training and not b.training
