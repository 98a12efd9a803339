"""The ``llmrl`` command: :mod:`llmrl.cli.main` parses the arguments, one module per command group."""

from llmrl.cli.main import main

__all__ = ["main"]
