"""Advantage estimators, policy losses, KL estimators and the one loss-aggregation function.

The names below are imported lazily (:mod:`llmrl.core.lazy`): importing one light submodule (or reading a
registry's declarations with :func:`llmrl.core.registry.declared`, as config validation does) imports no torch.
"""

from typing import TYPE_CHECKING

from llmrl.core.lazy import lazy_exports

if TYPE_CHECKING:
    from llmrl.algos.advantages import (
        ADVANTAGES,
        AdvantageFn,
        RunningMean,
        discounted_returns,
        sequence_returns,
        token_rewards,
    )
    from llmrl.algos.aggregation import AGG_MODES, aggregate
    from llmrl.algos.kl import KL_KINDS, kl_estimate
    from llmrl.algos.kl_control import KLController, sequence_kl
    from llmrl.algos.losses import LOG_RATIO_CLAMP, POLICY_LOSSES, LossFn
    from llmrl.algos.mixing import (
        MaxMinResult,
        maxmin_weights,
        mirror_descent_step,
        mixture_gradient,
        mixture_log_partition,
        mixture_objective,
        normalized_reward,
    )
    from llmrl.algos.onpo import onpo_loss, onpo_target
    from llmrl.algos.preference import PREFERENCE_LOSSES, PairLossFn, preference_loss
    from llmrl.algos.privacy import (
        PrivacyAccountant,
        UserGradientSum,
        calibrate_noise_multiplier,
        gaussian_sigma,
        randomized_response,
        rr_debiased_bt_loss,
        rr_flip_probability,
    )
    from llmrl.algos.value import explained_variance, gae, value_loss

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "KL_KINDS",
    "LOG_RATIO_CLAMP",
    "POLICY_LOSSES",
    "PREFERENCE_LOSSES",
    "PairLossFn",
    "preference_loss",
    "onpo_loss",
    "onpo_target",
    "PrivacyAccountant",
    "UserGradientSum",
    "calibrate_noise_multiplier",
    "gaussian_sigma",
    "randomized_response",
    "rr_debiased_bt_loss",
    "rr_flip_probability",
    "AdvantageFn",
    "LossFn",
    "MaxMinResult",
    "maxmin_weights",
    "mirror_descent_step",
    "mixture_gradient",
    "mixture_log_partition",
    "mixture_objective",
    "normalized_reward",
    "RunningMean",
    "aggregate",
    "discounted_returns",
    "KLController",
    "explained_variance",
    "gae",
    "kl_estimate",
    "sequence_kl",
    "value_loss",
    "sequence_returns",
    "token_rewards",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "ADVANTAGES": "advantages",
    "AdvantageFn": "advantages",
    "RunningMean": "advantages",
    "discounted_returns": "advantages",
    "sequence_returns": "advantages",
    "token_rewards": "advantages",
    "AGG_MODES": "aggregation",
    "aggregate": "aggregation",
    "KL_KINDS": "kl",
    "kl_estimate": "kl",
    "KLController": "kl_control",
    "sequence_kl": "kl_control",
    "LOG_RATIO_CLAMP": "losses",
    "POLICY_LOSSES": "losses",
    "LossFn": "losses",
    "MaxMinResult": "mixing",
    "maxmin_weights": "mixing",
    "mirror_descent_step": "mixing",
    "mixture_gradient": "mixing",
    "mixture_log_partition": "mixing",
    "mixture_objective": "mixing",
    "normalized_reward": "mixing",
    "onpo_loss": "onpo",
    "onpo_target": "onpo",
    "PREFERENCE_LOSSES": "preference",
    "PairLossFn": "preference",
    "preference_loss": "preference",
    "PrivacyAccountant": "privacy",
    "UserGradientSum": "privacy",
    "calibrate_noise_multiplier": "privacy",
    "gaussian_sigma": "privacy",
    "randomized_response": "privacy",
    "rr_debiased_bt_loss": "privacy",
    "rr_flip_probability": "privacy",
    "explained_variance": "value",
    "gae": "value",
    "value_loss": "value",
})
