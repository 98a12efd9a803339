"""Advantage estimators, policy losses, KL estimators and the one loss-aggregation function."""

from llmrl.algos.advantages import (
    ADVANTAGES,
    AdvantageFn,
    RunningMean,
    discounted_returns,
    sequence_returns,
    token_rewards,
)
from llmrl.algos.aggregate import AGG_MODES, aggregate
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
