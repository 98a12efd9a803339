"""Config sections of critic-based training: the PPO value model (critic) and DVPO's global value model (gvm)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmrl.train.configbase import doc, requirement

if TYPE_CHECKING:
    from llmrl.train.config import Config


@dataclass
class CriticConfig:
    enabled: bool | None = doc("train/use a value model (critic); null = exactly when algo.advantage is gae", None)
    path: str | None = doc("ScalarHeadModel (or causal LM) directory to start the critic from; null = a copy of the "
                           "policy's weights (after any SFT warm start) with a fresh value head", None)
    share_backbone: bool = doc("value head on the policy's own transformer: one model in memory, the loss is "
                               "policy loss + vf_coef * value loss with one optimizer", False)
    lr: float = doc("AdamW learning rate of the critic (separate model; warm-up steps of a shared head)", 5e-6)
    grad_clip: float = doc("max gradient norm of the critic's updates; 0 = off", 1.0)
    vf_coef: float = doc("weight of the value loss (the critic's own loss, or its share of the joint loss)", 1.0)
    value_clip: float | None = doc("clip the new values to old +- value_clip in the value loss; null = no clip", 0.2)
    warmup_steps: int = doc("RL steps at the start in which only the critic is trained (the policy is not updated)", 0)
    frozen: bool = doc("never update the critic (DVPO's global value model); needs path", False)
    micro_batch_size: int = doc("sequences per critic forward/backward; 0 = algo.micro_batch_size", 0)

    def validate(self, cfg: Config) -> None:
        need = requirement("critic")

        gae = cfg.algo.advantage == "gae"
        need(self.enabled is None or self.enabled == gae, "enabled",
             "a critic is used exactly with algo.advantage=gae (set both, or leave enabled null)")
        need(not self.frozen or bool(self.path) or cfg.trainer == "dvpo", "frozen",
             "a frozen critic needs critic.path (a trained value model, e.g. from trainer: dvpo_value)")
        need(not self.share_backbone or not (self.frozen or self.path or cfg.model.lora.enabled), "share_backbone",
             "cannot be combined with frozen, path or model.lora")
        need(self.lr > 0 and self.vf_coef > 0, "lr/vf_coef", "must be > 0")
        need(self.value_clip is None or self.value_clip > 0, "value_clip", "must be > 0 or null")
        need(self.warmup_steps >= 0 and self.micro_batch_size >= 0, "warmup_steps/micro_batch_size", "must be >= 0")
        need(cfg.algo.sequence_reward or gae, "enabled",
             "algo.sequence_reward=false leaves only the KL in the reward: it needs a value model (advantage gae)")


@dataclass
class GVMConfig:
    pairs_file: str | None = doc("JSONL/parquet of preference pairs (prompt, chosen, rejected); null = pairs built "
                                 "from the task (chosen = demonstration, rejected = its wrong_demonstration)", None)
    num_pairs: int = doc("pairs_file null: training prompts turned into pairs (+ eval_pairs more; a prompt whose "
                         "wrong demonstration is in fact right gives none)", 2000)
    eval_pairs: int = doc("pairs held out to report the value model's pair accuracy (at most a fifth)", 100)
    reward_model: str | None = doc("label each completion with this reward model's score instead of +1 / -1", None)
    steps: int = doc("optimizer steps of value-model training", 200)
    batch_size: int = doc("pairs per step (2x sequences)", 16)
    micro_batch_size: int = doc("sequences per forward/backward; 0 = the whole step", 0)
    lr: float = doc("AdamW learning rate", 1.4e-5)
    gamma: float = doc("GAE discount of the value targets", 1.0)
    lam: float = doc("GAE lambda of the value targets", 0.95)
    max_length: int = doc("longest prompt + completion in tokens", 512)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens", 256)
    output: str | None = doc("where the value model is saved; null = <output_dir>/value_model", None)

    def validate(self) -> None:
        need = requirement("gvm")

        need(self.steps >= 0 and self.eval_pairs >= 0 and self.micro_batch_size >= 0, "steps/eval_pairs",
             "must be >= 0")
        need(self.batch_size >= 1 and self.num_pairs >= 1 and self.lr > 0, "batch_size/num_pairs/lr", "must be > 0")
        need(0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0, "gamma/lam", "must be in [0, 1]")
        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")
