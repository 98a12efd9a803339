"""Config sections every trainer shares (model, task, rollout, optimizer, evaluation, SFT): one typed
dataclass per section, documented field by field, choices as ``Literal`` and numeric bounds on the fields.

Each trainer has its own root config, defined in its layer (:mod:`llmrl.rl.config`,
:mod:`llmrl.preference.config`) and registered in :mod:`llmrl.trainers`: :class:`RootBase` (the top-level
fields and the sections every root starts with) plus the sections that trainer reads, the shared ones
declared with :func:`shared`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from llmrl.core.config import check_fields, doc, requirement
from llmrl.core.device import device_spec_issue


@dataclass
class TinyModelConfig:
    arch: Literal["llama", "qwen2"] = doc("architecture of the built-in tiny model: llama or qwen2", "llama")
    hidden_size: int = doc("hidden size", 128, ge=1)
    num_layers: int = doc("number of transformer layers", 4, ge=1)
    num_heads: int = doc("attention heads", 4, ge=1)
    num_kv_heads: int | None = doc("key/value heads (GQA); null = num_heads", None, ge=1)
    intermediate_size: int = doc("MLP inner size", 512, ge=1)
    max_position_embeddings: int = doc("longest sequence the model supports", 512, ge=1)


@dataclass
class LoraConfig:
    enabled: bool = doc("train LoRA adapters (peft) instead of all weights; the reference = adapters off", False)
    r: int = doc("LoRA rank", 8, ge=1)
    alpha: int = doc("LoRA alpha (adapter scale alpha / r)", 16, ge=1)
    dropout: float = doc("LoRA dropout", 0.0, ge=0, lt=1)
    target_modules: list[str] | None = doc("module names to adapt; null = peft's default for the arch", None)


@dataclass
class ModelConfig:
    path: str | None = doc("local Hugging Face model directory; null = build the tiny model offline", None)
    intended: str | None = doc("the model a recipe's settings are written for (paper-scale completion lengths and "
                               "batches); when set, a run without model.path stops with a one-line error instead of "
                               "running them on the tiny model; null = the tiny model is fine", None)
    tiny: TinyModelConfig = doc("the built-in tiny model (used when path is null)", factory=TinyModelConfig)
    dtype: str = doc("float32, bfloat16, float16 or auto: the dtype of the weights (and of the optimizer states, "
                     "which follow them); log-probs, losses and advantages are always float32 "
                     "(docs/devices.md)", "float32")
    device: str = doc("where the policy, its reference copy, the critic and reward / judge models run: auto (cuda "
                      "when torch.cuda.is_available(), else cpu), cpu, cuda or cuda:N; a GPU that is not there is "
                      "an error when the model is built (docs/devices.md)", "cpu")
    reference_device: str | None = doc("where the frozen KL reference copy runs, e.g. cpu to keep GPU memory for "
                                       "the policy (its log-probs are computed there and moved to the batch); "
                                       "null = model.device; not used with LoRA (the reference is the policy "
                                       "with its adapters off)", None)
    gradient_checkpointing: bool = doc("activation checkpointing of the policy's (and critic's) transformer layers "
                                       "in training forwards: less memory, about one more forward pass of "
                                       "compute, the same gradients", False)
    logits_chunk_tokens: int | None = doc("log-probs and entropies are computed from the final hidden states this "
                                          "many tokens at a time (LM head + log-softmax per chunk, recomputed in "
                                          "the backward), so no [batch, tokens, vocab] logits tensor is ever alive; "
                                          "null = 2^26 / vocabulary size (256 MiB of float32 logits; 64..4096); 0 = "
                                          "the full logits (the old path; also used, with a warning, for a model "
                                          "family llmrl cannot split) (docs/memory.md)", None, ge=0)
    chat_template: bool | None = doc("use the tokenizer's chat template; null = when it has one", None)
    lora: LoraConfig = doc("LoRA options", factory=LoraConfig)


@dataclass
class TaskConfig:
    name: str = doc("registered task name (llmrl tasks list)", "arithmetic")
    options: dict[str, Any] = doc("keyword options of the task", factory=dict)
    train_size: int = doc("number of distinct generated training prompts", 2000, ge=1)
    test_size: int = doc("number of held-out prompts for evaluation", 200, ge=1)
    train_file: str | None = doc("samples to train on instead of generated ones: JSONL, parquet, CSV or a Hugging "
                                 "Face datasets directory (save_to_disk; parquet/CSV/directories need "
                                 "pip install 'llmrl[hf]')", None)
    test_file: str | None = doc("held-out samples instead of generated ones (same formats as train_file)", None)
    train_split: str = doc("split train_file reads when it is a DatasetDict directory", "train")
    test_split: str = doc("split test_file reads when it is a DatasetDict directory", "test")
    columns: dict[str, str] = doc("rename dataset columns to the fields llmrl reads, field: column (e.g. {prompt: "
                                  "question, answer: final_answer}), for train_file and test_file, before the "
                                  "rows are checked", factory=dict)
    data_seed: int = doc("seed of the task generator", 0)


@dataclass
class AgentsConfig:
    """``rollout.agents``: multi-agent discussion episodes (MAPoRL; docs/agents.md). ``count`` agents answer each
    question, then ``rounds`` − 1 times see the others' latest answers (mask 0) and revise; every agent's episode
    is trained with per-round rewards on the last token of each round's turn."""

    count: int = doc("agents per discussion; 0 = off (single-agent episodes), else >= 2", 0, ge=0)
    rounds: int = doc("rounds of a discussion (round 0 = independent answers)", 3, ge=1)
    gamma: float = doc("MAPoRL discount of the later rounds' mean scores in an agent's reward", 0.3, ge=0, le=1)
    missing_reward: float = doc("reward of a round whose answer the task finds missing / malformed "
                                "(task.is_well_formed false)", -10.0)
    shared: bool = doc("one shared policy for all agents, trained by the RL loop (true); false = separate "
                       "policies, each with its own critic and optimizer (a smaller trainer: llmrl.rl.agents_loop; "
                       "no resume, LoRA or torchrun)", True)
    roles: list[str] | None = doc("one role per agent: a system message (chat template) or a prompt prefix "
                                  "(plain text); null = the same prompt for all", None)
    template: str = doc("the message shown in round t > 0, with {answers} (the others' answers) and {question}",
                        "These are the answers of the other agents:\n{answers}\nUsing them as additional "
                        "information, give your updated answer to the question: {question}")
    answer_template: str = doc("each other agent's answer in {answers}, with {agent} (1-based) and {answer}",
                               "Agent {agent}: {answer}")
    separator: str = doc("between the other agents' answers in {answers}", "\n")

    def validate(self) -> None:
        need = requirement("rollout.agents")
        need(self.count != 1, "count", "a discussion needs at least 2 agents (0 = off)")
        if not self.count:
            return
        need(self.roles is None or len(self.roles) == self.count, "roles",
             f"needs one role per agent ({self.count}), got {None if self.roles is None else len(self.roles)}")
        for key, text, fields in (("template", self.template, {"answers": "", "question": ""}),
                                  ("answer_template", self.answer_template, {"agent": 1, "answer": ""})):
            try:
                text.format(**fields)
            except (KeyError, IndexError, ValueError) as e:
                need(False, key, f"may only use the fields {sorted(fields)}: {e!r}")


@dataclass
class RolloutConfig:
    prompts_per_step: int = doc("prompts per RL step", 16, ge=1)
    samples_per_prompt: int = doc("samples per prompt (the group size)", 8, ge=1)
    max_new_tokens: int = doc("longest completion", 32, ge=1)
    temperature: float = doc("sampling temperature (0 = greedy, not for RL); the policy log-probs use the same "
                              "temperature", 1.0, ge=0)
    top_p: float = doc("nucleus sampling threshold", 1.0, gt=0, le=1)
    top_k: int = doc("top-k sampling, 0 = off", 0, ge=0)
    stop: list[str] = doc("stop strings (EOS always stops)", factory=list)
    dynamic_sampling: bool = doc("DAPO: drop groups whose rewards are all equal and refill", False)
    max_sampling_rounds: int = doc("dynamic sampling: most generation rounds per step", 4, ge=1)
    overlong_filter: bool = doc("DAPO: truncated samples get no loss", False)
    overlong_buffer: int = doc("DAPO soft overlong penalty buffer length in tokens; 0 = off", 0, ge=0)
    overlong_penalty: float = doc("DAPO soft overlong penalty at the full length", 1.0, ge=0)
    backend: Literal["kvcache", "hf", "vllm"] = doc("generator backend: kvcache (ours), hf (model.generate) or vllm "
                                                    "(a colocated vLLM engine; installed separately)", "kvcache")
    env: str | None = doc("multi-turn environment (registered name, e.g. retry); null = single turn", None)
    env_options: dict[str, Any] = doc("keyword options of the environment", factory=dict)
    max_turns: int = doc("policy turns per episode when an environment is set (the environment may end it "
                         "sooner)", 2, ge=1)
    max_episode_tokens: int = doc("token budget of a multi-turn episode: it ends when its next turn could take it "
                                  "past this many tokens (prompt, turns and environment messages); 0 = none", 0, ge=0)
    agents: AgentsConfig = doc("multi-agent discussion episodes (MAPoRL): count, rounds, gamma, shared, roles, "
                               "templates; count 0 = off", factory=AgentsConfig)
    async_: bool = doc("one-step asynchronous RL (key rollout.async): batch t+1 is generated (by the Ray rollout "
                       "workers with ray.enabled, else by a background thread on a copy of the policy) while the "
                       "trainer trains on batch t, so each sample is at most one policy version stale "
                       "(logged as staleness/*); needs algo.recompute_logprobs (TIS / MIS with "
                       "algo.rollout_correction); docs/scaling.md", False)


@dataclass
class OptimConfig:
    lr: float = doc("AdamW learning rate", 1e-5, gt=0)
    weight_decay: float = doc("AdamW weight decay", 0.0, ge=0)
    betas: list[float] = doc("AdamW betas (beta1, beta2), each in [0, 1)", factory=lambda: [0.9, 0.999], ge=0, lt=1)
    eps: float = doc("AdamW epsilon", 1e-8, gt=0)
    grad_clip: float = doc("max gradient norm; 0 = off", 1.0, ge=0)
    warmup_steps: int = doc("linear warm-up optimizer steps", 0, ge=0)
    schedule: Literal["constant", "cosine"] = doc("constant or cosine (after warm-up)", "constant")
    max_bad_steps: int = doc("abort after this many consecutive non-finite loss/gradient steps", 3, ge=1)
    memory_budget_gb: float | None = doc("memory the training step may use (GB = 2^30 bytes): with a micro_batch_size "
                                         "of 0 the micro-batch is the largest that fits it, and activation "
                                         "checkpointing turns on when not even a few sequences would fit "
                                         "(docs/memory.md); null = 85% of what this process could use when "
                                         "training starts (MemAvailable + its own RSS; free GPU memory on CUDA)", None, gt=0)


@dataclass
class EvalConfig:
    every: int = doc("evaluate every N RL steps (0 = only at start and end)", 10, ge=0)
    size: int | None = doc("held-out prompts used (null = all of task.test_size)", None, ge=0)
    pass_k: list[int] = doc("k values for pass@k (sampled, unbiased estimator)", factory=lambda: [1, 4], ge=1)
    samples: int = doc("samples per prompt for pass@k; 0 = greedy metrics only", 4, ge=0)
    temperature: float = doc("temperature of the pass@k samples (0 = greedy)", 1.0, ge=0)
    max_new_tokens: int | None = doc("null = rollout.max_new_tokens", None, ge=1)
    batch_size: int = doc("prompts per generation call", 128, ge=1)


@dataclass
class SelfCorrectionDataConfig:
    """``sft.self_correction``: the sequential rejection sampling of self-rewarding correction (arXiv 2502.19613;
    docs/agents.md), used with ``sft.source=self_correction`` and ``rollout.env=self_correction``."""

    format_warm_start: bool = doc("first train sft.steps steps on the task's demonstrations in the self-correction "
                                  "format with verdicts drawn at random (a model that follows the format but "
                                  "cannot judge yet: the tiny model's stand-in for a prompted base model)", True)
    prompts: int | None = doc("training prompts the sampling starts from (the first of the sft.num_examples); "
                              "null = all of them", None, ge=1)
    n1: int = doc("first answers a1 sampled per prompt", 50, ge=1)
    n2: int = doc("self-evaluations sampled per a1; the first whose verdict matches the verifier is kept", 8, ge=1)
    m1: int = doc("corrections a2 sampled per wrong a1 (after its [VERIFY] wrong)", 8, ge=1)
    m2: int = doc("corrections a2 sampled per correct a1 told [VERIFY] wrong", 4, ge=1)
    per_prompt: int = doc("rows kept of each kind (D1, D2, D3) per prompt", 1, ge=1)
    epochs: float | None = doc("passes of the SFT over the D1/D2/D3 rows: ceil(epochs * rows / sft.batch_size) "
                               "steps; null = sft.steps steps", None, gt=0)


@dataclass
class SFTConfig:
    steps: int = doc("SFT optimizer steps before RL (0 = no warm start)", 0, ge=0)
    batch_size: int = doc("sequences per SFT step", 32, ge=1)
    micro_batch_size: int = doc("sequences per SFT forward/backward (gradient accumulation); 0 = the largest "
                                "that fits optim.memory_budget_gb", 0, ge=0)
    lr: float = doc("SFT learning rate", 1e-3, gt=0)
    warmup_steps: int = doc("SFT warm-up steps", 20, ge=0)
    schedule: Literal["constant", "cosine"] = doc("constant or cosine", "cosine")
    num_examples: int = doc("demonstrations drawn from the task's training prompts", 2000, ge=1)
    noise: float = doc("fraction of demonstrations replaced by the task's sloppy (wrong) ones", 0.0, ge=0, le=1)
    data_file: str | None = doc("prompt + completion (or answer) rows to train on instead: JSONL, parquet, CSV or a "
                                "datasets directory (split train)", None)
    source: Literal["demonstrations", "rejection", "self_correction"] = doc(
        "demonstrations (the task's gold completions), rejection (sample rejection_k completions per training "
        "prompt, keep those the task accepts: SoRFT stage 1) or self_correction (sequential rejection sampling of "
        "D1/D2/D3 through rollout.env=self_correction, sft.self_correction)", "demonstrations")
    rejection_k: int = doc("source=rejection: completions sampled per prompt (rollout temperature/length)", 8, ge=1)
    teacher_path: str | None = doc("source=rejection: local HF model directory to sample from (same tokenizer "
                                   "family); null = the policy itself", None)
    self_correction: SelfCorrectionDataConfig = doc("source=self_correction: n1, n2, m1, m2, per_prompt, "
                                                    "format_warm_start", factory=SelfCorrectionDataConfig)


@dataclass
class RewardConfig:
    workers: int | None = doc("processes the task's reward functions run in (llmrl.rewards.pool); null = one per "
                              "CPU core (at most 16); 0 = in the training process, with no time or memory bound "
                              "(for debugging)", None, ge=0)
    timeout: float = doc("seconds one reward function may take on one completion; a call past it is killed and "
                         "scores reward_failure_value (counted in reward_timeouts)", 5.0, gt=0)
    memory_mb: int = doc("MiB a reward worker may allocate beyond its size at start (RLIMIT_AS); past it the "
                         "reward fails with MemoryError; 0 = no bound", 4096, ge=0)
    max_abs: float = doc("a reward component of larger magnitude is a failure (default: the float32 range)",
                         3.4028234663852886e38, gt=0)


@dataclass
class RayConfig:
    """``ray``: rollout and reward workers on a Ray cluster (pip install 'llmrl[ray]'; docs/scaling.md)."""

    enabled: bool = doc("place rollout / reward workers on Ray (a local cluster unless address is set)", False)
    address: str | None = doc("Ray cluster to join (ray.init(address=...), e.g. auto or ray://HOST:10001); null = "
                              "start a local cluster in this process (or use the one already initialised)", None)
    num_cpus: int | None = doc("CPUs of the local cluster started when address is null; null = every core", None,
                               ge=1)
    rollout_workers: int = doc("Ray actors each holding a replica of the policy and its generator "
                               "(rollout.backend); the prompt groups of a step are split over them and the "
                               "weights are pushed through the object store after each optimizer step; 0 = "
                               "generate in the training process", 1, ge=0)
    reward_workers: int = doc("Ray tasks running the task's reward functions at once (the reward pool's ray "
                              "backend: reward.timeout / memory_mb / max_abs as with processes); 0 = the "
                              "process pool of reward.workers", 0, ge=0)
    worker_cpus: float = doc("CPUs Ray reserves for each rollout actor and each reward task", 1.0, gt=0)

    def validate(self) -> None:
        need = requirement("ray")
        need(self.enabled or (self.address is None), "address", "set ray.enabled=true too")
        if self.enabled:
            import importlib.util

            need(importlib.util.find_spec("ray") is not None, "enabled",
                 "Ray is not installed: pip install 'llmrl[ray]' (or set ray.enabled=false)")
            need(self.rollout_workers > 0 or self.reward_workers > 0, "enabled",
                 "no Ray workers asked for: set ray.rollout_workers and/or ray.reward_workers > 0")


@dataclass
class WandbConfig:
    enabled: bool = doc("also log the metrics, and the resolved config as the run's config, to Weights & Biases "
                        "(pip install 'llmrl[trackers]')", False)
    project: str = doc("W&B project", "llmrl")
    entity: str | None = doc("W&B entity (user or team); null = your default entity", None)
    name: str | None = doc("W&B run name; null = the name of output_dir", None)
    mode: Literal["offline", "online"] = doc(
        "offline: write the run to disk only (upload later with `wandb sync DIR/wandb/offline-run-*`; a resumed "
        "run's files are synced in order as one run); online: stream it to the W&B server", "offline")
    dir: str | None = doc("directory W&B writes its wandb/ folder into; null = $WANDB_DIR if set, else "
                          "output_dir", None)


@dataclass
class MlflowConfig:
    enabled: bool = doc("also log the metrics, and the resolved config as the run's params, to MLflow "
                        "(pip install 'llmrl[trackers]')", False)
    tracking_uri: str | None = doc("MLflow tracking URI (http://HOST:5000, file:/PATH, sqlite:///mlflow.db with "
                                   "full mlflow); null = a local file store in output_dir/mlruns", None)
    experiment: str = doc("MLflow experiment (created when missing)", "llmrl")
    run_name: str | None = doc("MLflow run name; null = the name of output_dir", None)


@dataclass
class LoggingConfig:
    tensorboard: bool = doc("mirror the metrics to TensorBoard event files in output_dir/tb", True)
    wandb: WandbConfig = doc("Weights & Biases (its run id is kept in output_dir/trackers.json: --resume continues "
                             "the same run)", factory=WandbConfig)
    mlflow: MlflowConfig = doc("MLflow (its run id is kept in output_dir/trackers.json: --resume continues the "
                               "same run)", factory=MlflowConfig)


_SHARED_HELP: dict[type, str] = {
    ModelConfig: "policy model",
    TaskConfig: "task and data",
    RolloutConfig: "generation",
    OptimConfig: "optimizer and learning-rate schedule",
    EvalConfig: "held-out evaluation",
    SFTConfig: "supervised warm start before RL",
    RewardConfig: "where and under which limits the task's reward functions run",
    RayConfig: "rollout and reward workers on a Ray cluster (the RL trainers)",
    LoggingConfig: "where metrics go besides metrics.jsonl: TensorBoard, Weights & Biases, MLflow",
}


def shared(cls: type) -> Any:
    """The field of a shared section in a trainer's root, with its standard help:
    ``optim: OptimConfig = shared(OptimConfig)``."""
    return doc(_SHARED_HELP[cls], factory=cls)


def trainer_field(default: str) -> Any:
    """The ``trainer`` field of a root, defaulting to the (first) trainer that reads it."""
    return doc("training loop: rl (policy gradient) or another name in llmrl.trainers", default)


@dataclass
class RootBase:
    """What every trainer's root holds first: the top-level fields and the model, task and rollout sections.
    A root adds the other sections its trainer reads (optim, eval and sft in every one, with :func:`shared`)."""

    trainer: str = trainer_field("rl")
    seed: int = doc("seed of everything (sampling, shuffles, model init)", 0)
    output_dir: str = doc("where metrics, checkpoints and the final model go", "runs/default")
    steps: int = doc("RL steps (one rollout batch each)", 100, ge=0)
    log_every: int = doc("print a log line every N steps", 1)
    threads: int = doc("torch CPU threads; 0 = auto: the cores no other process is busy with (load measured at the "
                       "start), at most one per 250k model parameters, at least 1 (torch's default of every core "
                       "collapses when another process holds one); N > 0 = exactly N", 0, ge=0)
    progress: bool = doc("show a live progress bar", True)
    save_every: int = doc("checkpoint every N steps (0 = only at the end and on save_minutes)", 0, ge=0)
    save_minutes: float = doc("also checkpoint after a step when this many minutes passed since the last "
                              "checkpoint (0 = off); SIGINT/SIGTERM always checkpoint before stopping", 10.0, ge=0)
    keep_checkpoints: int = doc("how many recent checkpoints to keep", 2, ge=1)
    model: ModelConfig = shared(ModelConfig)
    task: TaskConfig = shared(TaskConfig)
    rollout: RolloutConfig = shared(RolloutConfig)
    reward: RewardConfig = shared(RewardConfig)
    ray: RayConfig = shared(RayConfig)
    logging: LoggingConfig = shared(LoggingConfig)
    RL_LOOP: ClassVar[bool] = False  # the root of a trainer running llmrl.rl.loop (rollout.async, Ray rollout workers)

    def validate_shared(self) -> None:
        """Every field's declared choices and bounds (:func:`check_fields`) and the registered task name; a
        root's ``validate`` calls this, then checks its own sections."""
        from llmrl.tasks import TASKS

        check_fields(self)
        m, model_need = self.model, requirement("model")
        for key, value in (("device", m.device), ("reference_device", m.reference_device)):
            # the spelling only (CUDA is checked when the model is built); reference_device may be null
            issue = None if value is None and key == "reference_device" else device_spec_issue(value)
            model_need(issue is None, key, issue or "")
        need = requirement("task")
        need(self.task.name in TASKS, "name", f"unknown task {self.task.name!r}; valid: {TASKS.names()}")
        self.ray.validate()
        r = self.rollout
        r.agents.validate()
        if r.agents.count:
            need = requirement("rollout.agents")
            need(self.RL_LOOP, "count", f"read by the RL loop only (trainers rl, dvpo), not by trainer {self.trainer!r}")
            for key, on in (("rollout.env", r.env is not None), ("rollout.dynamic_sampling", r.dynamic_sampling),
                            ("rollout.async", r.async_),
                            ("ray.rollout_workers", self.ray.enabled and self.ray.rollout_workers > 0)):
                need(not on, "count", f"multi-agent discussions do not combine with {key}")
        loop_only = f"read by the RL loop only (trainers rl, dvpo), not by trainer {self.trainer!r}"
        requirement("rollout")(self.RL_LOOP or not self.rollout.async_, "async", loop_only)
        requirement("ray")(self.RL_LOOP or not (self.ray.enabled and self.ray.rollout_workers), "rollout_workers",
                           loop_only + " (set ray.rollout_workers=0 to keep the Ray reward workers)")
