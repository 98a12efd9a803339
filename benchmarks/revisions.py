"""Run another git revision of llmrl beside this checkout (the "before" side of a before/after benchmark).

:func:`add_worktree` checks the revision out with ``git worktree add --detach`` into a temporary directory (this
checkout's branch, index and files are not touched); run it with ``PYTHONPATH`` at ``<worktree>/src``; then
:func:`remove_worktree`. Used by ``benchmarks/startup.py`` and ``benchmarks/busy_machine.py``.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_worktree(rev: str, prefix: str = "llmrl_rev_") -> Path:
    """A detached worktree of ``rev`` in a new temporary directory."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.rmdir()  # git creates it
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), rev], check=True)
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
