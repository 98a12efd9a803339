"""Config of the RL trainers: the sections algorithm (algo), PPO value model (critic) and DVPO's global value
model (gvm), and the roots of trainers rl (:class:`RLRoot`), dvpo (:class:`DVPORoot`: rl + gvm) and dvpo_value
(:class:`DVPOValueRoot`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from llmrl.core.config import ConfigError, doc, requirement
from llmrl.train.config import EvalConfig, OptimConfig, RootBase, SFTConfig, shared, trainer_field

SHAPER_RESERVED = ("ref_rewards", "stats")
"""The keywords every reward shaper gets from the loop (:data:`llmrl.rewards.shaping.RESERVED`; a test keeps
them equal), not settable in ``algo.shaping_options``."""


@dataclass
class RolloutCorrectionConfig:
    """``algo.rollout_correction``: the sampler/trainer log-prob mismatch (llmrl.algos.rollout_correction)."""

    mode: Literal["none", "tis", "mis", "mis_seq"] = doc(
        "weight each token's policy loss by w = exp(logp_trainer - logp_sampler): none; tis: min(w, cap); mis: 0 "
        "where w is outside [lower, cap]; mis_seq: 0 on sequences whose geometric-mean w is outside [lower, cap]. "
        "Needs algo.recompute_logprobs", "none")
    cap: float = doc("C: tis truncates w at C; mis / mis_seq mask w > C", 2.0, ge=1)
    lower: float | None = doc("mis / mis_seq: also mask w < lower (0 = only above cap); null = 1/cap", None, ge=0)
    keep: Literal["one", "ratio"] = doc("mis / mis_seq: weight of a kept token: one (rejection, verl's rollout_rs) "
                                        "or ratio (w, or the sequence's geometric-mean w)", "one")
    threshold: float = doc("rollout/logp_diff_frac counts tokens with |logp_trainer - logp_sampler| > threshold", 0.1,
                           gt=0)

    def validate(self, recompute: bool) -> None:
        need = requirement("algo.rollout_correction")

        need(self.lower is None or self.lower <= self.cap, "lower", f"must be <= cap ({self.cap}), got {self.lower}")
        need(self.mode == "none" or recompute, "mode",
             f"{self.mode} needs algo.recompute_logprobs=true (the weights compare the trainer's log-probs before the "
             "update with the sampler's)")


@dataclass
class AlgoConfig:
    advantage: str = doc("advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, remax, reinforce, gae "
                         "(with a critic)", "grpo")
    advantage_options: dict[str, Any] = doc("keyword options of the estimator", factory=dict)
    loss: str = doc("policy loss: ppo_clip or gspo", "ppo_clip")
    loss_options: dict[str, Any] = doc("keyword options of the loss (eps_low, eps_high, dual_clip...)", factory=dict)
    loss_agg: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "constant"] = doc(
        "token-mean, seq-mean-token-sum, seq-mean-token-mean or constant", "token-mean")
    agg_constant: float | None = doc("normaliser for loss_agg=constant; null = max_new_tokens", None, gt=0)
    kl_coef: float = doc("KL-to-reference coefficient (0 = no reference model)", 0.0, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = doc("k1, k2 or k3", "k3")
    kl_in_reward: bool = doc("fold -kl_coef*KL into the token rewards instead of the loss", False)
    entropy_coef: float = doc("entropy bonus coefficient", 0.0)
    epochs: int = doc("passes over each rollout batch", 1, ge=1)
    minibatches: int = doc("optimizer steps per epoch (the batch is split into this many)", 1, ge=1)
    micro_batch_size: int = doc("sequences per forward/backward (gradient accumulation); 0 = the largest that fits "
                                "optim.memory_budget_gb (on a GPU the whole minibatch when it fits; on a CPU at "
                                "most 512 MiB of activations: docs/memory.md)", 0, ge=0)
    recompute_logprobs: bool = doc("recompute old log-probs with a forward pass instead of using the sampler's", False)
    reward_failure_value: float = doc("reward given when a reward function raises or returns NaN", 0.0)
    kl_target: float | None = doc("adaptive KL (Ziegler et al.): target of the batch mean of each sequence's "
                                  "token-mean KL; beta starts at kl_coef; null = fixed kl_coef", None, gt=0)
    kl_horizon: int = doc("adaptive KL: beta *= 1 + clip(KL/kl_target - 1, -0.2, 0.2) * B / kl_horizon per step", 10000,
                          ge=1)
    sequence_reward: bool = doc("put the sequence score on its last token; false = token rewards are only "
                                "-kl_coef*KL (DVPO, with a frozen value model)", True)
    reward_model: str | None = doc("ScalarHeadModel directory scoring prompt+completion+EOS instead of the task's "
                                   "reward functions (same tokenizer as the policy); null = the task's rewards", None)
    shaping: str | None = doc("reward shaper applied to the sequence score before it goes on the last token: par, "
                              "centered, lsc, meanstd, clip, minmax, ceil, vanilla; null = none", None)
    shaping_options: dict[str, Any] = doc("keyword options of the shaper (par: k; lsc: percentile_z, unbiased; "
                                          "ceil: c)", factory=dict)
    reference_samples: int = doc("shapers par/centered/lsc: reference responses per prompt, sampled once from the "
                                 "initial (SFT) policy", 10, ge=1)
    length_penalty: dict[str, Any] | None = doc("PAR length penalty before shaping, e.g. {threshold: 300, coef: 0.01}: "
                                                "score -= coef*max(tokens - threshold, 0); null = off", None)
    rollout_correction: RolloutCorrectionConfig = doc("sampler/trainer log-prob mismatch: metrics rollout/* every "
                                                      "step, and TIS / MIS importance weights",
                                                      factory=RolloutCorrectionConfig)

    def validate(self) -> None:
        """Registered names and their options (estimator, loss, shaper) and the cross-field checks of the reward
        pipeline (length penalty, adaptive KL, remax)."""
        from llmrl.core.registry import check_options, declared

        need = requirement("algo")
        # names and signatures read without importing torch (declared: the live registries once imported)
        ADVANTAGES = declared("llmrl.algos.advantages", "ADVANTAGES")
        POLICY_LOSSES = declared("llmrl.algos.losses", "POLICY_LOSSES")
        SHAPERS = declared("llmrl.rewards.shaping", "SHAPERS")
        adv = ADVANTAGES.get(self.advantage) if self.advantage in ADVANTAGES else None
        need(adv is not None, "advantage", f"unknown estimator {self.advantage!r}; valid: {ADVANTAGES.names()}")
        loss = POLICY_LOSSES.get(self.loss) if self.loss in POLICY_LOSSES else None
        need(loss is not None, "loss", f"unknown loss {self.loss!r}; valid: {POLICY_LOSSES.names()}")
        check_options(adv, self.advantage_options, "algo.advantage_options",
                      reserved=("group_ids", "baseline", "turn_ids"))
        check_options(loss, self.loss_options, "algo.loss_options")
        if self.shaping is not None:
            need(self.shaping in SHAPERS, "shaping", f"unknown shaper {self.shaping!r}; valid: {SHAPERS.names()}")
            try:
                check_options(SHAPERS.get(self.shaping), self.shaping_options, "algo.shaping_options",
                              reserved=SHAPER_RESERVED)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        need(not self.shaping_options or self.shaping is not None, "shaping_options", "set algo.shaping too")
        lp = self.length_penalty or {}
        need(set(lp) <= {"threshold", "coef"}, "length_penalty", f"keys are threshold and coef; got {sorted(lp)}")
        need(self.kl_target is None or (self.kl_target > 0 and self.kl_coef > 0), "kl_target",
             "must be > 0 and needs algo.kl_coef > 0 (the initial beta)")
        need(self.advantage != "remax" or not (self.reward_model or self.shaping or self.length_penalty), "advantage",
             "remax scores its greedy baseline with the task's rewards: not combinable with reward_model, shaping or "
             "length_penalty")
        self.rollout_correction.validate(self.recompute_logprobs)


@dataclass
class CriticConfig:
    enabled: bool | None = doc("train/use a value model (critic); null = exactly when algo.advantage is gae", None)
    path: str | None = doc("ScalarHeadModel (or causal LM) directory to start the critic from; null = a copy of the "
                           "policy's weights (after any SFT warm start) with a fresh value head", None)
    share_backbone: bool = doc("value head on the policy's own transformer: one model in memory, the loss is "
                               "policy loss + vf_coef * value loss with one optimizer", False)
    lr: float = doc("AdamW learning rate of the critic (separate model; warm-up steps of a shared head)", 5e-6, gt=0)
    grad_clip: float = doc("max gradient norm of the critic's updates; 0 = off", 1.0, ge=0)
    vf_coef: float = doc("weight of the value loss (the critic's own loss, or its share of the joint loss)", 1.0, gt=0)
    value_clip: float | None = doc("clip the new values to old +- value_clip in the value loss; null = no clip", 0.2,
                                   gt=0)
    warmup_steps: int = doc("RL steps at the start in which only the critic is trained (the policy is not updated)", 0,
                            ge=0)
    frozen: bool = doc("never update the critic (DVPO's global value model); needs path", False)
    micro_batch_size: int = doc("sequences per critic forward/backward; 0 = algo.micro_batch_size (both 0: the "
                                "policy's planned micro-batch)", 0, ge=0)

    def validate(self, cfg: RLRoot) -> None:
        need = requirement("critic")

        gae = cfg.algo.advantage == "gae"
        need(self.enabled is None or self.enabled == gae, "enabled",
             "a critic is used exactly with algo.advantage=gae (set both, or leave enabled null)")
        need(not self.frozen or bool(self.path) or cfg.trainer == "dvpo", "frozen",
             "a frozen critic needs critic.path (a trained value model, e.g. from trainer: dvpo_value)")
        need(not self.share_backbone or not (self.frozen or self.path or cfg.model.lora.enabled), "share_backbone",
             "cannot be combined with frozen, path or model.lora")
        need(cfg.algo.sequence_reward or gae, "enabled",
             "algo.sequence_reward=false leaves only the KL in the reward: it needs a value model (advantage gae)")


@dataclass
class GVMConfig:
    pairs_file: str | None = doc("JSONL/parquet of preference pairs (prompt, chosen, rejected); null = pairs built "
                                 "from the task (chosen = demonstration, rejected = its wrong_demonstration)", None)
    num_pairs: int = doc("pairs_file null: training prompts turned into pairs (+ eval_pairs more; a prompt whose "
                         "wrong demonstration is in fact right gives none)", 2000, ge=1)
    eval_pairs: int = doc("pairs held out to report the value model's pair accuracy (at most a fifth)", 100, ge=0)
    reward_model: str | None = doc("label each completion with this reward model's score instead of +1 / -1", None)
    steps: int = doc("optimizer steps of value-model training", 200, ge=0)
    batch_size: int = doc("pairs per step (2x sequences)", 16, ge=1)
    micro_batch_size: int = doc("sequences per forward/backward; 0 = the whole step", 0, ge=0)
    lr: float = doc("AdamW learning rate", 1.4e-5, gt=0)
    gamma: float = doc("GAE discount of the value targets", 1.0, ge=0, le=1)
    lam: float = doc("GAE lambda of the value targets", 0.95, ge=0, le=1)
    max_length: int = doc("longest prompt + completion in tokens", 512)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens", 256)
    output: str | None = doc("where the value model is saved; null = <output_dir>/value_model", None)

    def validate(self) -> None:
        need = requirement("gvm")

        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")


@dataclass
class RLRoot(RootBase):
    """The root of trainer ``rl`` (policy-gradient RL: GRPO, RLOO, REINFORCE++, PPO...)."""

    algo: AlgoConfig = doc("advantage, loss and update schedule", factory=AlgoConfig)
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    critic: CriticConfig = doc("value model of PPO (advantage gae) and DVPO", factory=CriticConfig)
    RL_LOOP: ClassVar[bool] = True

    def validate(self) -> Self:
        self.validate_shared()
        r, need = self.rollout, requirement("rollout")
        need(not r.async_ or self.algo.recompute_logprobs, "async",
             "needs algo.recompute_logprobs=true: a sample is up to one policy version stale, so the trainer "
             "recomputes the old log-probs under the policy it trains (algo.rollout_correction: tis / mis weight "
             "them against the sampler's)")
        need(not r.async_ or r.backend != "vllm" or (self.ray.enabled and self.ray.rollout_workers > 0), "async",
             "with backend vllm needs the Ray rollout workers (ray.enabled, ray.rollout_workers > 0): the "
             "in-process background generator runs on a copy of the policy, not on a second vLLM engine")
        t = self.rollout.temperature
        requirement("rollout")(t > 0, "temperature", f"must be > 0 for RL (the policy's log-probs are taken at the "
                                                     f"sampling temperature; 0 = greedy only samples), got {t!r}")
        self.algo.validate()
        self.critic.validate(self)
        return self


_GVM_HELP = "DVPO's global value model, trained offline on preference pairs (trainers dvpo_value, dvpo)"


@dataclass
class DVPORoot(RLRoot):
    """The root of trainer ``dvpo``: the RL run with a frozen value model, trained first from ``gvm``."""

    trainer: str = trainer_field("dvpo")
    gvm: GVMConfig = doc(_GVM_HELP, factory=GVMConfig)

    def validate(self) -> Self:
        super().validate()
        self.gvm.validate()
        return self


@dataclass
class DVPOValueRoot(RootBase):
    """The root of trainer ``dvpo_value``: only the global value model (from the policy after the SFT warm start)."""

    trainer: str = trainer_field("dvpo_value")
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    gvm: GVMConfig = doc(_GVM_HELP, factory=GVMConfig)

    def validate(self) -> Self:
        self.validate_shared()
        self.gvm.validate()
        return self
