"""Types, masked tensor ops, registries and seeding shared by every layer.

The re-exports below are lazy (:mod:`llmrl.core.lazy`): importing ``llmrl.core.registry`` or
``llmrl.core.config`` does not import torch (``llmrl.core.types`` does).
"""

from typing import TYPE_CHECKING

from llmrl.core.lazy import lazy_exports

if TYPE_CHECKING:
    from llmrl.core.registry import Registry
    from llmrl.core.types import Batch, Episode

__all__ = ["Batch", "Episode", "Registry"]
__getattr__, __dir__ = lazy_exports(__name__, {"Batch": "types", "Episode": "types", "Registry": "registry"})
