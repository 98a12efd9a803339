"""Verifiable tasks: seeded generators with verifiers and reward functions."""

from llmrl.tasks.base import TASKS, Task, get_task, split_of

# Importing the modules registers the built-in tasks.
from llmrl.tasks import arithmetic as _arithmetic  # noqa: E402,F401  isort: skip
from llmrl.tasks import countdown as _countdown  # noqa: E402,F401  isort: skip
from llmrl.tasks import knights_knaves as _knights_knaves  # noqa: E402,F401  isort: skip
from llmrl.tasks import math_task as _math_task  # noqa: E402,F401  isort: skip
from llmrl.tasks import translation as _translation  # noqa: E402,F401  isort: skip
from llmrl.tasks import json_schema as _json_schema  # noqa: E402,F401  isort: skip
from llmrl.tasks import code_repair as _code_repair  # noqa: E402,F401  isort: skip
from llmrl.tasks import objective as _objective  # noqa: E402,F401  isort: skip
from llmrl.tasks import molecule as _molecule  # noqa: E402,F401  isort: skip
from llmrl.tasks import hackable as _hackable  # noqa: E402,F401  isort: skip

__all__ = ["TASKS", "Task", "get_task", "split_of"]
