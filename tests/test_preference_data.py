"""Preference pairs: reading JSONL/parquet (errors name file:line and column), tokenising with the
documented truncation rule (exact token counts with the char tokenizer), completion log-probs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmrl.models import TinyModelSpec, build_char_tokenizer, build_tiny_model
from llmrl.tasks.io import DataError
from llmrl.tasks.preference import PreferencePair, check_pairs, read_preference_pairs, write_preference_pairs
from llmrl.train.pairs import completion_logps, encode_pairs

TOK = build_char_tokenizer()  # one token per character, no BOS; EOS id 2, pad id 0
EOS = TOK.eos_token_id


def ids(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- reading -----------------------------------------------------------------------------------------------


def test_reads_text_and_chat_pairs_with_user_id_and_meta(tmp_path: Path) -> None:
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    path = write_lines(tmp_path / "p.jsonl", [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3", "user_id": 7, "score": 0.5},
        "",  # blank lines are skipped (and do not shift line numbers)
        {"prompt": conv, "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [*conv, {"role": "assistant", "content": "5"}]},  # TRL conversational layouts
        {"chosen": [*conv, {"role": "assistant", "content": "four"}],  # implicit prompt: shared messages
         "rejected": [*conv, {"role": "assistant", "content": "five"}]},
    ])
    pairs = read_preference_pairs(path)
    assert pairs[0] == PreferencePair("1+1=", "2", "3", user_id="7", meta={"score": 0.5})
    assert pairs[1] == PreferencePair(conv, "4", "5")
    assert pairs[2] == PreferencePair(conv, "four", "five")


def test_custom_column_names(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"q": "x", "good": "a", "bad": "b"}])
    pairs = read_preference_pairs(path, prompt_key="q", chosen_key="good", rejected_key="bad")
    assert pairs == [PreferencePair("x", "a", "b")]


def _err(path: Path, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_preference_pairs(path, **kw)
    return str(info.value)


def test_missing_column_names_the_column_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, "",
                                              {"prompt": "a", "chosen": "b"}])
    msg = _err(path)
    assert f"{path}:3" in msg and "'rejected'" in msg and "missing column" in msg
    path2 = write_lines(tmp_path / "q.jsonl", [{"chosen": "b", "rejected": "c"}])  # strings: no implicit prompt
    msg = _err(path2)
    assert f"{path2}:1" in msg and "'prompt'" in msg
    assert "'answer'" in _err(path, chosen_key="answer")


def test_malformed_json_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                              '{"prompt": "a", "chosen": '])
    msg = _err(path)
    assert f"{path}:2" in msg and "invalid JSON" in msg
    path2 = write_lines(tmp_path / "q.jsonl", ["[1, 2]"])
    assert f"{path2}:1" in _err(path2) and "JSON object" in _err(path2)


def test_bad_value_types_name_the_column(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": 3, "chosen": "b", "rejected": "c"}])
    assert "'prompt'" in _err(path) and f"{path}:1" in _err(path)
    path = write_lines(tmp_path / "q.jsonl", [{"prompt": "a", "chosen": [{"role": "user", "content": "b"}],
                                               "rejected": "c"}])
    assert "'chosen'" in _err(path) and "assistant" in _err(path)
    path = write_lines(tmp_path / "r.jsonl", [{"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}])
    assert "'prompt'" in _err(path) and "message 0" in _err(path)


def test_identical_and_empty_completions_raise_or_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "p", "chosen": "same", "rejected": "same"},
            {"prompt": "p", "chosen": "  \n", "rejected": "b"},
            {"prompt": "p", "chosen": "a", "rejected": ""}]
    path = write_lines(tmp_path / "p.jsonl", rows)
    msg = _err(path)
    assert f"{path}:2" in msg and "identical" in msg
    path2 = write_lines(tmp_path / "q.jsonl", rows[2:])
    msg = _err(path2)
    assert f"{path2}:1" in msg and "empty" in msg and "'chosen'" in msg
    stats: dict[str, int] = {}
    with pytest.warns(RuntimeWarning, match="skipped 3 of 4"):
        pairs = read_preference_pairs(path, on_error="skip", stats=stats)
    assert pairs == [PreferencePair("p", "a", "b")]
    assert stats == {"read": 4, "kept": 1, "skipped_identical": 1, "skipped_empty": 2}
    with pytest.raises(DataError, match="pair 0: .*identical"):
        check_pairs([PreferencePair("p", "x", "x")])
    with pytest.raises(ValueError, match="on_error"):
        read_preference_pairs(path, on_error="ignore")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_preference_pairs(tmp_path / "nope.jsonl")


def test_parquet_round_trip_and_errors(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    conv = [{"role": "user", "content": "hi"}]
    pairs = [PreferencePair(conv, "hello", "go away", user_id="u1", meta={"margin": 2.0}),
             PreferencePair(conv, "hey", "no", user_id="u2", meta={"margin": 1.0})]
    path = tmp_path / "pairs.parquet"
    assert write_preference_pairs(path, pairs) == 2
    assert read_preference_pairs(path) == pairs
    jpath = tmp_path / "pairs.jsonl"  # the JSONL writer round-trips too
    write_preference_pairs(jpath, pairs)
    assert read_preference_pairs(jpath) == pairs
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "chosen": "b", "rejected": "c"},
                                         {"prompt": "a", "chosen": "b", "rejected": "b"}]), tmp_path / "bad.parquet")
    msg = _err(tmp_path / "bad.parquet")
    assert "bad.parquet:row 2" in msg and "identical" in msg
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "chosen": "b"}]), tmp_path / "missing.parquet")
    msg = _err(tmp_path / "missing.parquet")
    assert "missing.parquet:row 1" in msg and "'rejected'" in msg
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    assert "not a readable parquet file" in _err(tmp_path / "junk.parquet")


# -- tokenising --------------------------------------------------------------------------------------------


def test_encode_layout_masks_and_eos() -> None:
    b = encode_pairs(TOK, [PreferencePair("ab", "x", "yy"), PreferencePair("c", "zzz", "w")],
                     max_length=16, max_prompt_length=8)
    assert b.num_pairs == 2 and b.input_ids.shape == (4, 5) and b.loss_mask.shape == (4, 4)
    rows = [ids("ab") + ids("x") + [EOS], ids("c") + ids("zzz") + [EOS], ids("ab") + ids("yy") + [EOS],
            ids("c") + ids("w") + [EOS]]  # chosen rows first, then rejected rows
    for r, want in enumerate(rows):
        assert b.input_ids[r, : len(want)].tolist() == want
        assert b.input_ids[r, len(want):].eq(TOK.pad_token_id).all()
        assert b.attention_mask[r].sum() == len(want)
    # loss_mask[t] == 1 iff token t+1 is a completion token (EOS included)
    assert b.loss_mask.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]]
    assert b.completion_lengths.tolist() == [2, 4, 3, 2]
    assert not b.truncated.any()


def test_truncation_rule_exact_token_counts() -> None:
    # prompt 10 tokens > max_prompt_length 4 -> its LAST 4 tokens "6789" are kept; completions then get
    # max_length - 4 = 3 tokens: "ok"+EOS (3) fits exactly; "wrong"+EOS (6) keeps "wro" and loses its EOS
    b = encode_pairs(TOK, [PreferencePair("0123456789", "ok", "wrong")], max_length=7, max_prompt_length=4)
    assert b.input_ids[0].tolist() == ids("6789ok") + [EOS]
    assert b.input_ids[1].tolist() == ids("6789wro")
    assert b.completion_lengths.tolist() == [3, 3]
    assert b.truncated.tolist() == [True, True]  # the prompt was cut: both rows are marked
    # prompt fits (3 <= 4): only the over-long completion is cut, to max_length - 3 = 4 tokens
    b = encode_pairs(TOK, [PreferencePair("abc", "ok", "wrong")], max_length=7, max_prompt_length=4)
    assert b.input_ids[0, :6].tolist() == ids("abcok") + [EOS] and b.attention_mask[0].sum() == 6
    assert b.input_ids[1].tolist() == ids("abcwron")
    assert b.completion_lengths.tolist() == [3, 4] and b.truncated.tolist() == [False, True]
    assert (b.attention_mask.sum(-1) <= 7).all()
    with pytest.raises(ValueError, match="max_prompt_length < max_length"):
        encode_pairs(TOK, [PreferencePair("a", "b", "c")], max_length=4, max_prompt_length=4)
    with pytest.raises(ValueError, match="no pairs"):
        encode_pairs(TOK, [], max_length=8, max_prompt_length=4)


def test_chat_prompts_render_like_rl_prompts() -> None:
    conv = [{"role": "user", "content": "hi"}]
    b = encode_pairs(TOK, [PreferencePair(conv, "yo", "no")], max_length=64, max_prompt_length=32)
    assert b.input_ids[0, :15].tolist() == ids("user: hi\nassistant: ")[:15]  # no template: "role: content\n"
    tok = build_char_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    b = encode_pairs(tok, [PreferencePair(conv, "yo", "no"), PreferencePair("hi", "a", "b")],
                     max_length=64, max_prompt_length=32)
    want = ids("<user>hi<assistant>yo") + [EOS]
    assert b.input_ids[0, : len(want)].tolist() == want
    want = ids("<user>hi<assistant>a") + [EOS]  # a plain-text prompt becomes one user message
    assert b.input_ids[1, : len(want)].tolist() == want
    b = encode_pairs(tok, [PreferencePair(conv, "yo", "no")], max_length=64, max_prompt_length=32,
                     chat_template=False)
    assert b.input_ids[0, :2].tolist() == ids("us")


# -- log-probs ---------------------------------------------------------------------------------------------


def test_completion_logps_match_a_slow_per_token_loop() -> None:
    spec = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                         max_position_embeddings=64)
    model, _ = build_tiny_model(spec, TOK, seed=1)
    pairs = [PreferencePair("12+3=", "15", "16"), PreferencePair("7=", "seven", "7")]
    b = encode_pairs(TOK, pairs, max_length=32, max_prompt_length=16)
    with torch.no_grad():
        got = completion_logps(model, b)
        got_mb = completion_logps(model, b, micro_batch_size=1)
        avg = completion_logps(model, b, average=True)
        sub = completion_logps(model, b.select([1]))
    want = []
    for prompt, comp in [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]:
        seq = ids(prompt) + ids(comp) + [EOS]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
        want.append(sum(float(logp[t - 1, seq[t]]) for t in range(len(ids(prompt)), len(seq))))
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(got_mb, got, atol=1e-5)
    lengths = [3, 6, 3, 2]
    assert torch.allclose(avg, got / torch.tensor(lengths, dtype=got.dtype), atol=1e-6)
    assert torch.allclose(sub, got[[1, 3]], atol=1e-5)
    assert all(math.isfinite(x) for x in got.tolist())
    logps = completion_logps(model, b)  # gradients flow with grad enabled
    logps.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
