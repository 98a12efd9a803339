"""``llmrl models import-gguf``: a tiny Llama written here as GGUF (llama.cpp's tensor names, Q/K permutation and
tokenizer metadata) comes back as a Hugging Face directory with the same weights, logits, tokenizer and chat
template; every bad input is a one-line error (exit 2) and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from llmrl.cli.main import main  # noqa: E402
from llmrl.models import gguf as gguf_import  # noqa: E402
from llmrl.models.loading import load_model, load_tokenizer  # noqa: E402

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORDS = ("hello", " hello", " the", "the", " world", " what", "What", " is", " 17", " 25", "user", "assistant")
TEXT = "What is 17 + 25? hello the world, café 😀\n"
HEADS, KV_HEADS = 2, 1


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order (the base of a byte-level BPE vocabulary)."""
    visible = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in visible else chr(next(extra)) for b in range(256)]


def _vocab() -> tuple[list[str], list[str]]:
    """Tokens (256 bytes, merged words, then the special tokens) and merges of a small byte-level BPE."""
    alphabet = _byte_alphabet()
    tokens, merges = list(alphabet), []
    for word in WORDS:
        pieces = [alphabet[b] for b in word.encode()]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if merged not in tokens:
                tokens.append(merged)
                merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [merged, *pieces[2:]]
    return tokens + list(SPECIALS), merges


def _reference_tokenizer(tokens: list[str], merges: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    return tok


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's reordering of the Q/K rows (convert_hf_to_gguf.py), which transformers undoes."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        _, _, i, rest = hf.split(".", 3)
        module, suffix = rest.rsplit(".", 1)
        return f"blk.{i}.{GGUF_NAMES[module]}.{suffix}"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def _tiny_model(tied: bool, seed: int = 0, arch: str = "llama") -> PreTrainedModel:
    """A random tiny Llama (or Qwen2: q/k/v biases) over the test vocabulary; norms not all ones, so a misplaced
    norm shows."""
    tokens, _ = _vocab()
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = classes[arch]
    config = config_class(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
                          rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
                          bos_token_id=tokens.index("<|im_start|>"), eos_token_id=tokens.index("<|im_end|>"),
                          pad_token_id=tokens.index("<|endoftext|>"))
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def write_gguf(path: Path, model: PreTrainedModel, quant: str | None = None, arch: str | None = None) -> Path:
    """``model`` and the test tokenizer as a GGUF file, laid out as llama.cpp's converter writes it (Llama's
    Q/K rows permuted, Qwen2's not). ``quant="Q8_0"`` stores the 2-D weights quantised; ``arch`` overrides
    general.architecture."""
    cfg = model.config
    permute = cfg.model_type == "llama"
    tokens, merges = _vocab()
    w = gguf.GGUFWriter(str(path), arch or cfg.model_type)
    w.add_name("tiny test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control, 1: normal
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, t in model.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue  # a tied model has no output.weight
        a = t.detach().numpy().astype(np.float32)
        if permute and ".q_proj." in name:
            a = _permute(a, HEADS)
        elif permute and ".k_proj." in name:
            a = _permute(a, KV_HEADS)
        if quant is not None and a.ndim == 2:
            qtype = gguf.GGMLQuantizationType[quant]
            w.add_tensor(_gguf_name(name), gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(_gguf_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["models", "import-gguf", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmrl: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, Path, Path]:
    """The reference model, its GGUF file and its import (float32, untied embeddings, grouped KV heads)."""
    d = tmp_path_factory.mktemp("gguf")
    model = _tiny_model(tied=False)
    src = write_gguf(d / "tiny.gguf", model)
    assert main(["models", "import-gguf", str(src), str(d / "imported")]) == 0
    return model, src, d / "imported"


def test_cli_prints_the_directory_and_a_summary(tmp_path, capsys, untied):
    model, src, _ = untied
    rc, out, err = _run(capsys, str(src), str(tmp_path / "m"))
    assert rc == 0, err
    path, summary = out.strip().splitlines()
    assert Path(path) == (tmp_path / "m").resolve()
    n = sum(p.numel() for p in model.parameters())
    assert summary == (f"llama (LlamaForCausalLM), {n:,} parameters, vocab {model.config.vocab_size}, float32, "
                       f"chat template: yes")
    assert _leftovers(tmp_path) == []


def test_writes_a_plain_hugging_face_directory(untied):
    _, _, out = untied
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and cfg.get("dtype", "float32") == "float32"
    assert "quantization_config" not in cfg and "_model_name_or_path" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] is False
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    template = tok_cfg.get("chat_template") or (out / "chat_template.jinja").read_text()
    assert template == CHAT_TEMPLATE


def test_weights_are_the_originals(untied):
    model, _, out = untied
    saved = load_file(out / "model.safetensors")
    ref = model.state_dict()
    assert sorted(saved) == sorted(ref)
    for name, t in ref.items():
        assert saved[name].dtype == torch.float32
        assert torch.equal(saved[name], t), name  # F32 in the GGUF: exact, Q/K permutation undone


def test_llmrl_and_transformers_load_it_with_the_same_logits(untied):
    model, _, out = untied
    ids = torch.tensor([[5, 77, 260, 3, 140, 200, 9, 1]])
    with torch.no_grad():
        want = model(ids).logits
        ours = load_model(out)
        plain = AutoModelForCausalLM.from_pretrained(out).eval()
        for loaded in (ours, plain):
            assert type(loaded) is LlamaForCausalLM
            assert getattr(loaded, "hf_quantizer", None) is None
            assert getattr(loaded.config, "quantization_config", None) is None
            torch.testing.assert_close(loaded(ids).logits, want, atol=1e-5, rtol=0)


def test_tokenizer_round_trips_and_keeps_the_chat_template(untied):
    _, _, out = untied
    tok = load_tokenizer(out)
    ref = _reference_tokenizer(*_vocab())
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert ids == ref.encode(TEXT).ids
    assert tok.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode()) - 10  # the merges are used
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_tied_embeddings(tmp_path, capsys):
    model = _tiny_model(tied=True, seed=1)
    src = write_gguf(tmp_path / "tied.gguf", model)
    rc, _, err = _run(capsys, str(src), str(tmp_path / "out"))
    assert rc == 0, err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is True
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(saved["model.embed_tokens.weight"], model.model.embed_tokens.weight)
    loaded = load_model(tmp_path / "out")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 2, 3, 270, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_qwen2(tmp_path, capsys):
    model = _tiny_model(tied=True, seed=3, arch="qwen2")
    src = write_gguf(tmp_path / "qwen2.gguf", model)
    rc, out, err = _run(capsys, str(src), str(tmp_path / "out"))
    assert rc == 0, err
    assert out.splitlines()[1].startswith("qwen2 (Qwen2ForCausalLM)")
    saved = load_file(tmp_path / "out" / "model.safetensors")
    for name, t in model.state_dict().items():
        if name != "lm_head.weight":  # tied: stored once
            assert torch.equal(saved[name], t), name
    loaded = load_model(tmp_path / "out")
    assert type(loaded) is Qwen2ForCausalLM
    ids = torch.tensor([[1, 2, 3, 270, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_quantized_weights_are_dequantized_into_the_chosen_dtype(tmp_path, capsys):
    model = _tiny_model(tied=False, seed=2)
    src = write_gguf(tmp_path / "q8.gguf", model, quant="Q8_0")
    rc, out, err = _run(capsys, str(src), str(tmp_path / "out"), "--dtype", "bfloat16")
    assert rc == 0, err
    assert "bfloat16" in out
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16" and "quantization_config" not in cfg
    saved = load_file(tmp_path / "out" / "model.safetensors")
    for name, t in model.state_dict().items():
        assert saved[name].dtype == torch.bfloat16
        assert (saved[name].float() - t).abs().max() <= 0.02 * t.abs().max() + 1e-6, name  # Q8_0 + bf16 rounding
    loaded = load_model(tmp_path / "out", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16


# --- errors: one line, exit 2, nothing left behind ---

def test_missing_file(tmp_path, capsys):
    rc, _, err = _run(capsys, str(tmp_path / "nope.gguf"), str(tmp_path / "out"))
    _one_line_error(rc, err, "nope.gguf", "does not exist")
    assert not (tmp_path / "out").exists()


def test_not_a_gguf_file(tmp_path, capsys):
    (tmp_path / "model.gguf").write_text("not a model\n" * 10)
    rc, _, err = _run(capsys, str(tmp_path / "model.gguf"), str(tmp_path / "out"))
    _one_line_error(rc, err, "model.gguf", "not a GGUF file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_truncated_gguf_file(tmp_path, capsys, untied):
    _, src, _ = untied
    (tmp_path / "cut.gguf").write_bytes(src.read_bytes()[:300])
    rc, _, err = _run(capsys, str(tmp_path / "cut.gguf"), str(tmp_path / "out"))
    _one_line_error(rc, err, "cut.gguf", "truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


def test_architecture_transformers_cannot_read(tmp_path, capsys):
    w = gguf.GGUFWriter(str(tmp_path / "rwkv.gguf"), "rwkv6")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rc, _, err = _run(capsys, str(tmp_path / "rwkv.gguf"), str(tmp_path / "out"))
    _one_line_error(rc, err, "'rwkv6'", "cannot be read from GGUF", "llama")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rwkv.gguf"]


def test_gguf_package_missing(tmp_path, capsys, monkeypatch, untied):
    _, src, _ = untied
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    rc, _, err = _run(capsys, str(src), str(tmp_path / "out"))
    _one_line_error(rc, err, "gguf package", 'pip install "llmrl[gguf]"')
    assert not (tmp_path / "out").exists()


def test_non_empty_out_dir_needs_overwrite(tmp_path, capsys, untied):
    _, src, _ = untied
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _, err = _run(capsys, str(src), str(out))
    _one_line_error(rc, err, "not empty", "--overwrite")
    rc, _, err = _run(capsys, str(src), str(out), "--overwrite")  # not a model directory: never replaced
    _one_line_error(rc, err, "not a model directory")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    rc, _, err = _run(capsys, str(src), str(tmp_path / "file"))
    _one_line_error(rc, err, "not a directory")


def test_overwrite_replaces_an_earlier_import(tmp_path, capsys, untied):
    _, src, _ = untied
    out = tmp_path / "out"
    out.mkdir()  # an empty directory is fine without --overwrite
    assert _run(capsys, str(src), str(out))[0] == 0
    (out / "stale.txt").write_text("from before")
    assert _run(capsys, str(src), str(out), "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert _leftovers(tmp_path) == []


def test_a_failed_import_leaves_nothing_half_written(tmp_path, capsys, monkeypatch, untied):
    _, src, _ = untied
    out = tmp_path / "out"
    assert _run(capsys, str(src), str(out))[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    real_write = gguf_import._write

    def full_disk(model, tokenizer, d, dtype_name):
        real_write(model, tokenizer, d, dtype_name)
        raise OSError(errno.ENOSPC, "No space left on device", str(d / "model.safetensors"))

    monkeypatch.setattr(gguf_import, "_write", full_disk)
    rc, _, err = _run(capsys, str(src), str(out), "--overwrite")
    _one_line_error(rc, err, "No space left on device")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # the earlier import is intact
    rc, _, err = _run(capsys, str(src), str(tmp_path / "new"))
    _one_line_error(rc, err, "No space left on device")
    assert not (tmp_path / "new").exists()
    assert _leftovers(tmp_path) == []


def test_python_api_returns_the_directory(tmp_path, untied):
    _, src, _ = untied
    assert gguf_import.import_gguf(src, tmp_path / "api", dtype="float16") == (tmp_path / "api").resolve()
    assert json.loads((tmp_path / "api" / "config.json").read_text())["torch_dtype"] == "float16"
    with pytest.raises(gguf_import.ConfigError, match="dtype 'int8'"):
        gguf_import.import_gguf(src, tmp_path / "x", dtype="int8")
