"""SWE-style code repair built offline from a local Python source tree (SWE-RL, arXiv:2502.18449; SoRFT,
arXiv:2502.20127).

Each sample is one verified bug injected by :mod:`llmrl.tasks.bugs` into a function of a ``.py`` file under
``source_dir`` (default: this interpreter's standard library, ``sysconfig.get_paths()["stdlib"]``), with an
issue-style description of the symptom that names the misbehaving function (``module.Class.method``) but
not the line or the fix. The same bugs drive five subtasks (option ``subtask``: one name, or a list to mix
them, each bug getting one drawn by its id):

``repair``   SWE-RL: the issue and an excerpt of the buggy file (``swe_rl_prompt``); answer SEARCH/REPLACE
             edits; reward ``swe_rl`` = :func:`~llmrl.rewards.swe.swe_rl_reward` (patch similarity in
             [0, 1], −1 on a format error).
``file``     SoRFT file localisation: the issue and ``num_candidate_files`` repository paths (the gold file,
             files of its directory and random others, sorted); reward F_β of the listed paths.
``function`` SoRFT function localisation: the issue and the file's skeleton (class and ``def`` headers,
             at most ``max_skeleton_items`` functions including the gold one); reward F_β of the named
             functions (``function: Class.method`` under a ``path`` line).
``line``     SoRFT line localisation: the issue and the buggy function with line numbers; reward F_β of
             the listed lines (``line: N``).
``edit``     SoRFT code edit: the issue and the buggy function only; SEARCH/REPLACE edits; reward F_β of
             the edit's line diff against the oracle diff: items ``("-", n)`` for each removed buggy line
             and ``("+", n, text)`` for each added line (n = where it goes), so touching the right line
             without the right text earns part of the reward and extra changes cost precision.

Localisation answers and edits go in the SWE-RL template (``<think>…</think><solution>…</solution>``); a
localisation or edit completion that breaks the template, names no target, or names a target not shown in
the prompt (a hallucination) scores 0 (SoRFT). Gold localisation = the bug's file, function and the buggy
file's changed lines (for a deleted statement, the two lines around the gap). β = ``beta`` (3).

Sample fields: ``task``, ``subtask``, ``prompt`` (chat messages), ``answer`` (the gold solution text),
``issue``, ``kind``/``variant`` (see :mod:`llmrl.tasks.bugs`), ``bug_id``, ``path``, ``function``,
``lines``; ``files`` / ``oracle_files`` ({path: text}, buggy / original) hold exactly the code an edit
applies to -- the function for ``edit``, the excerpt for the others -- starting at line ``first_line`` of
the file; ``candidates`` lists the paths / functions / lines shown to a localisation subtask.

Prompt size: ``repair`` shows the function plus ``context_lines`` lines on each side (None = the whole
file); functions longer than ``max_function_lines`` never receive bugs; files over 200 kB are skipped.

Splits: a bug is ``test`` iff ``split_of(bug_id)`` says so (the hash of its path, position and new text), so
train and test never share a bug, whatever the subtask. Samples are deterministic in (options, split, seed).
"""

from __future__ import annotations

import difflib
import os
import random
import sysconfig
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from llmrl.rewards.base import RewardFn
from llmrl.rewards.localization import (
    DEFAULT_BETA,
    answer_items,
    f_beta,
    file_localization_reward,
    function_localization_reward,
    line_localization_reward,
)
from llmrl.rewards.swe import (
    SWE_RL_SYSTEM,
    apply_edits,
    parse_search_replace,
    split_think_solution,
    swe_rl_prompt,
    swe_rl_reward,
)
from llmrl.tasks.base import SPLITS, TASKS, TEXT, Task, split_of
from llmrl.tasks.bugs import KINDS, Bug, Corpus
from llmrl.tasks.io import DataError

if TYPE_CHECKING:
    from llmrl.core.types import Sample

SUBTASKS = ("repair", "file", "function", "line", "edit")
LOCALISATION = ("file", "function", "line")
REWARD_NAMES = {"repair": "swe_rl", "file": "file", "function": "function", "line": "line", "edit": "edit"}
_FILES = {"files": dict[str, str], "oracle_files": dict[str, str]}
SUBTASK_FIELDS: dict[str, dict[str, Any]] = {
    "repair": {**_FILES},
    "edit": {**_FILES, "path": str, "first_line": int, "lines": list[int]},
    "file": {"path": str, "candidates": list[str]},
    "function": {"path": str, "function": str, "candidates": list[str]},
    "line": {"path": str, "lines": list[int], "candidates": list[str]},
}
"""Fields the reward / verifier of each subtask reads from a sample (besides ``subtask`` and ``prompt``)."""
MAX_EDIT_GROWTH = 200
"""An ``edit`` answer whose result has more than 2·n + MAX_EDIT_GROWTH lines (n = lines shown) scores 0:
a fix does not balloon a function, and this bounds the line diff's cost."""

_SYMPTOMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("operator", "arithmetic"): (
        "`{name}` computes wrong values: for ordinary inputs the numbers it produces are off.",
        "The arithmetic in `{name}` looks broken: results are wrong, sometimes wildly.",
    ),
    ("operator", "bitwise"): (
        "`{name}` produces wrong bit patterns / flag values for ordinary inputs.",
    ),
    ("operator", "augmented"): (
        "`{name}` accumulates a running value in the wrong way, so totals/offsets come out wrong.",
    ),
    ("comparison", "boundary"): (
        "`{name}` mishandles boundary cases: inputs exactly at a limit take the wrong path.",
        "`{name}` is wrong right at the edge of a range: the boundary value is treated like the other side.",
    ),
    ("comparison", "equality"): (
        "`{name}` treats matching and non-matching values the other way round in some check.",
        "A check in `{name}` seems inverted: cases that should match are rejected and vice versa.",
    ),
    ("off_by_one", "literal"): (
        "`{name}` is off by one: an index, count or limit is one too large or too small.",
        "Results of `{name}` are shifted by one position or have one element too many/too few.",
    ),
    ("off_by_one", "bound"): (
        "`{name}` is off by one: a range or slice covers one element too many or too few.",
    ),
    ("wrong_variable", "local"): (
        "`{name}` uses the wrong value somewhere: its result depends on the wrong variable.",
        "`{name}` mixes up its variables: changing one input affects the output in unexpected ways.",
    ),
    ("missing_call", "wrapper"): (
        "`{name}` skips a processing step: a value is used as is instead of being converted/transformed first.",
        "In `{name}` a value is not passed through the function that should normalise it, so the result has the wrong form.",
    ),
    ("missing_call", "statement"): (
        "`{name}` forgets to do something: a step it should perform (a call made for its effect) never happens.",
        "After calling `{name}` some state is not updated/flushed/registered as it should be.",
    ),
    ("boolean_op", "and"): (
        "`{name}` accepts cases it should reject: a combined condition is too permissive.",
    ),
    ("boolean_op", "or"): (
        "`{name}` rejects cases it should accept: a combined condition is too strict.",
    ),
    ("negation", "added"): (
        "`{name}` behaves as if a condition were inverted: it takes the branch meant for the opposite case.",
    ),
    ("negation", "dropped"): (
        "`{name}` behaves as if a condition were inverted: a case that should be excluded is handled and vice versa.",
    ),
}
_OPENERS = ("", "I noticed a regression. ", "While using `{module}` I ran into this. ",
            "This looks like a bug in `{module}`. ")
_CLOSERS = ("", " The rest of the module behaves as documented.", " Expected: the documented behaviour.")
_INTRO = "We are currently solving the following issue within our repository. Here is the issue text:\n"
_ANSWER_IN = "Put the answer inside <solution></solution>, one item per line, and nothing else there."


def module_name(path: str) -> str:
    """``json/decoder.py`` → ``json.decoder``; ``json/__init__.py`` → ``json``."""
    mod = path.removesuffix(".py").replace("/", ".")
    return mod.removesuffix(".__init__") if mod != "__init__" else mod


def gold_edit(path: str, buggy: str, fixed: str) -> str:
    """A SEARCH/REPLACE block turning ``buggy`` into ``fixed``: the changed lines plus the fewest context
    lines that make the search text occur exactly once (line-anchored, as the SWE-RL reward applies it)."""
    a, b = buggy.split("\n"), fixed.split("\n")
    lo = 0
    while lo < min(len(a), len(b)) and a[lo] == b[lo]:
        lo += 1
    tail = 0
    while tail < min(len(a), len(b)) - lo and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    content = "\n" + buggy
    for k in range(max(len(a), len(b)) + 1):
        i = max(0, lo - k)
        search = "\n".join(a[i : min(len(a), len(a) - tail + k)])
        replace = "\n".join(b[i : min(len(b), len(b) - tail + k)])
        if search.strip() and search != replace and content.count("\n" + search) == 1:
            return f"```python\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"
    raise ValueError(f"no unique SEARCH/REPLACE edit for {path}")  # pragma: no cover - the whole text is unique


def diff_items(old: str, new: str, first_line: int) -> tuple[set[tuple[Any, ...]], set[int]]:
    """(items, touched lines) of the line diff old → new; ``old`` starts at line ``first_line``. Items:
    ``("-", n)`` per removed old line n, ``("+", n, text)`` per added line placed before old line n.
    Touched: removed lines, and both neighbours of a pure insertion."""
    a, b = old.split("\n"), new.split("\n")
    items: set[tuple[Any, ...]] = set()
    touched: set[int] = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        items.update(("-", first_line + i) for i in range(i1, i2))
        items.update(("+", first_line + i1, b[j]) for j in range(j1, j2))
        touched.update(range(first_line + i1, first_line + i2))
        if i1 == i2:
            touched.update((first_line + i1 - 1, first_line + i1))
    return items, touched


@TASKS.register("code_repair")
class CodeRepairTask(Task):
    """SWE-style bug repair and SoRFT localisation from a local Python tree (stdlib by default)."""

    name = "code_repair"

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike[str] | None = None,
        subtask: str | Sequence[str] = "repair",
        kinds: Sequence[str] = KINDS,
        context_lines: int | None = 20,
        max_function_lines: int = 60,
        num_candidate_files: int = 20,
        max_skeleton_items: int = 40,
        beta: float = DEFAULT_BETA,
    ) -> None:
        subtasks = (subtask,) if isinstance(subtask, str) else tuple(subtask)
        if not subtasks or any(s not in SUBTASKS for s in subtasks):
            raise ValueError(f"code_repair: subtask must be one of {SUBTASKS} or a list of them, got {subtask!r}")
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"code_repair: kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
        for key, value, low in (("context_lines", context_lines, 0), ("max_function_lines", max_function_lines, 2),
                                ("num_candidate_files", num_candidate_files, 1),
                                ("max_skeleton_items", max_skeleton_items, 1)):
            if value is None and key == "context_lines":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"code_repair: {key} must be an integer >= {low}, got {value!r}")
        f_beta([1], [1], beta)  # validates beta
        root = source_dir if source_dir is not None else sysconfig.get_paths()["stdlib"]
        self.subtasks, self.kinds, self.context_lines = subtasks, kinds, context_lines
        self.num_candidate_files, self.max_skeleton_items, self.beta = num_candidate_files, max_skeleton_items, beta
        self.corpus = Corpus(root, max_function_lines)

    def sample_fields(self, sample: Mapping[str, Any], uses: Collection[str] = (),
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The fields of the sample's subtask (:data:`SUBTASK_FIELDS`); demonstrations also read ``answer``,
        ``path``, ``function``, ``lines`` and, for repair, edit and line, ``files``, ``oracle_files``, ``first_line``
        and ``kind``."""
        subtask = sample.get("subtask")
        required: dict[str, Any] = {"subtask": Literal[SUBTASKS]}
        required.update(SUBTASK_FIELDS.get(subtask, {}) if isinstance(subtask, str) else {})
        if "demonstration" in uses:
            required.update(answer=TEXT, path=str, function=str, lines=list[int])
            if subtask not in ("file", "function"):
                required.update(_FILES, first_line=int, kind=str)
        return required, {}

    # -- samples ------------------------------------------------------------------------------------
    def samples(self, n: int, split: str = "train", seed: int = 0, max_tries: int | None = None) -> list[Sample]:
        """``n`` distinct bugs of ``split`` (by the hash of the bug id), deterministic in (options, split,
        seed); the bug sequence does not depend on ``subtask``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        frac = self.test_fraction
        out: list[Sample] = []
        seen: set[str] = set()
        tries, limit = 0, max_tries if max_tries is not None else 50 * n + 500
        while len(out) < n:
            tries += 1
            if tries > limit:
                if not out and not seen:
                    raise DataError(f"code_repair: no function under {self.corpus.root!r} offers a bug of kinds "
                                    f"{list(self.kinds)} for the {split} split")
                raise DataError(f"code_repair: found only {len(out)} distinct {split} bugs of {n} requested "
                                   f"in {limit} tries under {self.corpus.root!r}; use a larger source_dir")
            bug = self.corpus.draw(rng, self.kinds, lambda bug_id: split_of(bug_id, frac) == split)
            if bug is None or bug.site.bug_id in seen:
                continue
            seen.add(bug.site.bug_id)
            out.append(self.build(bug))
        return out

    def make_sample(self, rng: random.Random) -> Sample:
        """One sample of either split."""
        for _ in range(10_000):
            bug = self.corpus.draw(rng, self.kinds)
            if bug is not None:
                return self.build(bug)
        raise DataError(f"code_repair: no bug found under {self.corpus.root!r}")

    def build(self, bug: Bug) -> Sample:
        """The sample of one bug (subtask drawn by the bug id when several are configured)."""
        rng = random.Random(bug.site.bug_id)
        subtask = self.subtasks[rng.randrange(len(self.subtasks))] if len(self.subtasks) > 1 else self.subtasks[0]
        sf, unit, path = bug.source, bug.unit, bug.path
        issue = self.issue(bug, rng)
        if subtask == "edit" or self.context_lines is None:
            first, last = (unit.start_line, unit.end_line) if subtask == "edit" else (1, sf.num_lines)
        else:
            first = max(1, unit.start_line - self.context_lines)
            last = min(sf.num_lines, unit.end_line + self.context_lines)
        lo, hi = sf.line_span(first, last)
        original = sf.text[lo:hi]
        buggy = bug.buggy[lo : hi + len(bug.site.new) - (bug.site.end - bug.site.start)]
        gold_lines = bug.gold_lines()
        sample: Sample = {
            "task": self.name, "subtask": subtask, "kind": bug.site.kind, "variant": bug.site.variant,
            "bug_id": bug.site.bug_id, "path": path, "function": unit.qualname, "lines": gold_lines,
            "issue": issue, "files": {path: buggy}, "oracle_files": {path: original}, "first_line": first,
        }
        if subtask in ("repair", "edit"):
            sample["prompt"] = swe_rl_prompt(issue, {path: buggy})
            sample["answer"] = gold_edit(path, buggy, original)
        elif subtask == "file":
            candidates = self._candidate_files(path, rng)
            listing = "\n".join(candidates)
            user = (f"{_INTRO}--- BEGIN ISSUE ---\n{issue}\n--- END ISSUE ---\n\n"
                    f"Below are some of the repository's files.\n--- BEGIN FILES ---\n{listing}\n--- END FILES ---\n\n"
                    "Which files must be edited to fix the issue? List their full paths, most likely first, "
                    f"only paths from the list above. {_ANSWER_IN}")
            sample.update(candidates=candidates, answer=path)
        elif subtask == "function":
            skeleton, candidates = self._skeleton(bug, rng)
            user = (f"{_INTRO}--- BEGIN ISSUE ---\n{issue}\n--- END ISSUE ---\n\n"
                    f"Below is the skeleton of {path} (class and function headers).\n"
                    f"--- BEGIN FILE ---\n### {path}\n{skeleton}\n--- END FILE ---\n\n"
                    "Which functions must be edited to fix the issue? Give the file path on the first line, then "
                    f"one `function: Name` or `function: Class.method` per line. {_ANSWER_IN}")
            sample.update(candidates=candidates, answer=f"{path}\nfunction: {unit.qualname}")
        else:  # line
            end = unit.end_line + bug.line_delta
            ulo, uhi = sf.line_span(unit.start_line, unit.end_line)
            code = bug.buggy[ulo : uhi + len(bug.site.new) - (bug.site.end - bug.site.start)]
            numbered = "\n".join(f"{n:5d} | {text}" for n, text in enumerate(code.split("\n"), unit.start_line)
                                 if n <= end)
            user = (f"{_INTRO}--- BEGIN ISSUE ---\n{issue}\n--- END ISSUE ---\n\n"
                    f"Below is the function `{unit.qualname}` from {path}, with line numbers.\n"
                    f"--- BEGIN FILE ---\n### {path}\n{numbered}\n--- END FILE ---\n\n"
                    "Which lines must be edited to fix the issue? Give the file path on the first line, then one "
                    f"`line: N` per line. {_ANSWER_IN}")
            sample.update(candidates=[f"{path}:{n}" for n in range(unit.start_line, end + 1)],
                          answer=path + "".join(f"\nline: {n}" for n in gold_lines))
        if subtask in LOCALISATION:
            sample["prompt"] = [{"role": "system", "content": SWE_RL_SYSTEM}, {"role": "user", "content": user}]
        return sample

    def issue(self, bug: Bug, rng: random.Random) -> str:
        """An issue-style report of the symptom: names the function, not the line or the fix."""
        module = module_name(bug.path)
        name = f"{module}.{bug.unit.qualname}"
        symptom = rng.choice(_SYMPTOMS[(bug.site.kind, bug.site.variant)]).format(name=name)
        title = f"Bug in `{name}`"
        body = rng.choice(_OPENERS).format(module=module) + symptom + rng.choice(_CLOSERS)
        return f"{title}\n\n{body}"

    def _candidate_files(self, path: str, rng: random.Random) -> list[str]:
        """The gold path, up to half the list from its directory, the rest random; sorted."""
        paths = self.corpus.paths
        k = min(self.num_candidate_files, len(paths))
        folder = path.rpartition("/")[0]
        siblings = [p for p in paths if p != path and p.rpartition("/")[0] == folder]
        chosen = {path, *rng.sample(siblings, min(len(siblings), (k - 1) // 2))}
        others = [p for p in paths if p not in chosen]
        chosen.update(rng.sample(others, min(len(others), k - len(chosen))))
        return sorted(chosen)

    def _skeleton(self, bug: Bug, rng: random.Random) -> tuple[str, list[str]]:
        """(skeleton text, known ``path::name`` entries) of at most ``max_skeleton_items`` functions."""
        sf, path = bug.source, bug.path
        others = [u for u in sf.units if u is not bug.unit]
        shown = {id(bug.unit)} | {id(u) for u in rng.sample(others, min(len(others), self.max_skeleton_items - 1))}
        entries: list[tuple[int, str]] = []
        known: list[str] = []
        classes_used: set[str] = set()
        for unit in sf.units:
            if id(unit) in shown:
                entries.append((unit.def_line, unit.signature))
                known.append(f"{path}::{unit.qualname}")
                if "." in unit.qualname:
                    classes_used.add(unit.qualname.partition(".")[0])
        for cls, line, header in sf.classes:
            if cls in classes_used:
                entries.append((line, header))
                known.append(f"{path}::{cls}")
        return "\n".join(text for _, text in sorted(entries)), known

    # -- rewards --------------------------------------------------------------------------------------
    def _edits(self, completion: str, sample: Mapping[str, Any]) -> dict[str, str] | None:
        """The files after applying the completion's SEARCH/REPLACE edits (None: format error or an edit to
        a file not shown)."""
        parts = split_think_solution(completion)
        edits = parse_search_replace(parts[1]) if parts is not None else None
        if edits is None or not set(edits) <= set(sample["files"]):
            return None
        return apply_edits(sample["files"], edits)

    def _edit_diff(self, completion: str, sample: Mapping[str, Any]) -> tuple[set[tuple[Any, ...]], set[int]] | None:
        new = self._edits(completion, sample)
        path = sample["path"]
        if new is None or path not in new:
            return None
        old = sample["files"][path]
        if new[path].count("\n") > 2 * old.count("\n") + MAX_EDIT_GROWTH:
            return None
        return diff_items(old, new[path], int(sample["first_line"]))

    def score(self, completion: str, sample: Mapping[str, Any]) -> float:
        """The reward of ``completion`` for the sample's subtask (see the module docstring)."""
        subtask, path = sample["subtask"], sample["path"]
        if subtask == "repair":
            return swe_rl_reward(completion, sample["files"], sample["oracle_files"])
        if subtask == "edit":
            pred = self._edit_diff(completion, sample)
            if pred is None:
                return 0.0
            gold, _ = diff_items(sample["files"][path], sample["oracle_files"][path], int(sample["first_line"]))
            return f_beta(pred[0], gold, self.beta)
        parts = split_think_solution(completion)
        if parts is None:
            return 0.0
        if subtask == "file":
            return file_localization_reward(parts[1], [path], sample["candidates"], self.beta)
        if subtask == "function":
            gold = [f"{path}::{sample['function']}"]
            return function_localization_reward(parts[1], gold, sample["candidates"], self.beta)
        if subtask == "line":
            gold_lines = [f"{path}:{n}" for n in sample["lines"]]
            return line_localization_reward(parts[1], gold_lines, sample["candidates"], self.beta)
        raise ValueError(f"code_repair: unknown subtask {subtask!r} in sample")

    def reward_functions(self) -> dict[str, RewardFn]:
        """One component per subtask (``swe_rl``, ``file``, ``function``, ``line``, ``edit``); each scores
        only samples of its subtask (None otherwise), so a file mixing subtasks scores correctly."""

        def component(subtask: str) -> RewardFn:
            def fn(completion: str, sample: Mapping[str, Any]) -> float | None:
                return self.score(completion, sample) if sample.get("subtask") == subtask else None

            fn.__name__ = REWARD_NAMES[subtask]
            return fn

        return {REWARD_NAMES[s]: component(s) for s in SUBTASKS}

    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """The think/solution template holds and the solution has SEARCH/REPLACE blocks (edits) or at least
        one answer line (localisation; whether the lines parse is left to the reward)."""
        parts = split_think_solution(completion)
        if parts is None:
            return False
        if sample["subtask"] in LOCALISATION:
            return bool(answer_items(parts[1]))
        return parse_search_replace(parts[1]) is not None

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """Edits: the edited code equals the original exactly. Localisation: exactly the gold set."""
        if sample["subtask"] in LOCALISATION:
            return self.score(completion, sample) == 1.0
        new = self._edits(completion, sample)
        return new is not None and new == dict(sample["oracle_files"])

    def accept_for_sft(self, completion: str, sample: Mapping[str, Any]) -> bool:
        """SoRFT's rejection-sampling filter: a localisation answer overlapping the gold set (and naming
        nothing absent from the prompt); an edit that applies and touches a gold line."""
        if sample["subtask"] in LOCALISATION:
            return self.score(completion, sample) > 0.0
        pred = self._edit_diff(completion, sample)
        return pred is not None and bool(pred[1] & set(sample["lines"]))

    # -- demonstrations -----------------------------------------------------------------------------
    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """A gold completion (maximum reward): a short rationale in ``<think>``, the answer in
        ``<solution>``."""
        path, func, lines = sample["path"], sample["function"], sample["lines"]
        where = f"`{func}` in {path}"
        if sample["subtask"] == "file":
            why = f"The issue is about `{func}` of the module `{module_name(path)}`, which is the file {path}."
        elif sample["subtask"] == "function":
            why = f"The misbehaving code is {where}; the problem is inside that function."
        else:
            old = sample["files"][path].split("\n")
            new = sample["oracle_files"][path].split("\n")
            first = int(sample["first_line"])
            changes = []
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
                if tag != "equal":
                    was = " / ".join(x.strip() for x in old[i1:i2]) or "(nothing)"
                    fix = " / ".join(x.strip() for x in new[j1:j2]) or "(nothing)"
                    changes.append(f"at line {first + i1} `{was}` should be `{fix}`")
            why = f"The bug ({sample['kind'].replace('_', ' ')}) is in {where}: " + "; ".join(changes) + "."
            if sample["subtask"] == "line":
                why += f" So the line(s) to edit: {', '.join(map(str, lines))}."
        return f"<think>\n{why}\n</think>\n<solution>\n{sample['answer']}\n</solution>"


__all__ = ["SUBTASKS", "CodeRepairTask", "diff_items", "gold_edit", "module_name"]
