"""The ``llmrl`` command starts fast: ``--help`` and ``tasks list`` never import torch (or transformers, numpy)."""

import subprocess
import sys

BUILTIN_TASKS = ["arithmetic", "code_repair", "countdown", "hackable", "json_schema", "knights_knaves", "math",
                 "molecule", "single_objective", "translation"]
HEAVY = ("torch", "transformers", "numpy")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_tasks_list_does_not_import_torch():
    out = _python("import sys\n"
                  "from llmrl.cli.main import main\n"  # llmrl.cli.main is also the function (llmrl.cli re-exports it)
                  "rc = main(['tasks', 'list'])\n"
                  f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
                  "print('HEAVY', heavy, rc)\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "HEAVY [] 0"
    assert [line.split()[0] for line in lines[:-1]] == BUILTIN_TASKS
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines[:-1])  # every task has a one-line doc


def test_help_works_without_torch():
    out = _python("import sys\n"
                  "from llmrl.cli import main\n"
                  "try:\n    main(['--help'])\n"
                  "except SystemExit as e:\n    print('EXIT', e.code)\n"
                  f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: llmrl")
    for cmd in ("quickstart", "train", "tasks", "reward", "data", "rm-eval"):
        assert cmd in out.stdout
    assert out.stdout.splitlines()[-2:] == ["EXIT 0", "HEAVY []"]


def test_light_modules_do_not_import_torch():
    """Config, registries and the task package are importable without torch (torch comes with what needs it)."""
    out = _python("import sys\n"
                  "import llmrl.core, llmrl.rewards, llmrl.rollout, llmrl.tasks, llmrl.config\n"
                  "from llmrl.rollout.base import GENERATORS\n"
                  "from llmrl.data.filters import FILTERS\n"
                  "print(GENERATORS.names(), len(FILTERS), 'torch' in sys.modules)\n"
                  "from llmrl.rewards import kk_reward, SHAPERS\n"  # lazy re-exports still resolve
                  "print('torch' in sys.modules)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['hf', 'kvcache'] 7 False", "True"]
