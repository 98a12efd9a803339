"""Verifiable tasks: seeded generators with verifiers and reward functions.

The built-in tasks are registered lazily: a task's module (and what it imports: sympy-backed math parsing,
the code-repair bug injector, RDKit...) is imported on the first ``TASKS.get(name)`` / :func:`get_task`, so
``llmrl tasks list`` and ``llmrl tasks sample countdown`` import only what they use. ``_BUILTIN`` holds each
one's target and the first line of its class docstring (``llmrl tasks list`` prints it; tests/test_startup.py
checks the two agree). Importing a task's module directly registers it as before.
"""

from llmrl.tasks.base import TASKS, Task, get_task, split_of

_BUILTIN = {  # name: (module:class under llmrl.tasks, first line of the class docstring)
    "arithmetic": ("arithmetic:ArithmeticTask", "Integer arithmetic over random operands with up to ``digits`` digits."),
    "countdown": ("countdown:CountdownTask",
                  "Reach ``target`` (1..max_target) from ``num_numbers`` numbers in 1..max_number."),
    "knights_knaves": ("knights_knaves:KnightsKnavesTask",
                       "Knights & Knaves puzzles with ``n_people`` inhabitants (an int, or an inclusive (lo, hi) range"),
    "math": ("math_task:MathTask",
             "Verifiable math problems; options ``kinds``, ``style``, ``path``, ``question_key``, ``answer_key``,"),
    "translation": ("translation:TranslationTask",
                    "Translate generated Zolan sentences (fixed lexicon and grammar) into English."),
    "json_schema": ("json_schema:JsonSchemaTask",
                    "Produce a JSON object that validates against a schema (SchemaBench-style, see module doc)."),
    "code_repair": ("code_repair:CodeRepairTask",
                    "SWE-style bug repair and SoRFT localisation from a local Python tree (stdlib by default)."),
    "code_tests": ("code_tests:CodeTestsTask",
                   "Write a small Python function; reward = fraction of hidden unit tests passed in the sandbox."),
    "single_objective": ("objective:SingleObjectiveTask",
                         "Another task scored by one of its reward components only (single-objective training)."),
    "molecule": ("molecule:MoleculeTask",
                 "Design a molecule (SMILES) meeting property targets and SMARTS constraints (ChatMol-style; RDKit)."),
    "hackable": ("hackable:HackableTask",
                 "Another task whose reward gets an exploitable ``exploit`` component (length or a token)."),
}
for _name, (_target, _doc) in _BUILTIN.items():
    TASKS.register_lazy(_name, f"llmrl.tasks.{_target}", doc=_doc)
del _name, _target, _doc

__all__ = ["TASKS", "Task", "get_task", "split_of"]
