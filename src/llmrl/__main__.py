"""``python -m llmrl`` (what ``torchrun -m llmrl train RECIPE`` runs on each rank): the ``llmrl`` command."""

from llmrl.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
