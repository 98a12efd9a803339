"""Every shipped recipe runs a few steps through ``llmrl train`` on a tiny model (CI smoke test).

Recipes are written for real models; here each is shrunk with the shared TINY overrides plus the
per-recipe extras below (model.path=null builds the offline tiny model).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrl.cli.main import main
from tests.conftest import TINY

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
COMMON = [*TINY, "model.path=null", "model.dtype=float32", "steps=2", "save_every=0", "sft.steps=2",
          "sft.num_examples=16", "eval.size=4", "rollout.max_new_tokens=8"]
# recipe stem -> extra overrides needed to make it tiny (keys the TINY list does not cover)
EXTRA: dict[str, list[str]] = {
    "mpo": ["mix.policy_steps=2", "mix.md_steps=2", "mix.md_samples=2", "mix.md_prompts=2"],
    "reward_model": ["rm.max_steps=2"],
    "aup_rlhf": ["rm.max_steps=2", "rm.privacy.users_per_step=4"],
    "dvpo": ["gvm.steps=3", "gvm.batch_size=4"],
    "par_ppo": ["algo.reference_samples=2"],
    "ipo_self_judge": ["online.iterations=1", "online.prompts=2", "pref.batch_size=2"],
    "onpo": ["online.iterations=1", "online.prompts=2", "pref.batch_size=2"],
    "clamp_dpo": ["online.iterations=1", "online.prompts=2", "pref.batch_size=2", "pref.max_length=64",
                  "pref.max_prompt_length=48"],
    "swe_rl": ["task.options.context_lines=0", "task.options.max_function_lines=8", "sft.batch_size=4"],
    "sorft": ["task.options.context_lines=0", "task.options.max_function_lines=8", "sft.batch_size=4",
              "sft.rejection_k=2", "sft.num_examples=4"],
}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_runs_a_few_steps(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / recipe.stem
    rc = main(["train", str(recipe), *COMMON, *EXTRA.get(recipe.stem, []), f"output_dir={out}"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary, f"{recipe.name}: empty summary"
