"""Config of trainer ``reasoner_critic`` (dual-model verbal reflection, :mod:`llmrl.rl.reasoner_critic`): the
``reflect`` section and the root :class:`ReasonerCriticRoot`. Imports nothing heavy (the trainer registry lists
roots without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from llmrl.core.config import doc, requirement
from llmrl.train.config import EvalConfig, OptimConfig, RootBase, SFTConfig, shared, trainer_field


@dataclass
class ReflectConfig:
    """``reflect``: the critic's data and training, and the Reasoner–Critic loop (docs/agents.md)."""

    rounds: int = doc("critic rounds of the loop at evaluation (the paper: about 2); held-out accuracy is reported "
                      "after 0, 1, ..., rounds of them", 2, ge=0)
    pairs: int = doc("training questions made into contrastive pairs: chosen = the task's demonstration, rejected = "
                     "its sloppy wrong_demonstration. Critic examples: chosen -> [STOP], rejected -> the reflection "
                     "at the first step where the two diverge; reasoner revision examples (question, rejected path, "
                     "reflection -> chosen) where they diverge", 2000, ge=1)
    self_pairs: int = doc("rejected paths sampled per pair question from the SFT-trained reasoner (at "
                          "rollout.temperature), each paired with the chosen path for more critic examples; 0 = the "
                          "sloppy teacher's paths only", 0, ge=0)
    self_revision_steps: int = doc("with self_pairs: after sampling them, this many more reasoner SFT steps on its data "
                                   "plus revision examples from its own sampled paths that diverge (question, path, "
                                   "reflection -> chosen), so it also learns to act on reflections about its own "
                                   "errors; 0 = none", 0, ge=0)
    critic_steps: int | None = doc("SFT steps of the critic (batch size, lr, schedule of sft); null = sft.steps", None,
                                   ge=1)
    critic_max_new_tokens: int = doc("longest reflection the critic writes (tokens)", 16, ge=1)
    sep: str = doc("between the steps of a rationale (the task's format; arithmetic style steps: ',')", ",")
    answer_mark: str = doc("before the answer at the end of a rationale (arithmetic style steps: '#')", "#")

    def validate(self) -> None:
        need = requirement("reflect")
        need(bool(self.sep) and bool(self.answer_mark) and self.sep != self.answer_mark, "sep",
             f"sep and answer_mark must be two different non-empty strings, got {self.sep!r}, {self.answer_mark!r}")
        need(not self.self_revision_steps or self.self_pairs > 0, "self_revision_steps",
             "needs reflect.self_pairs > 0 (the reasoner's sampled paths it revises)")


@dataclass
class ReasonerCriticRoot(RootBase):
    """The root of trainer ``reasoner_critic``: the reasoner's SFT (``sft``; its data adds the revision examples),
    the critic's (``reflect``) and the held-out loop evaluation (``eval``); ``steps`` is not read."""

    trainer: str = trainer_field("reasoner_critic")
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    reflect: ReflectConfig = doc("Reasoner-Critic: contrastive critic data, critic SFT, the loop (trainer: "
                                 "reasoner_critic)", factory=ReflectConfig)

    def validate(self) -> Self:
        self.validate_shared()
        self.reflect.validate()
        need = requirement("sft")  # sft.steps > 0 is checked when the run starts (the root's defaults stay valid)
        need(self.sft.source == "demonstrations" and not self.sft.data_file, "source",
             "trainer reasoner_critic builds its SFT data from the task's demonstrations (sft.source=demonstrations, "
             "no sft.data_file)")
        return self
