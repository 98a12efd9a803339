"""continuation_tokens / closing_tokens on real chat templates (SmolLM2, Qwen2.5 with tools, Llama-3)."""

from __future__ import annotations

import pytest
from chat_templates import chat_tokenizer

from llmrl.models.loading import encode_prompt, render_prompt
from llmrl.models.tiny import build_char_tokenizer
from llmrl.rollout.chat_tokens import (
    ChatTemplateError,
    closing_text,
    closing_tokens,
    continuation_text,
    continuation_tokens,
    is_prefix_preserving,
    render_messages,
)

CHATML_NEXT = "\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
EXPECTED_NEXT = {
    "smollm2": CHATML_NEXT,
    "qwen25": CHATML_NEXT,
    "llama3": "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
}
CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic.",
                                         "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                        "required": ["expression"]}}}


def _episode_tokens(tok, question: str, answer: str) -> list[int]:
    """Prompt tokens as the rollout encodes them + the answer as the policy would sample it (ending in EOS)."""
    prompt = encode_prompt(tok, render_prompt(tok, {"prompt": question}, True))
    return prompt + tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]


@pytest.mark.parametrize("name", ["smollm2", "qwen25", "llama3"])
def test_continuation_is_the_suffix_and_the_whole_sequence_matches_the_template(name):
    tok = chat_tokenizer(name)
    history = [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": "3"}]
    new = [{"role": "user", "content": "again"}]
    assert continuation_text(tok, history, new) == EXPECTED_NEXT[name]
    assert is_prefix_preserving(tok, history, new)
    ids = _episode_tokens(tok, "1+2?", "3") + continuation_tokens(tok, history, new, chat_template=True)
    # the sampled-then-continued sequence is exactly the template's tokens of the whole conversation
    whole = render_messages(tok, [*history, *new], add_generation_prompt=True)
    assert ids == encode_prompt(tok, whole)
    # without the generation prompt the continuation stops after the new message's end-of-turn marker
    no_gen = continuation_text(tok, history, new, add_generation_prompt=False)
    assert EXPECTED_NEXT[name].startswith(no_gen) and no_gen.rstrip().endswith(closing_text(tok, chat_template=True))


def test_smollm2_default_system_prompt_is_not_injected_into_the_continuation():
    tok = chat_tokenizer("smollm2")
    new = [{"role": "user", "content": "again"}]
    assert "SmolLM" in render_messages(tok, new, add_generation_prompt=True)  # rendering new alone would inject it
    text = continuation_text(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], new)
    assert text == CHATML_NEXT and "SmolLM" not in text


def test_qwen25_tool_messages_with_tool_schemas():
    tok = chat_tokenizer("qwen25")
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>'
    history = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": call}]
    prompt = render_messages(tok, history[:1], add_generation_prompt=True, tools=[CALC])
    assert '"name": "calculator"' in prompt and "You are Qwen" in prompt
    one = continuation_text(tok, history, [{"role": "tool", "content": "5"}], tools=[CALC])
    assert one == "\n<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    two = continuation_text(tok, history, [{"role": "tool", "content": "5"}, {"role": "tool", "content": "6"}],
                            tools=[CALC])  # consecutive tool results share one user block
    assert two == ("\n<|im_start|>user\n<tool_response>\n5\n</tool_response>\n<tool_response>\n6\n</tool_response>"
                   "<|im_end|>\n<|im_start|>assistant\n")
    ids = encode_prompt(tok, prompt) + tok.encode(call, add_special_tokens=False) + [tok.eos_token_id]
    ids += continuation_tokens(tok, history, [{"role": "tool", "content": "5"}], chat_template=True, tools=[CALC])
    whole = render_messages(tok, [*history, {"role": "tool", "content": "5"}], add_generation_prompt=True,
                            tools=[CALC])
    assert ids == encode_prompt(tok, whole)


def test_template_that_drops_earlier_reasoning_is_detected_and_handled():
    tok = chat_tokenizer("drops_reasoning")
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>hmm</think>42"}]
    new = [{"role": "user", "content": "again"}]
    assert not is_prefix_preserving(tok, history, new)
    # the whole-conversation rendering has lost the sampled reasoning; the continuation keeps it in the tokens
    assert "hmm" not in render_messages(tok, [*history, *new], add_generation_prompt=True)
    assert continuation_text(tok, history, new) == CHATML_NEXT


def test_template_that_rewrites_everything_raises_a_clear_error():
    tok = chat_tokenizer("smollm2")
    tok.chat_template = ("{{ messages | length }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "<|im_end|>\n{% endfor %}")  # a message count at the start changes with every turn
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(ChatTemplateError, match="not prefix-preserving"):
        continuation_tokens(tok, history, [{"role": "user", "content": "b"}], chat_template=True)


def test_history_must_end_with_the_sampled_assistant_turn():
    tok = chat_tokenizer("smollm2")
    with pytest.raises(ValueError, match="history must end with the assistant turn"):
        continuation_tokens(tok, [{"role": "user", "content": "q"}], [{"role": "user", "content": "b"}],
                            chat_template=True)


@pytest.mark.parametrize("name,marker", [("smollm2", "<|im_end|>"), ("qwen25", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_closing_tokens(name, marker):
    tok = chat_tokenizer(name)
    end = tok.convert_tokens_to_ids(marker)
    assert closing_text(tok, chat_template=True) == marker
    body = tok.encode("42", add_special_tokens=False)
    assert closing_tokens(tok, [*body, end], chat_template=True) == []  # stopped on the end-of-turn token
    assert closing_tokens(tok, body, chat_template=True) == [end]  # stopped by length / a stop string
    assert closing_tokens(tok, body, chat_template=False) == []


def test_plain_text_continuation_is_the_contents_encoded():
    tok = build_char_tokenizer()
    new = [{"role": "user", "content": "\nWrong, "}, {"role": "user", "content": "again: "}]
    ids = continuation_tokens(tok, [], new, chat_template=False)
    assert ids == tok.encode("\nWrong, again: ", add_special_tokens=False) and tok.decode(ids) == "\nWrong, again: "
