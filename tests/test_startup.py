"""The ``llmrl`` command starts fast: the commands that do not train import neither torch (nor transformers,
numpy) nor the parts of llmrl they have no use for (start-up times: benchmarks/startup.py)."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from llmrl.core.registry import Registry

BUILTIN_TASKS = ["arithmetic", "code_repair", "code_tests", "countdown", "hackable", "json_schema", "knights_knaves", "math",
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
    assert out.stdout.splitlines() == ["['hf', 'kvcache', 'vllm'] 7 False", "True"]


TASK_MODULES = ("arithmetic", "code_repair", "countdown", "hackable", "json_schema", "knights_knaves", "math_task",
                "molecule", "objective", "translation")
PARSER_ONLY = (*HEAVY, "yaml", "tqdm", "llmrl.tasks", "llmrl.config", "llmrl.train")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALGOS_UNLOADED = (*HEAVY, "tqdm", "llmrl.algos.advantages", "llmrl.algos.losses", "llmrl.algos.preference",
                  "llmrl.rewards.shaping", "llmrl.models", "llmrl.rollout.sampler")
NOT_IMPORTED = {  # command -> modules it must not import
    "--help": PARSER_ONLY,
    "train --help": PARSER_ONLY,
    "reward countdown --help": PARSER_ONLY,
    "tasks list": (*HEAVY, "tqdm", "llmrl.config", *(f"llmrl.tasks.{m}" for m in TASK_MODULES)),
    "tasks sample countdown --n 2": (*HEAVY, "tqdm", "llmrl.config",
                                     *(f"llmrl.tasks.{m}" for m in TASK_MODULES if m != "countdown")),
    "config": (*HEAVY, "tqdm", "llmrl.tasks", "llmrl.algos", "llmrl.models", "llmrl.rollout"),
    "config trainer=dpo": (*HEAVY, "tqdm", "llmrl.tasks", "llmrl.algos", "llmrl.models", "llmrl.rollout"),
    # a recipe's algorithm names and options are checked against the registries' declarations (no torch)
    **{f"config {RECIPES}/{name}.yaml": ALGOS_UNLOADED for name in ("logic_rl", "par_ppo", "dvpo", "dpo", "mpo")},
    "quickstart --print-config": ALGOS_UNLOADED,
}


@pytest.mark.parametrize("command", list(NOT_IMPORTED))
def test_commands_that_do_not_train_import_only_what_they_use(command):
    out = _python("import sys\n"
                  "from llmrl.cli import main\n"
                  "try:\n"
                  f"    rc = main({command.split()!r})\n"
                  "except SystemExit as e:\n"
                  "    rc = e.code\n"
                  f"print('IMPORTED', [m for m in {NOT_IMPORTED[command]!r} if m in sys.modules], rc)\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "IMPORTED [] 0"
    assert len(lines) > 1  # the command printed its output


def test_task_list_docs_are_the_classes_docstrings():
    """``llmrl tasks list`` prints the docs of the lazy entries (tasks/__init__.py): they must not drift from the
    classes' docstrings."""
    out = _python("from llmrl.tasks import TASKS\n"
                  "lazy = {n: TASKS.doc(n) for n in TASKS.names()}\n"
                  "loaded = {n: (TASKS.get(n).__doc__ or '').strip().splitlines()[0] for n in TASKS.names()}\n"
                  "print([n for n in lazy if lazy[n] != loaded[n] or not lazy[n]], sorted(lazy) == sorted(loaded))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[] True"]


def test_lazy_entry_is_taken_over_by_its_modules_own_registration():
    reg: Registry = Registry("thing")
    reg.register_lazy("dumps", "json:dumps", doc="serialise")
    assert reg.doc("dumps") == "serialise"
    import json

    assert reg.register("dumps")(json.dumps) is json.dumps  # the module named by the entry registers it: fine
    assert reg.get("dumps") is json.dumps and reg.doc("dumps").startswith("Serialize ``obj``")
    reg.register_lazy("loads", "json:loads")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("loads")(json.dumps)  # another callable under a lazy entry's name
    with pytest.raises(ValueError, match="already registered"):
        reg.register("dumps")(json.dumps)  # a second registration of a loaded entry


DECLARED = [("llmrl.algos.advantages", "ADVANTAGES"), ("llmrl.algos.losses", "POLICY_LOSSES"),
            ("llmrl.algos.preference", "PREFERENCE_LOSSES"), ("llmrl.rewards.shaping", "SHAPERS")]


@pytest.mark.parametrize(("module", "var"), DECLARED)
def test_declared_registry_is_the_live_one(module, var):
    """Config validation reads these registries from source (core.registry.declared): the names, parameter names
    and kinds, docs and kind must be exactly what importing the module registers."""
    import importlib

    from llmrl.core.registry import _declared

    static, live = _declared(module, var), getattr(importlib.import_module(module), var)
    assert static.names() == live.names() and static.kind == live.kind
    for name in live.names():
        want = [(p.name, p.kind) for p in inspect.signature(live.get(name)).parameters.values()]
        assert [(p.name, p.kind) for p in inspect.signature(static.get(name)).parameters.values()] == want, name
        assert static.doc(name) == live.doc(name)
        with pytest.raises(TypeError, match="declaration read from source"):
            static.get(name)()


def test_lazy_gae_entry_doc_is_its_docstring():
    out = _python("import sys\nfrom llmrl.algos.advantages import ADVANTAGES\n"
                  "lazy = ADVANTAGES.doc('gae'); print('llmrl.algos.value' in sys.modules)\n"
                  "print(lazy == ADVANTAGES.get('gae').__doc__.strip().splitlines()[0])\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False", "True"]


def test_declared_gives_the_live_registry_once_imported():
    from llmrl.algos.losses import POLICY_LOSSES
    from llmrl.core.registry import declared
    from llmrl.rewards.shaping import RESERVED
    from llmrl.rl.config import SHAPER_RESERVED

    assert declared("llmrl.algos.losses", "POLICY_LOSSES") is POLICY_LOSSES  # a user's own losses count too
    assert SHAPER_RESERVED == RESERVED


def test_algos_package_exports_resolve_lazily():
    out = _python("import sys, llmrl.algos as a\n"
                  "print('torch' in sys.modules)\n"
                  "print(all(getattr(a, n) is not None for n in a.__all__), a.ADVANTAGES.get('gae').__name__)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False", "True gae_advantages"]


@pytest.mark.parametrize("package", ["llmrl.algos", "llmrl.rollout", "llmrl.rewards", "llmrl.core"])
def test_no_lazy_export_is_named_like_a_submodule(package):
    """Importing a submodule sets the package attribute of its name, shadowing a lazy export of the same name
    (``from llmrl.algos import aggregate`` gave the module once ``llmrl.algos.aggregate`` had been imported)."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    assert not set(pkg.__all__) & {m.name for m in pkgutil.iter_modules(pkg.__path__)}


def test_exports_stay_functions_after_their_modules_are_imported():
    out = _python("import llmrl.algos.value, llmrl.algos.aggregation, llmrl.algos.kl\n"
                  "from llmrl.algos import aggregate, kl_estimate, gae\n"
                  "print(callable(aggregate), callable(kl_estimate), callable(gae))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]
