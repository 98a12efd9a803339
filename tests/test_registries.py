"""Name registries: lazy entries, registration order, and the generator / data filter / preference source ones."""

import pytest

from llmrl.core.registry import Registry
from llmrl.data.filters import FILTERS, is_non_english
from llmrl.preference.ranking import RewardSource
from llmrl.preference.sources import SOURCES, build_source
from llmrl.rollout.base import GENERATORS
from llmrl.train.build import build_generator


def test_lazy_entries_import_on_first_get():
    reg: Registry = Registry("thing")
    reg.register_lazy("dumps", "json:dumps")
    assert "dumps" in reg and reg.names() == ["dumps"]
    import json

    assert reg.get("dumps") is json.dumps and reg["dumps"] is json.dumps
    with pytest.raises(ValueError, match="already registered"):
        reg.register_lazy("dumps", "json:loads")
    with pytest.raises(ValueError, match="module:attr"):
        reg.register_lazy("bad", "json")
    with pytest.raises(KeyError, match="did you mean 'dumps'"):
        reg.get("dump")


def test_ordered_registry_keeps_registration_order():
    reg: Registry = Registry("step", ordered=True)
    for name in ("b", "a", "c"):
        reg.register(name)(len)
    assert reg.names() == list(reg) == ["b", "a", "c"] and len(reg) == 3
    assert [n for n, _ in reg.items()] == ["b", "a", "c"]
    assert Registry("x").names() == []


def test_generator_backends():
    from llmrl.rollout.hf_generate import HFGenerateSampler
    from llmrl.rollout.sampler import KVCacheSampler

    assert GENERATORS.names() == ["hf", "kvcache", "vllm"]
    assert GENERATORS.get("kvcache") is KVCacheSampler and GENERATORS.get("hf") is HFGenerateSampler
    with pytest.raises(ValueError, match="unknown generator backend 'kvcahce'; did you mean 'kvcache'"):
        build_generator(None, None, "kvcahce")


def test_data_filters_in_pipeline_order():
    assert list(FILTERS) == ["language", "hyperlink", "multiple_choice", "yes_no", "true_false", "multi_part",
                             "proof"]
    assert FILTERS["language"] is is_non_english


def test_preference_sources():
    assert SOURCES.names() == ["judge", "pairwise_judge", "reward", "reward_model"]

    class Cfg:
        class online:
            source = "reward"

        class algo:
            reward_failure_value = -2.0

    class Run:
        class task:
            @staticmethod
            def reward_functions():
                return {"r": lambda c, s: 1.0}

    src = build_source(Cfg, Run)  # type: ignore[arg-type]
    assert isinstance(src, RewardSource) and src.failure_value == -2.0 and list(src.fns) == ["r"]
    Cfg.online.source = "oracle"
    with pytest.raises(KeyError, match="unknown preference source 'oracle'"):
        build_source(Cfg, Run)  # type: ignore[arg-type]


def test_config_choices_match_the_registries():
    """The config's Literal choices (docs, validation) name exactly the registered backends and sources."""
    from typing import get_args, get_type_hints

    from llmrl.preference.config import OnlineConfig
    from llmrl.train.config import RolloutConfig

    assert sorted(get_args(get_type_hints(RolloutConfig)["backend"])) == GENERATORS.names()
    assert sorted(get_args(get_type_hints(OnlineConfig)["source"])) == SOURCES.names()
