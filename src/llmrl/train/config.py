"""The run configuration: one typed dataclass per section, documented field by field.

``llmrl config`` prints every key with its default and help text.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrl.train.config_critic import CriticConfig, GVMConfig
from llmrl.train.config_pref import MixConfig, OnlineConfig, PrefConfig, RMConfig
from llmrl.train.configbase import ConfigError, apply_overrides, doc, from_dict, read_yaml, requirement


@dataclass
class TinyModelConfig:
    arch: str = doc("architecture of the built-in tiny model: llama or qwen2", "llama")
    hidden_size: int = doc("hidden size", 128)
    num_layers: int = doc("number of transformer layers", 4)
    num_heads: int = doc("attention heads", 4)
    num_kv_heads: int | None = doc("key/value heads (GQA); null = num_heads", None)
    intermediate_size: int = doc("MLP inner size", 512)
    max_position_embeddings: int = doc("longest sequence the model supports", 512)


@dataclass
class LoraConfig:
    enabled: bool = doc("train LoRA adapters (peft) instead of all weights; the reference = adapters off", False)
    r: int = doc("LoRA rank", 8)
    alpha: int = doc("LoRA alpha", 16)
    dropout: float = doc("LoRA dropout", 0.0)
    target_modules: list[str] | None = doc("module names to adapt; null = peft's default for the arch", None)


@dataclass
class ModelConfig:
    path: str | None = doc("local Hugging Face model directory; null = build the tiny model offline", None)
    tiny: TinyModelConfig = doc("the built-in tiny model (used when path is null)", factory=TinyModelConfig)
    dtype: str = doc("float32, bfloat16, float16 or auto", "float32")
    chat_template: bool | None = doc("use the tokenizer's chat template; null = when it has one", None)
    lora: LoraConfig = doc("LoRA options", factory=LoraConfig)


@dataclass
class TaskConfig:
    name: str = doc("registered task name (llmrl tasks list)", "arithmetic")
    options: dict[str, Any] = doc("keyword options of the task", factory=dict)
    train_size: int = doc("number of distinct generated training prompts", 2000)
    test_size: int = doc("number of held-out prompts for evaluation", 200)
    train_file: str | None = doc("JSONL of samples to train on instead of generated ones", None)
    test_file: str | None = doc("JSONL of held-out samples instead of generated ones", None)
    data_seed: int = doc("seed of the task generator", 0)


@dataclass
class RolloutConfig:
    prompts_per_step: int = doc("prompts per RL step", 16)
    samples_per_prompt: int = doc("samples per prompt (the group size)", 8)
    max_new_tokens: int = doc("longest completion", 32)
    temperature: float = doc("sampling temperature; the policy log-probs use the same temperature", 1.0)
    top_p: float = doc("nucleus sampling threshold", 1.0)
    top_k: int = doc("top-k sampling, 0 = off", 0)
    stop: list[str] = doc("stop strings (EOS always stops)", factory=list)
    dynamic_sampling: bool = doc("DAPO: drop groups whose rewards are all equal and refill", False)
    max_sampling_rounds: int = doc("dynamic sampling: most generation rounds per step", 4)
    overlong_filter: bool = doc("DAPO: truncated samples get no loss", False)
    overlong_buffer: int = doc("DAPO soft overlong penalty buffer length in tokens; 0 = off", 0)
    overlong_penalty: float = doc("DAPO soft overlong penalty at the full length", 1.0)
    backend: str = doc("generator backend: kvcache (ours) or hf (model.generate)", "kvcache")
    env: str | None = doc("multi-turn environment (registered name, e.g. retry); null = single turn", None)
    env_options: dict[str, Any] = doc("keyword options of the environment", factory=dict)
    max_turns: int = doc("policy turns per episode when an environment is set", 2)


@dataclass
class AlgoConfig:
    advantage: str = doc("advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, remax, reinforce, gae "
                         "(with a critic)", "grpo")
    advantage_options: dict[str, Any] = doc("keyword options of the estimator", factory=dict)
    loss: str = doc("policy loss: ppo_clip or gspo", "ppo_clip")
    loss_options: dict[str, Any] = doc("keyword options of the loss (eps_low, eps_high, dual_clip...)", factory=dict)
    loss_agg: str = doc("token-mean, seq-mean-token-sum, seq-mean-token-mean or constant", "token-mean")
    agg_constant: float | None = doc("normaliser for loss_agg=constant; null = max_new_tokens", None)
    kl_coef: float = doc("KL-to-reference coefficient (0 = no reference model)", 0.0)
    kl_estimator: str = doc("k1, k2 or k3", "k3")
    kl_in_reward: bool = doc("fold -kl_coef*KL into the token rewards instead of the loss", False)
    entropy_coef: float = doc("entropy bonus coefficient", 0.0)
    epochs: int = doc("passes over each rollout batch", 1)
    minibatches: int = doc("optimizer steps per epoch (the batch is split into this many)", 1)
    micro_batch_size: int = doc("sequences per forward/backward (gradient accumulation); 0 = whole minibatch", 0)
    recompute_logprobs: bool = doc("recompute old log-probs with a forward pass instead of using the sampler's", False)
    reward_failure_value: float = doc("reward given when a reward function raises or returns NaN", 0.0)
    kl_target: float | None = doc("adaptive KL (Ziegler et al.): target of the batch mean of each sequence's "
                                  "token-mean KL; beta starts at kl_coef; null = fixed kl_coef", None)
    kl_horizon: int = doc("adaptive KL: beta *= 1 + clip(KL/kl_target - 1, -0.2, 0.2) * B / kl_horizon per step", 10000)
    sequence_reward: bool = doc("put the sequence score on its last token; false = token rewards are only "
                                "-kl_coef*KL (DVPO, with a frozen value model)", True)
    reward_model: str | None = doc("ScalarHeadModel directory scoring prompt+completion+EOS instead of the task's "
                                   "reward functions (same tokenizer as the policy); null = the task's rewards", None)
    shaping: str | None = doc("reward shaper applied to the sequence score before it goes on the last token: par, "
                              "centered, lsc, meanstd, clip, minmax, ceil, vanilla; null = none", None)
    shaping_options: dict[str, Any] = doc("keyword options of the shaper (par: k; lsc: percentile_z, unbiased; "
                                          "ceil: c)", factory=dict)
    reference_samples: int = doc("shapers par/centered/lsc: reference responses per prompt, sampled once from the "
                                 "initial (SFT) policy", 10)
    length_penalty: dict[str, Any] | None = doc("PAR length penalty before shaping, e.g. {threshold: 300, coef: 0.01}: "
                                                "score -= coef*max(tokens - threshold, 0); null = off", None)


@dataclass
class OptimConfig:
    lr: float = doc("AdamW learning rate", 1e-5)
    weight_decay: float = doc("AdamW weight decay", 0.0)
    betas: list[float] = doc("AdamW betas", factory=lambda: [0.9, 0.999])
    eps: float = doc("AdamW epsilon", 1e-8)
    grad_clip: float = doc("max gradient norm; 0 = off", 1.0)
    warmup_steps: int = doc("linear warm-up optimizer steps", 0)
    schedule: str = doc("constant or cosine (after warm-up)", "constant")
    max_bad_steps: int = doc("abort after this many consecutive non-finite loss/gradient steps", 3)


@dataclass
class EvalConfig:
    every: int = doc("evaluate every N RL steps (0 = only at start and end)", 10)
    size: int | None = doc("held-out prompts used (null = all of task.test_size)", None)
    pass_k: list[int] = doc("k values for pass@k (sampled, unbiased estimator)", factory=lambda: [1, 4])
    samples: int = doc("samples per prompt for pass@k; 0 = greedy metrics only", 4)
    temperature: float = doc("temperature of the pass@k samples", 1.0)
    max_new_tokens: int | None = doc("null = rollout.max_new_tokens", None)
    batch_size: int = doc("prompts per generation call", 128)


@dataclass
class SFTConfig:
    steps: int = doc("SFT optimizer steps before RL (0 = no warm start)", 0)
    batch_size: int = doc("sequences per SFT step", 32)
    lr: float = doc("SFT learning rate", 1e-3)
    warmup_steps: int = doc("SFT warm-up steps", 20)
    schedule: str = doc("constant or cosine", "cosine")
    num_examples: int = doc("demonstrations drawn from the task's training prompts", 2000)
    noise: float = doc("fraction of demonstrations replaced by the task's sloppy (wrong) ones", 0.0)
    data_file: str | None = doc("JSONL with prompt + completion (or answer) to train on instead", None)
    source: str = doc("demonstrations (the task's gold completions) or rejection (sample rejection_k completions "
                      "per training prompt, keep those the task accepts: SoRFT stage 1)", "demonstrations")
    rejection_k: int = doc("source=rejection: completions sampled per prompt (rollout temperature/length)", 8)
    teacher_path: str | None = doc("source=rejection: local HF model directory to sample from (same tokenizer "
                                   "family); null = the policy itself", None)


@dataclass
class Config:
    trainer: str = doc("training loop: rl (policy gradient) or another name in llmrl.train.trainers", "rl")
    seed: int = doc("seed of everything (sampling, shuffles, model init)", 0)
    output_dir: str = doc("where metrics, checkpoints and the final model go", "runs/default")
    steps: int = doc("RL steps (one rollout batch each)", 100)
    log_every: int = doc("print a log line every N steps", 1)
    threads: int = doc("torch CPU threads; 0 = torch's default", 0)
    progress: bool = doc("show a live progress bar", True)
    save_every: int = doc("checkpoint every N steps (0 = only at the end)", 0)
    keep_checkpoints: int = doc("how many recent checkpoints to keep", 2)
    model: ModelConfig = doc("policy model", factory=ModelConfig)
    task: TaskConfig = doc("task and data", factory=TaskConfig)
    rollout: RolloutConfig = doc("generation", factory=RolloutConfig)
    algo: AlgoConfig = doc("advantage, loss and update schedule", factory=AlgoConfig)
    optim: OptimConfig = doc("optimizer and learning-rate schedule", factory=OptimConfig)
    eval: EvalConfig = doc("held-out evaluation", factory=EvalConfig)
    sft: SFTConfig = doc("supervised warm start before RL", factory=SFTConfig)
    pref: PrefConfig = doc("offline preference optimisation (trainer: dpo)", factory=PrefConfig)
    critic: CriticConfig = doc("value model of PPO (advantage gae) and DVPO", factory=CriticConfig)
    gvm: GVMConfig = doc("DVPO's global value model, trained offline on preference pairs (trainers dvpo_value, "
                         "dvpo)", factory=GVMConfig)
    rm: RMConfig = doc("reward-model training (trainer: reward_model)", factory=RMConfig)
    mix: MixConfig = doc("mixing K single-objective policies (trainer: mpo)", factory=MixConfig)
    online: OnlineConfig = doc("online / iterative preference training (trainers online_dpo, onpo)",
                               factory=OnlineConfig)

    def validate(self) -> Config:
        from llmrl.algos import ADVANTAGES, AGG_MODES, POLICY_LOSSES
        from llmrl.core.registry import check_options
        from llmrl.tasks import TASKS
        from llmrl.train.trainers import TRAINERS

        need = requirement("")

        need(self.trainer in TRAINERS, "trainer", f"unknown trainer {self.trainer!r}; valid: {sorted(TRAINERS)}")
        adv = ADVANTAGES.get(self.algo.advantage) if self.algo.advantage in ADVANTAGES else None
        need(adv is not None, "algo.advantage", f"unknown estimator {self.algo.advantage!r}; valid: {ADVANTAGES.names()}")
        loss = POLICY_LOSSES.get(self.algo.loss) if self.algo.loss in POLICY_LOSSES else None
        need(loss is not None, "algo.loss", f"unknown loss {self.algo.loss!r}; valid: {POLICY_LOSSES.names()}")
        check_options(adv, self.algo.advantage_options, "algo.advantage_options", reserved=("group_ids", "baseline"))
        check_options(loss, self.algo.loss_options, "algo.loss_options")
        need(self.algo.loss_agg in AGG_MODES, "algo.loss_agg", f"must be one of {list(AGG_MODES)}")
        need(self.algo.kl_estimator in ("k1", "k2", "k3"), "algo.kl_estimator", "must be k1, k2 or k3")
        need(self.task.name in TASKS, "task.name", f"unknown task {self.task.name!r}; valid: {TASKS.names()}")
        need(self.optim.schedule in ("constant", "cosine"), "optim.schedule", "must be constant or cosine")
        need(self.sft.schedule in ("constant", "cosine"), "sft.schedule", "must be constant or cosine")
        need(self.rollout.backend in ("kvcache", "hf"), "rollout.backend", "must be kvcache or hf")
        need(self.rollout.samples_per_prompt >= 1, "rollout.samples_per_prompt", "must be >= 1")
        need(self.rollout.prompts_per_step >= 1, "rollout.prompts_per_step", "must be >= 1")
        need(self.algo.epochs >= 1 and self.algo.minibatches >= 1, "algo.epochs/minibatches", "must be >= 1")
        need(self.algo.micro_batch_size >= 0, "algo.micro_batch_size", "must be >= 0")
        need(0.0 <= self.sft.noise <= 1.0, "sft.noise", "must be in [0, 1]")
        need(self.sft.source in ("demonstrations", "rejection"), "sft.source", "must be demonstrations or rejection")
        need(self.sft.rejection_k >= 1, "sft.rejection_k", "must be >= 1")
        need(self.steps >= 0, "steps", "must be >= 0")
        self.pref.validate()
        _validate_rewards(self, need)
        self.critic.validate(self)
        self.gvm.validate()
        self.rm.validate()
        self.mix.validate()
        self.online.validate()
        return self


def _validate_rewards(cfg: Config, need: Any) -> None:
    """The reward pipeline of the RL loop: shaper name and options, length penalty, adaptive KL."""
    from llmrl.core.registry import check_options
    from llmrl.rewards.shaping import RESERVED, SHAPERS

    a = cfg.algo
    if a.shaping is not None:
        need(a.shaping in SHAPERS, "algo.shaping", f"unknown shaper {a.shaping!r}; valid: {SHAPERS.names()}")
        try:
            check_options(SHAPERS.get(a.shaping), a.shaping_options, "algo.shaping_options", reserved=RESERVED)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    need(not a.shaping_options or a.shaping is not None, "algo.shaping_options", "set algo.shaping too")
    need(a.reference_samples >= 1, "algo.reference_samples", "must be >= 1")
    lp = a.length_penalty or {}
    need(set(lp) <= {"threshold", "coef"}, "algo.length_penalty", f"keys are threshold and coef; got {sorted(lp)}")
    need(a.kl_target is None or (a.kl_target > 0 and a.kl_coef > 0), "algo.kl_target",
         "must be > 0 and needs algo.kl_coef > 0 (the initial beta)")
    need(a.kl_horizon >= 1, "algo.kl_horizon", "must be >= 1")
    need(a.advantage != "remax" or not (a.reward_model or a.shaping or a.length_penalty), "algo.advantage",
         "remax scores its greedy baseline with the task's rewards: not combinable with reward_model, shaping or "
         "length_penalty")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """Config from an optional YAML file (on top of ``base``) plus dotted overrides."""
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))  # overrides edit nested dicts in place
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    apply_overrides(data, list(overrides or []))
    try:
        cfg = from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
    return cfg.validate()


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


__all__ = ["Config", "ConfigError", "load_config", "field"]
