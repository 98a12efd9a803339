"""Token-in/token-out chat episodes: the token ids to append after sampled turns, never re-tokenising them.

An episode's tokens are the encoded prompt followed by turns. Policy turns are kept exactly as sampled;
everything else (user / tool / other agents' messages, the next generation prompt) is rendered with the
chat template and only its *suffix* is encoded and appended (``loss_mask`` 0). Re-encoding the whole
conversation text instead would change the sampled tokens (BPE merges across turn boundaries, dropped
reasoning, ...) and break the PPO ratio.

Conventions:

* ``history`` is the conversation the episode's tokens already hold; it ends with the assistant turn the
  policy just sampled. The episode's tokens end right after that turn's end-of-turn marker (ChatML's
  ``<|im_end|>``, Llama-3's ``<|eot_id|>``): :func:`closing_tokens` appends the marker (mask 0) when the
  sampled turn did not produce it (it stopped by length or by a stop string).
* :func:`continuation_tokens` renders ``history`` and ``history + new`` and encodes the text after the
  history's end-of-turn marker (whitespace the template writes after the marker, e.g. ChatML's newline,
  belongs to the continuation).
* A template that is not prefix-preserving (the rendering of ``history + new`` does not start with that of
  ``history``: templates that drop earlier reasoning, or move or rewrite the system prompt) is detected; the
  new messages are then rendered after a fixed dummy conversation (a system message, a user message and an
  assistant sentinel) and cut after the sentinel's end-of-turn marker. Only when that is not
  prefix-preserving either is a :class:`ChatTemplateError` raised.
* Without a chat template (``chat_template=False``: tiny models, plain text) the new messages' contents are
  concatenated and encoded with ``add_special_tokens=False``; there is no generation prompt or closing token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Message = dict[str, Any]

_SENTINEL = "LLMRL-SENTINEL-7f3a"
_DUMMIES: tuple[list[Message], ...] = (
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": _SENTINEL}],
    [{"role": "user", "content": "U"}, {"role": "assistant", "content": _SENTINEL}],  # templates without system
)


class ChatTemplateError(ValueError):
    """The chat template cannot be continued token-in/token-out."""


def has_chat_template(tokenizer: Any, chat_template: bool | None) -> bool:
    """Whether rendering uses the tokenizer's chat template (``None``: when it has one), as ``render_prompt``."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has:
        raise ValueError("chat_template=True but the tokenizer has no chat_template")
    return has and chat_template is not False


def render_messages(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool,
                    tools: list[dict[str, Any]] | None = None) -> str:
    """The chat template's text for ``messages`` (``tools``: JSON schemas passed to the template)."""
    kw: dict[str, Any] = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **kw)
    if not isinstance(text, str):  # pragma: no cover - defensive, depends on transformers version
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


_CLOSE_CACHE: dict[tuple[int, str, str], tuple[str, str]] = {}


def _turn_close(tokenizer: Any, tools: list[dict[str, Any]] | None) -> tuple[str, str]:
    """(end-of-turn marker, whitespace after it) the template writes after an assistant message's content."""
    key = (id(tokenizer), str(tokenizer.chat_template), json.dumps(tools, sort_keys=True, default=str))
    if key not in _CLOSE_CACHE:
        if len(_CLOSE_CACHE) > 64:
            _CLOSE_CACHE.clear()
        _CLOSE_CACHE[key] = _find_turn_close(tokenizer, tools)
    return _CLOSE_CACHE[key]


def _find_turn_close(tokenizer: Any, tools: list[dict[str, Any]] | None) -> tuple[str, str]:
    text, error = "", None
    for dummy in _DUMMIES:
        try:
            text = render_messages(tokenizer, dummy, add_generation_prompt=False, tools=tools)
            break
        except Exception as e:  # a template that refuses a system message raises (jinja's raise_exception)
            error = e
    else:
        raise ChatTemplateError(f"the chat template cannot render a user/assistant exchange: {error}") from error
    at = text.rfind(_SENTINEL)
    if at < 0:
        raise ChatTemplateError("the chat template does not render an assistant message's content verbatim")
    after = text[at + len(_SENTINEL):]
    marker = after.rstrip()
    return marker, after[len(marker):]


def closing_text(tokenizer: Any, *, chat_template: bool, tools: list[dict[str, Any]] | None = None) -> str:
    """The template's end-of-turn marker after an assistant message (``"<|im_end|>"``; ``""`` without a
    template)."""
    return _turn_close(tokenizer, tools)[0] if chat_template else ""


def closing_tokens(tokenizer: Any, sampled_ids: Sequence[int], *, chat_template: bool,
                   tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Ids to append (``loss_mask`` 0) after a sampled assistant turn so that it ends with the template's
    end-of-turn marker: none when the sampled ids already end with it (the policy stopped on it), else the
    marker's ids (the turn stopped by length or by a stop string). Always ``[]`` without a template."""
    if not chat_template:
        return []
    ids = _encode(tokenizer, closing_text(tokenizer, chat_template=True, tools=tools))
    if ids and list(sampled_ids[-len(ids):]) == ids:
        return []
    return ids


def _cut_after_last_turn(tokenizer: Any, messages: Sequence[Message], tools: list[dict[str, Any]] | None,
                         marker: str, tail: str) -> str:
    """The rendering of ``messages`` (ending with an assistant message) up to its end-of-turn marker."""
    text = render_messages(tokenizer, messages, add_generation_prompt=False, tools=tools)
    if tail and text.endswith(tail):
        text = text[: -len(tail)]
    if not text.endswith(marker):
        raise ChatTemplateError(f"the rendering of the history does not end with the end-of-turn marker "
                                f"{marker!r}: {text[-60:]!r}")
    return text


def continuation_text(tokenizer: Any, history: Sequence[Message], new: Sequence[Message], *,
                      add_generation_prompt: bool = True, tools: list[dict[str, Any]] | None = None) -> str:
    """The template text that continues ``history`` (ending right after its last end-of-turn marker) with the
    ``new`` messages and, if asked, the next assistant turn's generation prompt; see the module docstring."""
    if not history or history[-1].get("role") != "assistant":
        raise ValueError("continuation: history must end with the assistant turn the policy sampled")
    if not new and not add_generation_prompt:
        return ""
    marker, tail = _turn_close(tokenizer, tools)
    for base in (list(history), *_DUMMIES):
        try:
            head = _cut_after_last_turn(tokenizer, base, tools, marker, tail)
            full = render_messages(tokenizer, [*base, *new], add_generation_prompt=add_generation_prompt,
                                   tools=tools)
        except ChatTemplateError:
            continue
        except Exception:  # a dummy the template refuses (no system role): try the next one
            if base is history:
                raise
            continue
        if full.startswith(head):
            return full[len(head):]
    raise ChatTemplateError(
        "the chat template is not prefix-preserving: rendering the conversation with new messages changes the "
        "text before them, even after a fixed dummy conversation; it cannot be continued token-in/token-out")


def is_prefix_preserving(tokenizer: Any, history: Sequence[Message], new: Sequence[Message], *,
                         tools: list[dict[str, Any]] | None = None) -> bool:
    """Whether rendering ``history + new`` keeps the rendering of ``history`` (up to its last end-of-turn
    marker) as its prefix; when False, :func:`continuation_text` renders ``new`` after a dummy conversation."""
    marker, tail = _turn_close(tokenizer, tools)
    head = _cut_after_last_turn(tokenizer, history, tools, marker, tail)
    return render_messages(tokenizer, [*history, *new], add_generation_prompt=False, tools=tools).startswith(head)


def continuation_tokens(tokenizer: Any, history: list[Message], new: list[Message], *, chat_template: bool,
                        add_generation_prompt: bool = True, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids to append (``loss_mask`` 0) after an episode whose tokens render ``history`` (its last
    assistant turn exactly as sampled, closed by :func:`closing_tokens`) so that it continues with the ``new``
    messages (user / tool / other agents) and, with ``add_generation_prompt``, the next assistant turn's
    generation prompt. Without a chat template: the new messages' contents, concatenated, encoded with
    ``add_special_tokens=False``. ``tools``: the schemas the prompt was rendered with (the same ones)."""
    if not chat_template:
        return _encode(tokenizer, "".join(str(m.get("content", "")) for m in new))
    return _encode(tokenizer, continuation_text(tokenizer, history, new, add_generation_prompt=add_generation_prompt,
                                                tools=tools))
