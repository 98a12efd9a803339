"""Reward functions: plain callables ``(completion, sample) -> float | None`` and helpers to combine them.

Shaping (``llmrl.rewards.shaping``) transforms batches of scalar rewards (PAR and baselines).
"""

from typing import TYPE_CHECKING

from llmrl.core.lazy import lazy_exports

if TYPE_CHECKING:
    from llmrl.rewards.base import RewardFn, RewardOutcome, combine_rewards, safe_score
    from llmrl.rewards.format import overlong_penalty, repetition_penalty, tag_format, think_answer_format
    from llmrl.rewards.judge import judge_score, judge_scores, make_judge_reward
    from llmrl.rewards.localization import (
        f_beta,
        file_localization_reward,
        function_localization_reward,
        line_localization_reward,
    )
    from llmrl.rewards.logic import kk_reward
    from llmrl.rewards.math import extract_answer, math_equal, math_reward
    from llmrl.rewards.molecule import (
        extract_smiles,
        molecule_properties,
        molecule_reward,
        property_reward,
        range_score,
        substructure_reward,
        validity_reward,
    )
    from llmrl.rewards.schema import schema_reward, tool_call_reward
    from llmrl.rewards.shaping import SHAPERS, RunningStats, length_penalty, reg_rm_loss, shape_rewards
    from llmrl.rewards.swe import swe_rl_diff_reward, swe_rl_prompt, swe_rl_reward
    from llmrl.rewards.translation import chrf, sentence_bleu, translation_reward

__all__ = [
    "SHAPERS", "RewardFn", "RewardOutcome", "RunningStats", "combine_rewards", "kk_reward", "length_penalty",
    "overlong_penalty", "reg_rm_loss", "repetition_penalty", "safe_score", "shape_rewards", "tag_format",
    "think_answer_format", "f_beta", "file_localization_reward", "function_localization_reward",
    "line_localization_reward", "swe_rl_diff_reward", "swe_rl_prompt", "swe_rl_reward", "extract_answer",
    "math_equal", "math_reward", "schema_reward", "tool_call_reward", "judge_score", "judge_scores",
    "make_judge_reward", "chrf", "sentence_bleu", "translation_reward", "extract_smiles", "molecule_properties",
    "molecule_reward", "property_reward", "range_score", "substructure_reward", "validity_reward",
]
# Lazy (llmrl.core.lazy): tasks import reward modules without torch (judge and shaping need it).
_EXPORTS = {
    "RewardFn": "base", "RewardOutcome": "base", "combine_rewards": "base", "safe_score": "base",
    "overlong_penalty": "format", "repetition_penalty": "format", "tag_format": "format",
    "think_answer_format": "format",
    "judge_score": "judge", "judge_scores": "judge", "make_judge_reward": "judge",
    "f_beta": "localization", "file_localization_reward": "localization",
    "function_localization_reward": "localization", "line_localization_reward": "localization",
    "kk_reward": "logic",
    "extract_answer": "math", "math_equal": "math", "math_reward": "math",
    "extract_smiles": "molecule", "molecule_properties": "molecule", "molecule_reward": "molecule",
    "property_reward": "molecule", "range_score": "molecule", "substructure_reward": "molecule",
    "validity_reward": "molecule",
    "schema_reward": "schema", "tool_call_reward": "schema",
    "SHAPERS": "shaping", "RunningStats": "shaping", "length_penalty": "shaping", "reg_rm_loss": "shaping",
    "shape_rewards": "shaping",
    "swe_rl_diff_reward": "swe", "swe_rl_prompt": "swe", "swe_rl_reward": "swe",
    "chrf": "translation", "sentence_bleu": "translation", "translation_reward": "translation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
