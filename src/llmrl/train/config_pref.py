"""Config sections of preference training: reward models (rm), offline DPO family (pref), online / ONPO
(online) and policy mixing (mix)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmrl.train.configbase import ConfigError, doc, requirement

if TYPE_CHECKING:
    pass


@dataclass
class RMPrivacyConfig:
    mechanism: str = doc("label privacy (AUP-RLHF): none, randomized_response (flip labels, debiased loss) or "
                         "user_dp (per-user clipped gradients + Gaussian noise)", "none")
    epsilon: float = doc("target epsilon per user (per pair without a users column); randomized_response flips "
                         "with probability 1/(1+e^(epsilon/m)), m = most pairs of one user", 1.0)
    delta: float = doc("user_dp: target delta", 1e-5)
    clip: float = doc("user_dp: L2 bound C on each user's average gradient", 1.0)
    noise_multiplier: float | None = doc("user_dp: noise std / C; null = calibrate to (epsilon, delta)", None)
    users_per_step: int = doc("user_dp: expected users per step (Poisson sampling, rate users_per_step/users)", 16)
    accountant: str = doc("user_dp: rdp (subsampled Gaussian, Renyi DP) or zcdp (no sampling credit)", "rdp")
    debias: bool = doc("randomized_response: train on the unbiased (debiased) loss", True)


@dataclass
class RMDistillConfig:
    teacher_path: str | None = doc("local HF model that samples (and judges) as the teacher; null = the policy", None)
    teacher_samples: int = doc("teacher responses per prompt", 10)
    student_samples: int = doc("student (the policy) responses per prompt", 30)
    prompts: int = doc("training prompts pseudo-labelled (held-out pairs: eval.size or task.test_size prompts)", 64)
    label: str = doc("vote (majority answer via the task's parse) or judge (teacher's Yes/No probability)", "vote")
    vote_over: str = doc("vote: majority over all responses or teacher responses only", "all")
    judge_category: str = doc("judge: chat, code, math or safety", "chat")
    judge_threshold: float = doc("judge: score >= threshold labels a response good", 0.5)
    max_pairs_per_prompt: int = doc("most (good, bad) pairs kept per prompt", 16)


@dataclass
class RMConfig:
    source: str = doc("pairs from: file (train_file/test_file), task (chosen = demonstration, rejected = the task's "
                      "wrong_demonstration) or distill (pseudo-labelled samples, PAPERS.md §14)", "task")
    train_file: str | None = doc("source=file: JSONL/parquet with prompt, chosen, rejected (+ user_id)", None)
    test_file: str | None = doc("source=file: held-out pairs; null = a seeded 10% of train_file", None)
    prompt_key: str = doc("column of the prompt", "prompt")
    chosen_key: str = doc("column of the preferred completion", "chosen")
    rejected_key: str = doc("column of the other completion", "rejected")
    user_key: str = doc("column naming the user (user-level privacy, personalised evaluation)", "user_id")
    max_length: int = doc("longest prompt + completion in tokens", 256)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens", 128)
    epochs: float = doc("passes over the training pairs (user_dp: expected passes over the users)", 1.0)
    batch_size: int = doc("pairs per step (user_dp: pairs per forward within a user)", 16)
    lr: float = doc("AdamW learning rate of the reward model", 1e-5)
    max_steps: int = doc("stop after this many steps; 0 = no cap", 0)
    reg_coef: float = doc("PAR Reg: add reg_coef*(r_chosen^2 + r_rejected^2) to the loss (PAR: 0.005)", 0.0)
    user_conditioned: bool = doc("render the user id into the reward model's input (§20 baseline)", False)
    eval_batch_size: int = doc("pairs per scoring forward in evaluation", 32)
    privacy: RMPrivacyConfig = doc("label privacy", factory=RMPrivacyConfig)
    distill: RMDistillConfig = doc("distilled rewards (source=distill)", factory=RMDistillConfig)

    def validate(self) -> None:
        need = requirement("rm")

        p, d = self.privacy, self.distill
        need(self.source in ("file", "task", "distill"), "source", "must be file, task or distill")
        need(self.source != "file" or bool(self.train_file), "train_file", "required with rm.source=file")
        need(self.source == "file" or not (self.train_file or self.test_file), "source",
             f"rm.train_file/test_file are only read with rm.source=file (got source={self.source!r})")
        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")
        need(self.epochs > 0 and self.batch_size >= 1 and self.lr > 0, "epochs/batch_size/lr", "must be positive")
        need(self.max_steps >= 0 and self.reg_coef >= 0, "max_steps/reg_coef", "must be >= 0")
        need(p.mechanism in ("none", "randomized_response", "user_dp"), "privacy.mechanism",
             "must be none, randomized_response or user_dp")
        need(p.epsilon > 0, "privacy.epsilon", "must be > 0")
        need(0 < p.delta < 1, "privacy.delta", "must be in (0, 1)")
        need(p.clip > 0 and p.users_per_step >= 1, "privacy.clip/users_per_step", "must be positive")
        need(p.noise_multiplier is None or p.noise_multiplier > 0, "privacy.noise_multiplier", "must be > 0 or null")
        need(p.accountant in ("rdp", "zcdp"), "privacy.accountant", "must be rdp or zcdp")
        need(d.label in ("vote", "judge"), "distill.label", "must be vote or judge")
        need(d.vote_over in ("all", "teacher"), "distill.vote_over", "must be all or teacher")
        need(d.teacher_samples >= 1 and d.student_samples >= 0 and d.prompts >= 1, "distill",
             "teacher_samples and prompts must be >= 1, student_samples >= 0")
        need(d.max_pairs_per_prompt >= 1, "distill.max_pairs_per_prompt", "must be >= 1")


@dataclass
class MixConfig:
    policies: list[str] = doc("local model dirs of the K single-objective policies; empty = train one per objective "
                              "from the reference (the model section)", factory=list)
    objectives: list[str] = doc("reward components of the task, one policy trained per component (when policies is "
                                "empty; empty = all of the task's reward_functions()); with policies: their names",
                                factory=list)
    policy_steps: int = doc("RL steps for each single-objective policy (the rl loop with the run's settings)", 20)
    weights: list[float] | None = doc("fixed mixing weights lambda (one per policy, >= 0); null = max-min lambda by "
                                      "mirror descent", None)
    md_steps: int = doc("max-min lambda: mirror-descent steps T", 50)
    md_samples: int = doc("max-min lambda: responses y ~ pi_ref per prompt (m)", 8)
    md_prompts: int = doc("max-min lambda: training prompts per mirror-descent step", 4)
    md_lr_c: float = doc("max-min lambda: step-size constant c, eta = c / sqrt(T)", 1.0)

    def validate(self) -> None:
        need = requirement("mix")

        k = len(self.policies) or len(self.objectives)
        need(len(set(self.policies)) == len(self.policies), "policies", "lists a directory twice")
        need(len(set(self.objectives)) == len(self.objectives), "objectives", "lists a component twice")
        need(not (self.policies and self.objectives) or len(self.policies) == len(self.objectives), "objectives",
             f"with mix.policies, one name per policy ({len(self.policies)}), got {len(self.objectives)}")
        need(self.policy_steps >= 1, "policy_steps", "must be >= 1")
        if self.weights is not None:
            need(all(w >= 0 for w in self.weights), "weights", f"must be >= 0, got {self.weights}")
            need(sum(self.weights) > 0, "weights", "must not all be 0")
            need(k == 0 or len(self.weights) == k, "weights",
                 f"{len(self.weights)} weight(s) for {k} {'policies' if self.policies else 'objectives'}")
        need(self.md_steps >= 1 and self.md_samples >= 1 and self.md_prompts >= 1, "md_steps/md_samples/md_prompts",
             "must be >= 1")
        need(self.md_lr_c > 0, "md_lr_c", "must be > 0")


@dataclass
class PrefConfig:
    loss_type: str = doc("preference loss: sigmoid (DPO), ipo, hinge, robust, simpo or dpop (docs/preference.md)",
                         "sigmoid")
    beta: float = doc("beta: inverse strength of the implicit KL to the reference (simpo: reward scale, ~2)", 0.1)
    loss_options: dict[str, Any] = doc("keyword options of the loss: label_smoothing (sigmoid=cDPO, robust, simpo), "
                                       "gamma_beta_ratio / gamma (simpo), lam (dpop)", factory=dict)
    rpo_alpha: float = doc("RPO: add rpo_alpha * per-token NLL of the chosen completion; 0 = off", 0.0)
    average_logps: bool | None = doc("length-average completion log-probs before the loss; null = yes for ipo "
                                     "(as TRL) and simpo, no (sums) otherwise", None)
    train_file: str | None = doc("JSONL/parquet of prompt/chosen/rejected pairs; null = pairs built from the task "
                                 "(chosen = a correct demonstration, rejected = a wrong one)", None)
    test_file: str | None = doc("held-out pairs for preference metrics; null = from the task's test prompts when "
                                "pairs come from the task, else none", None)
    prompt_key: str = doc("column of the prompt (text or chat messages)", "prompt")
    chosen_key: str = doc("column of the preferred completion", "chosen")
    rejected_key: str = doc("column of the dispreferred completion", "rejected")
    on_error: str = doc("pairs with identical or empty completions: raise or skip (counted)", "raise")
    max_length: int = doc("longest prompt + completion in tokens; completions are cut to fit", 512)
    max_prompt_length: int = doc("prompts keep their last max_prompt_length tokens (< max_length)", 256)
    batch_size: int = doc("pairs per optimizer step", 32)
    micro_batch_size: int = doc("pairs per forward/backward (gradient accumulation); 0 = the whole batch", 0)
    epochs: float = doc("if > 0: train ceil(epochs * pairs / batch_size) steps instead of `steps`", 0.0)
    pairs_from_task: int = doc("pairs built from the task's training prompts when train_file is null", 2000)
    rejected_source: str = doc("pairs from the task: rejected = teacher (the task's wrong_demonstration, else "
                               "another prompt's demonstration) or policy (a wrong sample of the starting policy, "
                               "SPIN-style; rollout.temperature / max_new_tokens)", "teacher")
    policy_samples: int = doc("rejected_source=policy: samples per prompt to find a wrong one in", 4)
    eval_pairs: int = doc("most held-out pairs scored at each evaluation (0 = none)", 200)
    precompute_ref_logps: bool = doc("score every pair with the reference once before training (no reference copy "
                                     "kept); false = a frozen copy scores each batch", True)
    cache_ref_logps: bool = doc("also save the precomputed reference log-probs to <output_dir>/ref_logps.pt "
                                "(reused on resume when the data and model settings match)", True)

    def validate(self) -> None:
        import torch

        from llmrl.algos import PREFERENCE_LOSSES, preference_loss

        need = requirement("pref")

        need(self.loss_type in PREFERENCE_LOSSES, "loss_type",
             f"unknown preference loss {self.loss_type!r}; valid: {PREFERENCE_LOSSES.names()}")
        need(self.beta > 0, "beta", "must be > 0")
        try:  # unknown or out-of-range options fail here, not mid-run
            z = torch.zeros(1)
            preference_loss(z, z, z, z, loss_type=self.loss_type, beta=self.beta, **self.loss_options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"pref.loss_options: {exc}") from None
        need(self.rpo_alpha >= 0, "rpo_alpha", "must be >= 0")
        need(self.on_error in ("raise", "skip"), "on_error", "must be raise or skip")
        need(1 <= self.max_prompt_length < self.max_length, "max_prompt_length", "must be in [1, max_length)")
        need(self.batch_size >= 1 and self.micro_batch_size >= 0, "batch_size/micro_batch_size",
             "batch_size must be >= 1, micro_batch_size >= 0")
        need(self.epochs >= 0, "epochs", "must be >= 0")
        need(self.pairs_from_task >= 1 and self.eval_pairs >= 0, "pairs_from_task/eval_pairs",
             "pairs_from_task must be >= 1, eval_pairs >= 0")
        need(self.rejected_source in ("teacher", "policy"), "rejected_source", "must be teacher or policy")
        need(self.policy_samples >= 1, "policy_samples", "must be >= 1")


@dataclass
class OnlineConfig:
    iterations: int = doc("K rounds of sample -> rank -> pair -> train (trainers online_dpo and onpo)", 3)
    prompts: int = doc("training prompts per iteration, rollout.samples_per_prompt completions each", 64)
    source: str = doc("what ranks completions: reward (the task's reward functions), reward_model "
                      "(online.reward_model), judge (Yes/No probabilities, PAPERS.md 9) or pairwise_judge (A/B "
                      "probabilities, a pairwise oracle P(y1 > y2))", "judge")
    judge_model: str | None = doc("judge / pairwise_judge: local HF model directory of the judge; null = the "
                                  "policy judges itself (self-rewarding, IPO)", None)
    self_judge: str = doc("with judge_model null: the policy judging itself is the current iterate (current: "
                          "self-rewarding, the judge moves with the policy) or a frozen copy of the starting policy "
                          "(initial)", "current")
    judge_category: str = doc("judge: chat, code, math or safety (the question the judge answers)", "chat")
    judge_max_tokens: int = doc("judge prompts keep at most this many tokens", 1024)
    judge_batch_size: int = doc("judge prompts per forward", 16)
    reward_model: str | None = doc("source reward_model: the reward model directory (trainer reward_model)", None)
    pairing: str = doc("best_worst (one pair per prompt), clamp (CLaMP-DPO: every top x bottom fraction pair) or "
                       "oracle_pairs (pairwise_judge labels consecutive sampled pairs)", "best_worst")
    min_margin: float = doc("best_worst: no pair when best - worst score <= min_margin (ties)", 0.0)
    top_frac: float = doc("clamp: fraction of each prompt's completions taken as chosen (NotaGen: 0.1)", 0.1)
    bottom_frac: float = doc("clamp: fraction taken as rejected (NotaGen: 0.1)", 0.1)
    reference_key: str | None = doc("clamp: sample column of ground-truth text(s); chosen completions more similar "
                                    "than max_similarity to one are dropped; null = no near-copy filter", None)
    max_similarity: float = doc("clamp: near-copy threshold on the similarity", 0.95)
    similarity: str = doc("clamp: ratio (difflib) or ngram (character-trigram cosine)", "ratio")
    ranking: str = doc("pairwise_judge with best_worst/clamp: rank by soft (mean P(win)) or hard (win count) win "
                       "rates", "soft")
    both_orders: bool = doc("pairwise_judge: ask both orders and average (cancels position bias, 2x calls)", True)
    oracle_label: str = doc("oracle_pairs: threshold (winner: P > 1/2) or sample (winner ~ Bernoulli(P))",
                            "threshold")
    reference: str = doc("online_dpo: the DPO reference, initial (the starting policy) or previous (the last "
                         "iterate)", "initial")
    epochs: float = doc("passes over each iteration's pairs: ceil(epochs * pairs / pref.batch_size) steps, each "
                        "iteration with a fresh optimizer and optim's warm-up/schedule", 1.0)
    eval_score: bool = doc("at each evaluation also log the source's mean score (score_mean) of eval.samples "
                           "completions per held-out prompt; pairwise_judge: win_rate vs the starting policy", True)
    eta: float = doc("onpo: mirror-descent step size eta (the paper: 1/eta = 0.01)", 100.0)
    target: str = doc("onpo: regression target, eta_over_2 (eta/2) or inv_2eta (1/(2 eta)); the paper is "
                      "ambiguous, docs/preference.md explains the default", "eta_over_2")

    def validate(self) -> None:
        need = requirement("online")

        need(self.iterations >= 1 and self.prompts >= 1, "iterations/prompts", "must be >= 1")
        need(self.source in ("reward", "reward_model", "judge", "pairwise_judge"), "source",
             f"must be reward, reward_model, judge or pairwise_judge, got {self.source!r}")
        need(self.source != "reward_model" or bool(self.reward_model), "reward_model", "required with source=reward_model")
        need(self.self_judge in ("current", "initial"), "self_judge", "must be current or initial")
        need(self.judge_category in ("chat", "code", "math", "safety"), "judge_category",
             "must be chat, code, math or safety")
        need(self.judge_max_tokens >= 8 and self.judge_batch_size >= 1, "judge_max_tokens/judge_batch_size",
             "must be >= 8 and >= 1")
        need(self.pairing in ("best_worst", "clamp", "oracle_pairs"), "pairing",
             f"must be best_worst, clamp or oracle_pairs, got {self.pairing!r}")
        need(self.pairing != "oracle_pairs" or self.source == "pairwise_judge", "pairing",
             "oracle_pairs needs a pairwise oracle (source=pairwise_judge)")
        need(0 < self.top_frac <= 0.5 and 0 < self.bottom_frac <= 0.5, "top_frac/bottom_frac", "must be in (0, 0.5]")
        need(0 <= self.max_similarity <= 1, "max_similarity", "must be in [0, 1]")
        need(self.similarity in ("ratio", "ngram"), "similarity", "must be ratio or ngram")
        need(self.ranking in ("soft", "hard"), "ranking", "must be soft or hard")
        need(self.oracle_label in ("threshold", "sample"), "oracle_label", "must be threshold or sample")
        need(self.reference in ("initial", "previous"), "reference", "must be initial or previous")
        need(self.epochs > 0 and self.eta > 0, "epochs/eta", "must be > 0")
        need(self.target in ("eta_over_2", "inv_2eta"), "target", "must be eta_over_2 or inv_2eta")
