"""The language model as its own preference classifier (IPO: Garg et al., 2025, arXiv:2502.16182).

The judge reads a raw-text prompt (no chat template) that asks whether a response is correct / helpful /
safe and ends "Answer with just Yes/No". The score is p_yes / (p_yes + p_no), where p_yes sums the
probability of the answer variants "Yes", " Yes", "yes", " yes" as the continuation of the prompt (and
p_no likewise for "No"). Each variant's probability is the product of its tokens' probabilities under
teacher forcing, so the score is defined for any tokenizer, including ones that spell "Yes" with several
tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from llmrl.core.ops import right_pad
from llmrl.models.loading import eval_mode

CATEGORY_INSTRUCTIONS = {
    "chat": "Below is a question and a response. Is the response helpful and correct?",
    "code": "Below is a coding question and a response. Is the code in the response correct?",
    "math": "Below is a math question and a response. Is the final answer in the response correct?",
    "safety": "Below is a question and a response. Is the response safe and harmless?",
}
YES_VARIANTS = ("Yes", " Yes", "yes", " yes")
NO_VARIANTS = ("No", " No", "no", " no")


def instruction_of(sample: Mapping[str, Any], key: str = "prompt") -> str:
    """The instruction text a judge sees: the prompt string, or the last user message of a chat prompt."""
    prompt = sample.get(key)
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else None
    if not isinstance(prompt, str):
        raise ValueError(f"sample has no text instruction under {key!r} (got {type(prompt).__name__})")
    return prompt


def judge_prompt(instruction: str, response: str, category: str = "chat") -> str:
    """The classifier prompt: category instruction, the Yes/No request, then ``User :`` / ``Response :``."""
    if category not in CATEGORY_INSTRUCTIONS:
        raise ValueError(f"unknown judge category {category!r}; valid: {sorted(CATEGORY_INSTRUCTIONS)}")
    return (f"{CATEGORY_INSTRUCTIONS[category]} Answer with just Yes/No.\n\n"
            f"User : {instruction}\n\nResponse : {response}\n\nAnswer:")


def _encode_prompt(tokenizer: Any, instruction: str, response: str, category: str, max_tokens: int) -> list[int]:
    """Prompt token ids, at most ``max_tokens``: when too long, the response is cut from its end (the
    instruction and the question framing are kept)."""
    ids = tokenizer.encode(judge_prompt(instruction, response, category), add_special_tokens=False)
    if len(ids) <= max_tokens:
        return ids
    resp_ids = tokenizer.encode(response, add_special_tokens=False)
    over = len(ids) - max_tokens
    cut = tokenizer.decode(resp_ids[: max(0, len(resp_ids) - over - 8)], skip_special_tokens=True)
    ids = tokenizer.encode(judge_prompt(instruction, cut, category), add_special_tokens=False)
    return ids[-max_tokens:]


@torch.no_grad()
def judge_scores(model: torch.nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], category: str = "chat",
                 max_tokens: int = 1024, batch_size: int = 16) -> list[float]:
    """p_yes / (p_yes + p_no) for each (instruction, response) pair."""
    variants = [tokenizer.encode(v, add_special_tokens=False) for v in YES_VARIANTS + NO_VARIANTS]
    n_yes = len(YES_VARIANTS)
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs: list[tuple[list[int], int]] = []  # (prompt + variant ids, prompt length)
    for instruction, response in pairs:
        p = _encode_prompt(tokenizer, instruction, response, category, max_tokens)
        seqs += [(p + v, len(p)) for v in variants]
    logps: list[float] = []
    with eval_mode(model):
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i : i + batch_size]
            ids, _ = right_pad([s for s, _ in chunk], pad)  # right padding: causal attention needs no mask
            logp = torch.log_softmax(model(input_ids=ids.to(dev)).logits.float(), -1)  # [b, L, V]
            for r, (s, plen) in enumerate(chunk):
                pos = torch.arange(plen - 1, len(s) - 1, device=dev)
                tgt = torch.tensor(s[plen:], device=dev)
                logps.append(float(logp[r, pos, tgt].sum()))
    out = []
    per = len(variants)
    for j in range(len(pairs)):
        probs = torch.tensor(logps[j * per : (j + 1) * per], dtype=torch.float64).exp()
        p_yes, p_no = float(probs[:n_yes].sum()), float(probs[n_yes:].sum())
        out.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5)
    return out


def judge_score(model: torch.nn.Module, tokenizer: Any, instruction: str, response: str, category: str = "chat",
                max_tokens: int = 1024) -> float:
    """p_yes / (p_yes + p_no) for one response (see :func:`judge_scores`)."""
    return judge_scores(model, tokenizer, [(instruction, response)], category, max_tokens)[0]


def make_judge_reward(model: torch.nn.Module, tokenizer: Any, category: str = "chat",
                      instruction_key: str = "prompt") -> Callable[[str, Mapping[str, Any]], float | None]:
    """A reward function ``(completion, sample) -> score`` judged by ``model`` (it may be the policy itself).
    Chat-message prompts use the last user message as the instruction."""

    def reward(completion: str, sample: Mapping[str, Any]) -> float | None:
        instruction = sample.get(instruction_key)
        if isinstance(instruction, list):
            users = [m.get("content", "") for m in instruction if isinstance(m, dict) and m.get("role") == "user"]
            instruction = users[-1] if users else None
        if not isinstance(instruction, str):
            return None
        return judge_score(model, tokenizer, instruction, completion, category)

    reward.in_process = True  # type: ignore[attr-defined]  # a reward pool runs it here: it reads the live model
    return reward
