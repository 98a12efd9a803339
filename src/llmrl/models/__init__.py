"""Loading Hugging Face causal LMs from local directories; the offline tiny-model factory; LoRA."""

from llmrl.models.loading import (
    ModelLoadError,
    encode_prompt,
    eval_mode,
    load_model,
    load_tokenizer,
    prepare_tokenizer,
    reference_model,
    render_prompt,
    resolve_dtype,
    save_model,
)
from llmrl.models.lora import adapters_disabled, apply_lora, is_peft_model
from llmrl.models.tiny import (
    TinyModelSpec,
    build_char_tokenizer,
    build_tiny_model,
    save_tiny_model,
    tiny_config,
)

__all__ = [
    "ModelLoadError",
    "TinyModelSpec",
    "adapters_disabled",
    "apply_lora",
    "build_char_tokenizer",
    "build_tiny_model",
    "encode_prompt",
    "eval_mode",
    "is_peft_model",
    "load_model",
    "load_tokenizer",
    "prepare_tokenizer",
    "reference_model",
    "render_prompt",
    "resolve_dtype",
    "save_model",
    "save_tiny_model",
    "tiny_config",
]
