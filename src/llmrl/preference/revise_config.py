"""Config of trainer ``revise`` (ReVISE, arXiv 2502.14565; PAPERS.md §11): the ``revise`` section and the root
:class:`ReviseRoot`. Kept apart from :mod:`llmrl.preference.config` (no torch imported: ``llmrl config`` lists it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from llmrl.core.config import doc, requirement
from llmrl.train.config import EvalConfig, OptimConfig, RootBase, SFTConfig, shared, trainer_field


@dataclass
class ReviseConfig:
    token: str = doc("the special token that rejects an answer and starts a new one (added to the tokenizer and "
                     "embeddings after the SFT warm start)", "[refine]")
    prompts: int = doc("training prompts whose sampled answers make the preference pairs", 1000, ge=1)
    samples_per_prompt: int = doc("answers sampled per training prompt (rollout.temperature / max_new_tokens); "
                                  "distinct answers give one pair each", 4, ge=1)
    lam: float = doc("lambda: loss = SFT (per-token NLL of the chosen continuation) + lambda * DPO (the paper: "
                     "0.1)", 0.1, gt=0)
    beta: float = doc("DPO beta", 0.1, gt=0)
    batch_size: int = doc("pairs per optimizer step (each stage runs `steps` steps)", 64, ge=1)
    stages: list[str] = doc("stages in order: verify (correct y: y+[eos] over y+[refine]; wrong y: the reverse), "
                            "correct (wrong y: y+[refine]+gold+[eos] over y+[eos])",
                            factory=lambda: ["verify", "correct"])
    sft_answer: bool = doc("the SFT term of a correct answer's verify pair covers the answer too (x is the pair's "
                           "prompt, y+[eos] the chosen); false = only the decision token (x+y is the prompt). A "
                           "wrong answer is never imitated either way", True)
    replay_verify: bool = doc("the correct stage also trains on the verify pairs of correct answers (keeps "
                              "[eos] after them; off = the correction pairs only, as PAPERS.md §11 writes)", True)
    eval_samples: int = doc("answers sampled per held-out prompt for majority / confidence-aware voting "
                            "(eval.temperature)", 8, ge=1)
    eval_max_new_tokens: int = doc("token budget of a decoded trajectory (answers, [refine]s and EOS)", 16, ge=1)

    def validate(self) -> None:
        need = requirement("revise")
        need(bool(self.stages) and all(s in ("verify", "correct") for s in self.stages), "stages",
             f"a non-empty list of verify / correct, got {self.stages}")
        need(len(set(self.stages)) == len(self.stages), "stages", f"names a stage twice: {self.stages}")
        need(bool(self.token.strip()) and self.token == self.token.strip(), "token",
             f"a non-empty token without surrounding spaces, got {self.token!r}")


@dataclass
class ReviseRoot(RootBase):
    """The root of trainer ``revise``: SFT warm start, the [refine] token, verify / correct preference stages
    (SFT + lambda DPO), and plain vs refine-loop vs majority vs confidence-aware evaluation."""

    trainer: str = trainer_field("revise")
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    revise: ReviseConfig = doc("ReVISE: pairs, stages, loss weights, decoding eval (trainer: revise)",
                               factory=ReviseConfig)

    def validate(self) -> Self:
        self.validate_shared()
        self.revise.validate()
        need = requirement("model")
        need(not self.model.lora.enabled, "lora.enabled", "trainer revise trains the full model (the new token's "
                                                          "embedding row must train): set model.lora.enabled=false")
        return self


__all__ = ["ReviseConfig", "ReviseRoot"]
