"""The one loss-aggregation function: per-token values [B, T] + mask [B, T] -> scalar.

Every loss term in llmrl (policy loss, KL term, entropy bonus, ...) is reduced with :func:`aggregate`.

Gradient accumulation. With ``N_tok`` / ``N_seq`` left at their defaults the counts are those of the
tensors passed in. When one minibatch is split into micro-batches, pass the GLOBAL counts of the whole
minibatch (``num_tokens = mask_full.sum()``, ``num_seqs = B_full``) to every micro-batch call: every
mode is then a sum of per-token (or per-sequence) terms divided by a constant, so the sum of the
micro-batch values equals the full-batch value exactly, and so do the gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "constant")
"""Valid values of the ``mode`` argument of :func:`aggregate`."""


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_seqs: float | Tensor | None = None,
    num_tokens: float | Tensor | None = None,
    constant: float | None = None,
) -> Tensor:
    """Reduce per-token ``values`` [B, T] to a scalar over the tokens where ``mask`` [B, T] is 1.

    With m the mask, N_tok = ``num_tokens`` (default Σ m) and N_seq = ``num_seqs`` (default B):

    - ``"token-mean"``:          Σ_{b,t} v·m / N_tok                       (every token weighs the same)
    - ``"seq-mean-token-sum"``:  Σ_b (Σ_t v·m) / N_seq
    - ``"seq-mean-token-mean"``: Σ_b (Σ_t v·m / Σ_t m) / N_seq             (every sequence weighs the same)
    - ``"constant"``:            Σ_{b,t} v·m / (N_seq · constant)          (Dr. GRPO; ``constant`` is
      typically the maximum response length and is required for this mode)

    A sequence with an empty mask contributes 0 in ``seq-mean-token-mean`` (its length is clamped to 1)
    but is still counted in the default N_seq = B. An all-empty mask gives 0 in ``token-mean`` (the
    default N_tok is clamped to 1). Values under mask 0 are ignored, even inf/NaN. No ``.item()`` is
    called; the counts may be tensors.

    Args:
        values: [B, T] per-token values (e.g. per-token loss).
        mask: [B, T] float mask, 1 = token to aggregate.
        mode: one of :data:`AGG_MODES`.
        num_seqs: N_seq; pass the whole minibatch's sequence count when aggregating a micro-batch.
        num_tokens: N_tok; pass the whole minibatch's Σ mask when aggregating a micro-batch.
        constant: the normaliser of mode ``"constant"`` (> 0).

    Returns:
        0-d tensor.
    """
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"aggregate expects values and mask of the same shape [B, T]; got "
            f"{tuple(values.shape)} and {tuple(mask.shape)}"
        )
    mask = mask.to(values.dtype)
    vm = torch.where(mask > 0, values * mask, 0.0)  # [B, T] v·m; inf/NaN under mask 0 must not leak
    n_seqs = values.shape[0] if num_seqs is None else num_seqs
    if mode == "token-mean":
        n_tok = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
        return vm.sum() / n_tok
    if mode == "seq-mean-token-sum":
        return vm.sum() / n_seqs
    if mode == "seq-mean-token-mean":
        per_seq = vm.sum(-1) / mask.sum(-1).clamp(min=1)  # [B]
        return per_seq.sum() / n_seqs
    if mode == "constant":
        if constant is None or constant <= 0:
            raise ValueError(
                f"aggregate mode 'constant' needs constant > 0 (e.g. the max response length); "
                f"got {constant!r}"
            )
        return vm.sum() / (n_seqs * constant)
    raise ValueError(f"unknown aggregation mode {mode!r}; valid: {', '.join(AGG_MODES)}")
