"""The SmolLM2-135M-Instruct arithmetic recipes (full fine-tune and LoRA) and the chat style of the arithmetic
task they train on. No network and no real model: the recipes run one RL step on a tiny local HF model whose
tokenizer is given a chat template here."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmrl.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [ROOT / "recipes" / "smollm2_arithmetic.yaml", ROOT / "recipes" / "smollm2_arithmetic_lora.yaml"]
IDS = [r.stem for r in RECIPES]
INTENDED = "SmolLM2-135M-Instruct"
# A ChatML-like template in the tiny character tokenizer's alphabet (printable ASCII), ending with its <eos>.
TINY_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
ONE_STEP = ["steps=1", "eval.size=4", "eval.every=0", "eval.samples=2", "eval.pass_k=[1,2]", "task.train_size=16",
            "task.test_size=8", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
            "rollout.max_new_tokens=8", "threads=1", "progress=false", "save_every=0", "logging.tensorboard=false"]


# -- the recipes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_recipe_parses_validates_and_names_its_model(recipe: Path) -> None:
    from llmrl.config import load_config
    from llmrl.core.errors import ConfigError
    from llmrl.train.build import build_task, require_model

    cfg = load_config(recipe)
    assert cfg.trainer == "rl" and cfg.algo.advantage == "grpo"
    assert cfg.model.intended == INTENDED and cfg.model.path is None and cfg.model.dtype == "float32"
    assert cfg.model.lora.enabled is (recipe.stem.endswith("_lora"))
    task = build_task(cfg)
    assert task.style == "chat" and task.system_prompt
    with pytest.raises(ConfigError, match=rf"^model\.path: required: .*{INTENDED}"):
        require_model(cfg)
    require_model(load_config(recipe, ["model.path=/some/dir"]))


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_recipe_without_a_model_is_refused_in_one_line(recipe: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from llmrl.cli.main import main

    assert main(["train", str(recipe), f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmrl: error: model.path: ") and INTENDED in err[0]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama HF directory (llmrl make-tiny-model) with a chat template added to its tokenizer."""
    from llmrl.models.loading import load_tokenizer
    from llmrl.models.tiny import TinyModelSpec, save_tiny_model

    path = tmp_path_factory.mktemp("tiny_chat")
    save_tiny_model(path, TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                        intermediate_size=64, max_position_embeddings=256))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = TINY_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    assert load_tokenizer(path).chat_template, "the tiny tokenizer did not pick up the chat template"
    return path


def test_the_tiny_model_renders_the_system_prompt_through_its_template(tiny_chat_model: Path) -> None:
    from llmrl.models.loading import load_tokenizer, render_prompt

    tok = load_tokenizer(tiny_chat_model)
    sample = get_task("arithmetic", style="chat", system_prompt="Be concise.").make_sample(random.Random(0))
    text = render_prompt(tok, sample, None)
    question = sample["prompt"][1]["content"]
    assert text == f"<|system|>Be concise.<eos>\n<|user|>{question}<eos>\n<|assistant|>"


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_recipe_runs_one_rl_step_on_a_tiny_chat_model(recipe: Path, tiny_chat_model: Path, tmp_path: Path) -> None:
    from llmrl.cli.main import main

    out = tmp_path / "run"
    assert main(["train", str(recipe), f"model.path={tiny_chat_model}", f"output_dir={out}", *ONE_STEP]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1
    for key in ("accuracy_before", "accuracy_after"):
        assert isinstance(summary[key], float) and 0.0 <= summary[key] <= 1.0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [0, 1]  # before (step 0) and after
    assert (out / "final_model" / "config.json").is_file()


# -- the chat style of the arithmetic task --------------------------------------------------------------
@pytest.mark.parametrize(("completion", "parsed"), [
    ("23 + 45 = 68", "68"),
    ("The answer is 68.", "68"),
    ("To add 23 and 45, we add them together: 23 + 45 = 68, so the sum is 68", "68"),
    ("68, final.", "68"),
    ("-5", "-5"),
    ("12 - 17 = -5.", "-5"),
    ("007", "7"),
    ("-0", "0"),
    ("6.8", None),  # a decimal is not an integer answer
    ("x68", None),  # inside a word
    ("68x", None),
    ("version 1.2.3", None),
    ("no number here", None),
    ("", None),
    ("68 is what I thought, but 3.5 is a decimal", "68"),
])
def test_chat_parse(completion: str, parsed: str | None) -> None:
    task = get_task("arithmetic", style="chat")
    assert task.parse(completion) == parsed
    sample = {"prompt": "What is 23 + 45?", "answer": "68"}
    rewards = {k: f(completion, sample) for k, f in task.reward_functions().items()}
    assert rewards == {"answer": 1.0 if parsed == "68" else 0.0, "format": 0.0 if parsed is not None else -0.1}


def test_chat_prompt_is_a_user_message_or_system_then_user() -> None:
    plain = get_task("arithmetic", style="chat", digits=2, ops=["+"]).make_sample(random.Random(0))
    assert isinstance(plain["prompt"], str)
    a, b = plain["operands"]
    assert plain["prompt"] == f"What is {a} + {b}?" and plain["answer"] == str(a + b)
    with_system = get_task("arithmetic", style="chat", digits=2, ops=["+"],
                           system_prompt="Be concise.").make_sample(random.Random(0))
    assert with_system["prompt"] == [{"role": "system", "content": "Be concise."},
                                     {"role": "user", "content": plain["prompt"]}]
    for style in ("plain", "tagged"):
        with pytest.raises(ValueError, match="system_prompt"):
            get_task("arithmetic", style=style, system_prompt="Be concise.")
    with pytest.raises(ValueError, match="system_prompt"):
        get_task("arithmetic", style="chat", system_prompt=["not", "a", "string"])


def test_chat_prompts_split_disjointly() -> None:
    task = get_task("arithmetic", style="chat", digits=2, ops=["+"], system_prompt="Be concise.")
    key = lambda rows: {json.dumps(r["prompt"]) for r in rows}  # noqa: E731
    train, test = key(task.samples(2000, "train")), key(task.samples(200, "test"))
    assert len(train) == 2000 and len(test) == 200 and not train & test


def test_chat_demonstration_is_correct_and_wrong_one_parses() -> None:
    task = get_task("arithmetic", style="chat", digits=2, ops=["+", "-", "*"])
    rng = random.Random(1)
    for sample in task.samples(100, "train"):
        demo = task.demonstration(sample)
        expr = task._expression(sample["operands"], sample["ops"])
        assert demo == f"{expr} = {sample['answer']}"
        assert task.is_correct(demo, sample) and task.is_well_formed(demo, sample)
        wrong = task.wrong_demonstration(sample, rng)
        assert wrong.startswith(f"{expr} = ") and task.parse(wrong) is not None
    sample = {"operands": [23, 45], "ops": ["+"], "answer": "68"}
    assert get_task("arithmetic", style="chat").demonstration(sample) == "23 + 45 = 68"


@pytest.mark.parametrize("text", [
    "1 + 1 = 2 " * 100_000,  # 1 MB of ordinary answers
    "9" * 1_000_000 + "x",  # one long digit run that is not an integer (inside a word)
    "9" * 1_000_000,
    "1." * 500_000,  # dots between digits: decimals, never integers
    "-" * 1_000_000,
    "a1" * 500_000,
])
def test_chat_parse_of_a_1mb_completion_finishes(text: str) -> None:
    """Parsing is linear in the completion (and reads at most its last MAX_CHAT_CHARS): run, no timing."""
    task = get_task("arithmetic", style="chat")
    got = task.parse(text)
    assert got is None or got.lstrip("-").isdigit()
    assert task.is_correct(text, {"answer": "2"}) is (got == "2")
