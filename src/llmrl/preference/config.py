"""Config of preference training: the sections reward models (rm), offline DPO family (pref), online / ONPO
(online) and policy mixing (mix), and the roots of trainers dpo (:class:`DPORoot`), online_dpo and onpo
(:class:`OnlineRoot`), reward_model (:class:`RewardModelRoot`) and mpo (:class:`MPORoot`: the rl root + mix)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from llmrl.core.config import ConfigError, doc, requirement
from llmrl.rl.config import RLRoot
from llmrl.train.config import EvalConfig, OptimConfig, RootBase, SFTConfig, shared, trainer_field


@dataclass
class RMPrivacyConfig:
    mechanism: Literal["none", "randomized_response", "user_dp"] = doc(
        "label privacy (AUP-RLHF): none, randomized_response (flip labels, debiased loss) or user_dp (per-user "
        "clipped gradients + Gaussian noise)", "none")
    epsilon: float = doc("target epsilon per user (per pair without a users column); randomized_response flips "
                         "with probability 1/(1+e^(epsilon/m)), m = most pairs of one user", 1.0, gt=0)
    delta: float = doc("user_dp: target delta", 1e-5, gt=0, lt=1)
    clip: float = doc("user_dp: L2 bound C on each user's average gradient", 1.0, gt=0)
    noise_multiplier: float | None = doc("user_dp: noise std / C; null = calibrate to (epsilon, delta)", None, gt=0)
    users_per_step: int = doc("user_dp: expected users per step (Poisson sampling, rate users_per_step/users)", 16,
                              ge=1)
    accountant: Literal["rdp", "zcdp"] = doc("user_dp: rdp (subsampled Gaussian, Renyi DP) or zcdp (no sampling "
                                             "credit)", "rdp")
    debias: bool = doc("randomized_response: train on the unbiased (debiased) loss", True)


@dataclass
class RMDistillConfig:
    teacher_path: str | None = doc("local HF model that samples (and judges) as the teacher; null = the policy", None)
    teacher_samples: int = doc("teacher responses per prompt", 10, ge=1)
    student_samples: int = doc("student (the policy) responses per prompt", 30, ge=0)
    prompts: int = doc("training prompts pseudo-labelled (held-out pairs: eval.size or task.test_size prompts)", 64,
                       ge=1)
    label: Literal["vote", "judge"] = doc("vote (majority answer via the task's parse) or judge (teacher's Yes/No "
                                          "probability)", "vote")
    vote_over: Literal["all", "teacher"] = doc("vote: majority over all responses or teacher responses only", "all")
    judge_category: Literal["chat", "code", "math", "safety"] = doc("judge: chat, code, math or safety", "chat")
    judge_threshold: float = doc("judge: score >= threshold labels a response good", 0.5, ge=0, le=1)
    max_pairs_per_prompt: int = doc("most (good, bad) pairs kept per prompt", 16, ge=1)


@dataclass
class RMConfig:
    source: Literal["file", "task", "distill"] = doc(
        "pairs from: file (train_file/test_file), task (chosen = demonstration, rejected = the task's "
        "wrong_demonstration) or distill (pseudo-labelled samples, arXiv:2502.19557)", "task")
    train_file: str | None = doc("source=file: JSONL, parquet, CSV or a datasets save_to_disk dir with "
                                                "prompt, chosen, rejected (+ user_id)", None)
    test_file: str | None = doc("source=file: held-out pairs; null = a seeded 10% of train_file", None)
    prompt_key: str = doc("column of the prompt", "prompt")
    chosen_key: str = doc("column of the preferred completion", "chosen")
    rejected_key: str = doc("column of the other completion", "rejected")
    user_key: str = doc("column naming the user (user-level privacy, personalised evaluation)", "user_id")
    max_length: int = doc("longest prompt + completion in tokens", 256)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens", 128)
    epochs: float = doc("passes over the training pairs (user_dp: expected passes over the users)", 1.0, gt=0)
    batch_size: int = doc("pairs per step (user_dp: pairs per forward within a user)", 16, ge=1)
    lr: float = doc("AdamW learning rate of the reward model", 1e-5, gt=0)
    max_steps: int = doc("stop after this many steps; 0 = no cap", 0, ge=0)
    reg_coef: float = doc("PAR Reg: add reg_coef*(r_chosen^2 + r_rejected^2) to the loss (PAR: 0.005)", 0.0, ge=0)
    user_conditioned: bool = doc("render the user id into the reward model's input (a baseline of arXiv:2502.19158)", False)
    eval_batch_size: int = doc("pairs per scoring forward in evaluation", 32, ge=1)
    privacy: RMPrivacyConfig = doc("label privacy", factory=RMPrivacyConfig)
    distill: RMDistillConfig = doc("distilled rewards (source=distill)", factory=RMDistillConfig)

    def validate(self) -> None:
        need = requirement("rm")

        need(self.source != "file" or bool(self.train_file), "train_file", "required with rm.source=file")
        need(self.source == "file" or not (self.train_file or self.test_file), "source",
             f"rm.train_file/test_file are only read with rm.source=file (got source={self.source!r})")
        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")


@dataclass
class MixConfig:
    policies: list[str] = doc("local model dirs of the K single-objective policies; empty = train one per objective "
                              "from the reference (the model section)", factory=list)
    objectives: list[str] = doc("reward components of the task, one policy trained per component (when policies is "
                                "empty; empty = all of the task's reward_functions()); with policies: their names",
                                factory=list)
    policy_steps: int = doc("RL steps for each single-objective policy (the rl loop with the run's settings)", 20,
                            ge=1)
    weights: list[float] | None = doc("fixed mixing weights lambda (one per policy, >= 0); null = max-min lambda by "
                                      "mirror descent", None)
    md_steps: int = doc("max-min lambda: mirror-descent steps T", 50, ge=1)
    md_samples: int = doc("max-min lambda: responses y ~ pi_ref per prompt (m)", 8, ge=1)
    md_prompts: int = doc("max-min lambda: training prompts per mirror-descent step", 4, ge=1)
    md_lr_c: float = doc("max-min lambda: step-size constant c, eta = c / sqrt(T)", 1.0, gt=0)

    def validate(self) -> None:
        need = requirement("mix")

        k = len(self.policies) or len(self.objectives)
        need(len(set(self.policies)) == len(self.policies), "policies", "lists a directory twice")
        need(len(set(self.objectives)) == len(self.objectives), "objectives", "lists a component twice")
        need(not (self.policies and self.objectives) or len(self.policies) == len(self.objectives), "objectives",
             f"with mix.policies, one name per policy ({len(self.policies)}), got {len(self.objectives)}")
        if self.weights is not None:
            need(all(w >= 0 for w in self.weights), "weights", f"must be >= 0, got {self.weights}")
            need(sum(self.weights) > 0, "weights", "must not all be 0")
            need(k == 0 or len(self.weights) == k, "weights",
                 f"{len(self.weights)} weight(s) for {k} {'policies' if self.policies else 'objectives'}")


@dataclass
class PrefConfig:
    loss_type: str = doc("preference loss: sigmoid (DPO), ipo, hinge, robust, simpo or dpop (docs/preference.md)",
                         "sigmoid")
    beta: float = doc("beta: inverse strength of the implicit KL to the reference (simpo: reward scale, ~2)", 0.1,
                      gt=0)
    loss_options: dict[str, Any] = doc("keyword options of the loss: label_smoothing (sigmoid=cDPO, robust, simpo), "
                                       "gamma_beta_ratio / gamma (simpo), lam (dpop)", factory=dict)
    rpo_alpha: float = doc("RPO: add rpo_alpha * per-token NLL of the chosen completion; 0 = off", 0.0, ge=0)
    average_logps: bool | None = doc("length-average completion log-probs before the loss; null = yes for ipo "
                                     "(as TRL) and simpo, no (sums) otherwise", None)
    train_file: str | None = doc("JSONL/parquet/CSV/datasets dir of prompt/chosen/rejected pairs; null = pairs "
                                 "built from the task (chosen = a correct demonstration, rejected = a wrong one)", None)
    test_file: str | None = doc("held-out pairs for preference metrics; null = from the task's test prompts when "
                                "pairs come from the task, else none", None)
    prompt_key: str = doc("column of the prompt (text or chat messages)", "prompt")
    chosen_key: str = doc("column of the preferred completion", "chosen")
    rejected_key: str = doc("column of the dispreferred completion", "rejected")
    on_error: Literal["raise", "skip"] = doc("pairs with identical or empty completions: raise or skip (counted)",
                                             "raise")
    max_length: int = doc("longest prompt + completion in tokens; completions are cut to fit", 512)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens (< max_length)", 256)
    batch_size: int = doc("pairs per optimizer step", 32, ge=1)
    micro_batch_size: int = doc("pairs per forward/backward (gradient accumulation); 0 = the most that fit "
                                "optim.memory_budget_gb (no-grad scoring: 0 = the whole batch)", 0, ge=0)
    epochs: float = doc("if > 0: train ceil(epochs * pairs / batch_size) steps instead of `steps`", 0.0, ge=0)
    pairs_from_task: int = doc("pairs built from the task's training prompts when train_file is null", 2000, ge=1)
    rejected_source: Literal["teacher", "policy"] = doc(
        "pairs from the task: rejected = teacher (the task's wrong_demonstration, else another prompt's "
        "demonstration) or policy (a wrong sample of the starting policy, SPIN-style; rollout.temperature / "
        "max_new_tokens)", "teacher")
    policy_samples: int = doc("rejected_source=policy: samples per prompt to find a wrong one in", 4, ge=1)
    eval_pairs: int = doc("most held-out pairs scored at each evaluation (0 = none)", 200, ge=0)
    precompute_ref_logps: bool = doc("score every pair with the reference once before training (no reference copy "
                                     "kept); false = a frozen copy scores each batch", True)
    cache_ref_logps: bool = doc("also save the precomputed reference log-probs to <output_dir>/ref_logps.pt "
                                "(reused on resume when the data and model settings match)", True)

    def validate(self) -> None:
        from llmrl.algos.pair_options import check_pair_options
        from llmrl.core.registry import check_options, declared

        need = requirement("pref")
        losses = declared("llmrl.algos.preference", "PREFERENCE_LOSSES")  # names and signatures, no torch
        need(self.loss_type in losses, "loss_type",
             f"unknown preference loss {self.loss_type!r}; valid: {losses.names()}")
        try:  # unknown or out-of-range options fail here, not mid-run
            check_options(losses.get(self.loss_type), self.loss_options, f"preference loss {self.loss_type!r}",
                          reserved=("beta",))
            check_pair_options(self.loss_type, self.beta, self.loss_options)
        except ValueError as exc:
            raise ConfigError(f"pref.loss_options: {exc}") from None
        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")


@dataclass
class OnlineConfig:
    iterations: int = doc("K rounds of sample -> rank -> pair -> train (trainers online_dpo and onpo)", 3, ge=1)
    prompts: int = doc("training prompts per iteration, rollout.samples_per_prompt completions each", 64, ge=1)
    source: Literal["reward", "reward_model", "judge", "pairwise_judge"] = doc(
        "what ranks completions: reward (the task's reward functions), reward_model (online.reward_model), judge "
        "(Yes/No probabilities, IPO arXiv:2502.16182) or pairwise_judge (A/B probabilities, a pairwise oracle P(y1 > y2))",
        "judge")
    judge_model: str | None = doc("judge / pairwise_judge: local HF model directory of the judge; null = the "
                                  "policy judges itself (self-rewarding, IPO)", None)
    self_judge: Literal["current", "initial"] = doc(
        "with judge_model null: the policy judging itself is the current iterate (current: self-rewarding, the "
        "judge moves with the policy) or a frozen copy of the starting policy (initial)", "current")
    judge_category: Literal["chat", "code", "math", "safety"] = doc(
        "judge: chat, code, math or safety (the question the judge answers)", "chat")
    judge_max_tokens: int = doc("judge prompts keep at most this many tokens", 1024, ge=8)
    judge_batch_size: int = doc("judge prompts per forward", 16, ge=1)
    reward_model: str | None = doc("source reward_model: the reward model directory (trainer reward_model)", None)
    pairing: Literal["best_worst", "clamp", "oracle_pairs"] = doc(
        "best_worst (one pair per prompt), clamp (CLaMP-DPO: every top x bottom fraction pair) or oracle_pairs "
        "(pairwise_judge labels consecutive sampled pairs)", "best_worst")
    min_margin: float = doc("best_worst: no pair when best - worst score <= min_margin (ties)", 0.0, ge=0)
    top_frac: float = doc("clamp: fraction of each prompt's completions taken as chosen (NotaGen: 0.1)", 0.1,
                          gt=0, le=0.5)
    bottom_frac: float = doc("clamp: fraction taken as rejected (NotaGen: 0.1)", 0.1, gt=0, le=0.5)
    reference_key: str | None = doc("clamp: sample column of ground-truth text(s); chosen completions more similar "
                                    "than max_similarity to one are dropped; null = no near-copy filter", None)
    max_similarity: float = doc("clamp: near-copy threshold on the similarity", 0.95, ge=0, le=1)
    similarity: Literal["ratio", "ngram"] = doc("clamp: ratio (difflib) or ngram (character-trigram cosine)", "ratio")
    ranking: Literal["soft", "hard"] = doc("pairwise_judge with best_worst/clamp: rank by soft (mean P(win)) or hard "
                                           "(win count) win rates", "soft")
    both_orders: bool = doc("pairwise_judge: ask both orders and average (cancels position bias, 2x calls)", True)
    oracle_label: Literal["threshold", "sample"] = doc(
        "oracle_pairs: threshold (winner: P > 1/2) or sample (winner ~ Bernoulli(P))", "threshold")
    reference: Literal["initial", "previous"] = doc(
        "online_dpo: the DPO reference, initial (the starting policy) or previous (the last iterate)", "initial")
    epochs: float = doc("passes over each iteration's pairs: ceil(epochs * pairs / pref.batch_size) steps, each "
                        "iteration with a fresh optimizer and optim's warm-up/schedule", 1.0, gt=0)
    eval_score: bool = doc("at each evaluation also log the source's mean score (score_mean) of eval.samples "
                           "completions per held-out prompt; pairwise_judge: win_rate vs the starting policy", True)
    eta: float = doc("onpo: mirror-descent step size eta (the paper: 1/eta = 0.01)", 100.0, gt=0)
    target: Literal["eta_over_2", "inv_2eta"] = doc(
        "onpo: regression target, eta_over_2 (eta/2) or inv_2eta (1/(2 eta)); the paper is ambiguous, "
        "docs/preference.md explains the default", "eta_over_2")

    def validate(self) -> None:
        need = requirement("online")

        need(self.source != "reward_model" or bool(self.reward_model), "reward_model", "required with source=reward_model")
        need(self.pairing != "oracle_pairs" or self.source == "pairwise_judge", "pairing",
             "oracle_pairs needs a pairwise oracle (source=pairwise_judge)")


@dataclass
class PrefAlgoConfig:
    """``algo`` of the preference trainers that score completions with the task's rewards (dpo: pairs with a
    policy-sampled rejected; online_dpo/onpo: ``online.source: reward``): of the RL algorithm section only this."""

    reward_failure_value: float = doc("reward given when a reward function raises or returns NaN", 0.0)


_ALGO_HELP = "the reward given when a task's reward function fails (the rest of algo is read by the RL trainers)"
_PREF_HELP = "offline preference optimisation (trainer: dpo)"


@dataclass
class DPORoot(RootBase):
    """The root of trainer ``dpo`` (offline DPO family)."""

    trainer: str = trainer_field("dpo")
    algo: PrefAlgoConfig = doc(_ALGO_HELP, factory=PrefAlgoConfig)
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    pref: PrefConfig = doc(_PREF_HELP, factory=PrefConfig)

    def validate(self) -> Self:
        self.validate_shared()
        self.pref.validate()
        return self


@dataclass
class OnlineRoot(DPORoot):
    """The root of trainers ``online_dpo`` and ``onpo``: the dpo root + the online section."""

    trainer: str = trainer_field("online_dpo")
    online: OnlineConfig = doc("online / iterative preference training (trainers online_dpo, onpo)",
                               factory=OnlineConfig)

    def validate(self) -> Self:
        super().validate()
        self.online.validate()
        return self


@dataclass
class RewardModelRoot(RootBase):
    """The root of trainer ``reward_model`` (Bradley-Terry reward model; distillation samples with rollout/sft)."""

    trainer: str = trainer_field("reward_model")
    optim: OptimConfig = shared(OptimConfig)
    eval: EvalConfig = shared(EvalConfig)
    sft: SFTConfig = shared(SFTConfig)
    rm: RMConfig = doc("reward-model training (trainer: reward_model)", factory=RMConfig)

    def validate(self) -> Self:
        self.validate_shared()
        self.rm.validate()
        return self


@dataclass
class MPORoot(RLRoot):
    """The root of trainer ``mpo``: the rl root (each single-objective policy is an rl run) + the mix section."""

    trainer: str = trainer_field("mpo")
    mix: MixConfig = doc("mixing K single-objective policies (trainer: mpo)", factory=MixConfig)

    def validate(self) -> Self:
        super().validate()
        self.mix.validate()
        return self
