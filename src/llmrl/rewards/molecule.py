"""Molecule-design rewards in the style of ChatMol (Fan et al., 2025, arXiv:2502.19794): validity, property targets
(QED, logP, molecular weight, H-bond donors/acceptors) and substructure constraints, via RDKit.

RDKit is imported lazily on the first call (``pip install rdkit`` or ``pip install 'llmrl[chem]'``);
importing this module never needs it. RDKit's own error messages (a SMILES that does not parse, a bad
valence) are blocked for the duration of each call (``rdBase.BlockLogs``), so scoring model output never
writes to stderr and the caller's own RDKit logging is left as it was.

Spec
----
A plain JSON-friendly mapping (a task sample works as is: other keys are ignored)::

    {"targets": {"mw": [250, 350], "logp": [null, 3.0], "qed": [0.5, null], "hbd": [0, 2], "hba": [2, 6]},
     "must_match": ["c1ccccc1", {"smarts": "[CX3](=O)[OX2H1]", "description": "a carboxylic acid"}],
     "must_not_match": ["[F,Cl,Br,I]"],
     "tolerances": {"mw": 50.0}}

``targets`` maps a property name to ``[lo, hi]`` (inclusive; ``null`` = unbounded on that side);
``must_match`` / ``must_not_match`` list SMARTS patterns (strings, or objects with a ``smarts`` key);
``tolerances`` optionally overrides the decay widths below. Every key is optional. A malformed spec
(unknown property, non-numeric bound, lo > hi, a SMARTS that does not parse) raises ``ValueError``:
the spec is configuration, not model output.

Properties (:data:`PROPERTIES`): ``qed`` = ``QED.qed`` (drug-likeness in (0, 1)); ``logp`` = Crippen
``MolLogP``; ``mw`` = average molecular weight ``Descriptors.MolWt`` in Da (ethanol 46.07);
``hbd`` / ``hba`` = ``Descriptors.NumHDonors`` / ``NumHAcceptors`` (Lipinski-style counts).

Scores
------
* Target score of a value v for ``[lo, hi]`` with width w (:func:`range_score`): 1 inside the range,
  else ``max(0, 1 − d / w)`` where d is the distance to the nearer bound: a linear decay reaching 0 at
  distance w. Default widths (:data:`DEFAULT_TOLERANCES`): qed 0.2, logp 2.0, mw 100 Da, hbd 3, hba 3
  (one donor too many scores 2/3).
* Property score P = mean of the target scores (1.0 when there are no targets).
* Substructure score S = fraction of the SMARTS constraints satisfied (1.0 when there are none).
* Design score (:func:`molecule_reward` without format) for a valid molecule: the weighted mean
  ``(w_v·1 + w_p·P + w_s·S) / (w_v + w_p + w_s)``, where the property and substructure terms (and their
  weights) are left out when the spec has no targets / no SMARTS. Default weights
  (:data:`DEFAULT_WEIGHTS`) are all 1, so a valid molecule that misses everything still beats an invalid
  one and a molecule meeting every constraint scores exactly 1.0. An invalid molecule (or none found)
  scores ``invalid_value`` (default 0.0) instead.
* Optional format component: ``+format_weight`` (default 0) when the tags ``<think>…</think><answer>…
  </answer>`` (``format_tags``) each occur once and in order in ``sample["assistant_prefix"] +
  completion`` (:func:`llmrl.rewards.format.think_answer_format`).

Range of :func:`molecule_reward`: ``[min(0, invalid_value), max(1, invalid_value) + format_weight]``,
i.e. [0, 1] with the defaults.

Which SMILES is scored (:func:`extract_smiles`)
-----------------------------------------------
* If the completion has an ``<answer>…</answer>`` block, the content of the LAST one, stripped of
  whitespace and of surrounding quotes/backticks, must be exactly one SMILES; anything else there
  (prose, two tokens, an empty block) is invalid. No fallback to the rest of the text.
* Otherwise (and only with ``fallback=True``, the default) the last :data:`FALLBACK_CHARS` characters are
  split on whitespace; each token is stripped of quotes/backticks and trailing ``.,;:!?``; of the last
  :data:`FALLBACK_TOKENS` tokens made only of SMILES characters, the last one that is a valid molecule is
  taken. This is a heuristic for models that ignore the format (English words like "I" parse as SMILES);
  the format component is how a model is taught to answer cleanly.

A SMILES is *valid* when it is at most :data:`MAX_SMILES_CHARS` (256) characters of the SMILES alphabet,
``Chem.MolFromSmiles`` parses and sanitizes it, it has at least one atom, no dummy atoms (``*``) and, unless
``allow_fragments=True``, exactly one connected fragment (no ``.``-joined pieces padding the weight).
A molecule whose requested properties cannot be computed (an RDKit error or a non-finite value) also
counts as invalid.

Cost bound
----------
Never raises on any completion (non-strings score as empty) and always returns a finite number in the
range above. Work per call is linear in the completion length (one ``str.find`` scan for the answer tags
and tag counts) plus at most :data:`FALLBACK_TOKENS` RDKit parses of ≤ 256-character SMILES and one set of
property/SMARTS evaluations on a molecule of ≤ 256 atoms. Measured on the 2-core development CPU: ~3 ms
for a new drug-like answer with three targets (~0.5 ms once cached), under 10 ms for the 1 MB inputs of the
tests (a run of ``C``, ``(``, ring digits, tags); the tests assert a generous 2 s per call.
Parsed molecules and their properties are cached (LRU, 4,096 SMILES), so repeated samples in a GRPO
group are scored once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from llmrl.rewards.format import think_answer_format
from llmrl.rewards.logic import extract_last_answer

PROPERTIES = ("qed", "logp", "mw", "hbd", "hba")
DEFAULT_TOLERANCES: dict[str, float] = {"qed": 0.2, "logp": 2.0, "mw": 100.0, "hbd": 3.0, "hba": 3.0}
DEFAULT_WEIGHTS: dict[str, float] = {"validity": 1.0, "properties": 1.0, "substructures": 1.0}
MAX_SMILES_CHARS = 256
FALLBACK_CHARS = 4096
FALLBACK_TOKENS = 16
_SMILES_CHARS = re.compile(r"[A-Za-z0-9@+\-\[\]()=#$%/\\.:*]+")
_WRAPPERS = "`'\""
_TRAILING = ".,;:!?"
_rdkit: SimpleNamespace | None = None


def _chem() -> SimpleNamespace:
    """The RDKit modules used here, imported on first use (clear error when RDKit is missing)."""
    global _rdkit
    if _rdkit is None:
        try:
            from rdkit import Chem, rdBase
            from rdkit.Chem import QED, Crippen, Descriptors
        except ImportError as exc:
            raise ImportError(
                "molecule rewards need RDKit: pip install rdkit (or pip install 'llmrl[chem]')"
            ) from exc
        _rdkit = SimpleNamespace(Chem=Chem, rdBase=rdBase, QED=QED, Crippen=Crippen, Descriptors=Descriptors)
    return _rdkit


# -- parsing and properties ------------------------------------------------------------------------
@dataclass
class _Molecule:
    mol: Any
    props: dict[str, float] = field(default_factory=dict)

    def prop(self, name: str) -> float:
        if name not in self.props:
            rd = _chem()
            fn = {"qed": rd.QED.qed, "logp": rd.Crippen.MolLogP, "mw": rd.Descriptors.MolWt,
                  "hbd": rd.Descriptors.NumHDonors, "hba": rd.Descriptors.NumHAcceptors}[name]
            self.props[name] = float(fn(self.mol))
        return self.props[name]


def _parse(smiles: str, allow_fragments: bool) -> _Molecule | None:
    """The parsed molecule, or None when ``smiles`` is not valid (length and alphabet checked before the
    cache, so only short strings are ever kept)."""
    if not 0 < len(smiles) <= MAX_SMILES_CHARS or not _SMILES_CHARS.fullmatch(smiles):
        return None
    return _parse_cached(smiles, allow_fragments)


@lru_cache(maxsize=4096)
def _parse_cached(smiles: str, allow_fragments: bool) -> _Molecule | None:
    rd = _chem()
    blocker = rd.rdBase.BlockLogs()  # silence parse/sanitize messages until released
    try:
        mol = rd.Chem.MolFromSmiles(smiles)
    except Exception:  # RDKit reports bad input as None; anything else is still "invalid"
        mol = None
    finally:
        del blocker
    if mol is None or mol.GetNumAtoms() == 0 or any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()):
        return None
    if not allow_fragments and len(rd.Chem.GetMolFrags(mol)) != 1:
        return None
    return _Molecule(mol)


def is_valid_smiles(smiles: str, allow_fragments: bool = False) -> bool:
    """True iff ``smiles`` is a valid molecule in the sense of the module docstring."""
    return isinstance(smiles, str) and _parse(smiles, allow_fragments) is not None


def molecule_properties(smiles: str, allow_fragments: bool = False) -> dict[str, float] | None:
    """All :data:`PROPERTIES` of a valid SMILES (``{"qed": …, "logp": …, "mw": …, "hbd": …, "hba": …}``),
    or None when it is not valid."""
    m = _parse(smiles, allow_fragments) if isinstance(smiles, str) else None
    return None if m is None else {name: m.prop(name) for name in PROPERTIES}


# -- extraction -------------------------------------------------------------------------------------
def _clean(token: str) -> str:
    return token.strip().strip(_WRAPPERS).strip()


def extract_smiles(completion: str, fallback: bool = True, allow_fragments: bool = False) -> str | None:
    """The SMILES a completion proposes (see "Which SMILES is scored" in the module docstring), or None.

    With an ``<answer>`` block the returned string may still be an invalid molecule (it is the block's
    content); the fallback only ever returns valid ones."""
    if not isinstance(completion, str):
        return None
    content = extract_last_answer(completion)
    if content is not None:
        smiles = _clean(content)
        if len(smiles) > MAX_SMILES_CHARS:  # invalid anyway; skip the whitespace scan
            return smiles
        return smiles if smiles and not any(c.isspace() for c in smiles) else None
    if not fallback:
        return None
    candidates = 0
    for token in reversed(completion[-FALLBACK_CHARS:].split()):
        token = _clean(token).rstrip(_TRAILING).strip(_WRAPPERS)
        if not token or not _SMILES_CHARS.fullmatch(token):
            continue
        if _parse(token, allow_fragments) is not None:
            return token
        candidates += 1
        if candidates >= FALLBACK_TOKENS:
            break
    return None


# -- spec ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    targets: tuple[tuple[str, float | None, float | None, float], ...]  # (name, lo, hi, width)
    must_match: tuple[str, ...]
    must_not_match: tuple[str, ...]


def _bound(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"molecule spec: {where} must be a finite number or null, got {value!r}")
    return float(value)


def _patterns(spec: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = spec.get(key) or []
    if isinstance(items, str | Mapping) or not isinstance(items, Sequence):
        raise ValueError(f"molecule spec: {key} must be a list of SMARTS strings or {{'smarts': ...}} objects")
    out = []
    for i, item in enumerate(items):
        smarts = item.get("smarts") if isinstance(item, Mapping) else item
        if not isinstance(smarts, str) or _smarts(smarts) is None:
            raise ValueError(f"molecule spec: {key}[{i}] is not a valid SMARTS pattern: {smarts!r}")
        out.append(smarts)
    return tuple(out)


def parse_spec(spec: Mapping[str, Any]) -> _Spec:
    """Validate a spec (see the module docstring); raises ValueError naming the bad key."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"molecule spec must be a mapping, got {type(spec).__name__}")
    targets_in = spec.get("targets") or {}
    tolerances = spec.get("tolerances") or {}
    if not isinstance(targets_in, Mapping) or not isinstance(tolerances, Mapping):
        raise ValueError("molecule spec: targets and tolerances must be mappings keyed by property name")
    for name in [*targets_in, *tolerances]:
        if name not in PROPERTIES:
            raise ValueError(f"molecule spec: unknown property {name!r}; known: {', '.join(PROPERTIES)}")
    targets = []
    for name, bounds in targets_in.items():
        if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
            raise ValueError(f"molecule spec: targets.{name} must be [lo, hi], got {bounds!r}")
        lo, hi = _bound(bounds[0], f"targets.{name}[0]"), _bound(bounds[1], f"targets.{name}[1]")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"molecule spec: targets.{name} has lo > hi: {bounds!r}")
        width = _bound(tolerances.get(name, DEFAULT_TOLERANCES[name]), f"tolerances.{name}")
        if width is None or width <= 0:
            raise ValueError(f"molecule spec: tolerances.{name} must be > 0, got {width!r}")
        targets.append((name, lo, hi, width))
    return _Spec(tuple(targets), _patterns(spec, "must_match"), _patterns(spec, "must_not_match"))


@lru_cache(maxsize=1024)
def _smarts(pattern: str) -> Any:
    rd = _chem()
    blocker = rd.rdBase.BlockLogs()
    try:
        return rd.Chem.MolFromSmarts(pattern)
    finally:
        del blocker


# -- scores -------------------------------------------------------------------------------------------
def range_score(value: float, lo: float | None, hi: float | None, width: float) -> float:
    """1.0 for ``lo <= value <= hi`` (a None bound is open), else ``max(0, 1 − d / width)`` with d the
    distance to the violated bound (linear decay to 0 at distance ``width``)."""
    if lo is not None and value < lo:
        d = lo - value
    elif hi is not None and value > hi:
        d = value - hi
    else:
        return 1.0
    return max(0.0, 1.0 - d / width)


@dataclass
class MoleculeScore:
    """Breakdown of one completion's score: the extracted SMILES, validity, each target's (value,
    score), each SMARTS constraint's score (``"+pattern"`` = must match, ``"-pattern"`` = must not)."""

    smiles: str | None
    valid: bool
    properties: dict[str, tuple[float, float]] = field(default_factory=dict)
    substructures: dict[str, float] = field(default_factory=dict)

    @property
    def satisfied(self) -> bool:
        """Valid and every constraint met."""
        return (self.valid and all(s == 1.0 for _, s in self.properties.values())
                and all(s == 1.0 for s in self.substructures.values()))


def score_molecule(completion: str, spec: Mapping[str, Any], *, fallback: bool = True,
                   allow_fragments: bool = False) -> MoleculeScore:
    """Extract the SMILES and evaluate every constraint of ``spec`` on it."""
    parsed = parse_spec(spec)
    smiles = extract_smiles(completion, fallback=fallback, allow_fragments=allow_fragments)
    mol = _parse(smiles, allow_fragments) if smiles is not None else None
    out = MoleculeScore(smiles=smiles, valid=mol is not None)
    if mol is None:
        return out
    try:
        for name, lo, hi, width in parsed.targets:
            value = mol.prop(name)
            if not math.isfinite(value):
                raise ValueError(f"{name} = {value}")
            out.properties[name] = (value, range_score(value, lo, hi, width))
        for sign, patterns in (("+", parsed.must_match), ("-", parsed.must_not_match)):
            for pattern in patterns:
                hit = mol.mol.HasSubstructMatch(_smarts(pattern))
                out.substructures[sign + pattern] = 1.0 if hit == (sign == "+") else 0.0
    except Exception:  # a molecule RDKit parses but cannot describe counts as invalid (never seen so far)
        return MoleculeScore(smiles=smiles, valid=False)
    return out


def design_score(score: MoleculeScore, weights: Mapping[str, float] | None = None,
                 invalid_value: float = 0.0) -> float:
    """The weighted mean of validity, property score and substructure score (module docstring)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    if any(k not in DEFAULT_WEIGHTS for k in w) or any(not (math.isfinite(v) and v >= 0) for v in w.values()):
        raise ValueError(f"molecule weights: keys {list(DEFAULT_WEIGHTS)}, values >= 0; got {dict(w)}")
    if not score.valid:
        return float(invalid_value)
    if score.satisfied:
        return 1.0
    total, norm = w["validity"], w["validity"]
    if score.properties:
        total += w["properties"] * sum(s for _, s in score.properties.values()) / len(score.properties)
        norm += w["properties"]
    if score.substructures:
        total += w["substructures"] * sum(score.substructures.values()) / len(score.substructures)
        norm += w["substructures"]
    return min(1.0, max(0.0, total / norm)) if norm > 0 else 1.0


def validity_reward(completion: str, spec: Mapping[str, Any] | None = None) -> float:
    """1.0 when the completion's SMILES (see :func:`extract_smiles`) is a valid molecule, else 0.0."""
    smiles = extract_smiles(completion)
    return 1.0 if smiles is not None and is_valid_smiles(smiles) else 0.0


def property_reward(completion: str, spec: Mapping[str, Any]) -> float:
    """Mean target score P in [0, 1] (1.0 with no targets); 0.0 for an invalid molecule."""
    score = score_molecule(completion, spec)
    if not score.valid:
        return 0.0
    return sum(s for _, s in score.properties.values()) / len(score.properties) if score.properties else 1.0


def substructure_reward(completion: str, spec: Mapping[str, Any]) -> float:
    """Fraction S in [0, 1] of the SMARTS constraints met (1.0 with none); 0.0 for an invalid molecule."""
    score = score_molecule(completion, spec)
    if not score.valid:
        return 0.0
    return sum(score.substructures.values()) / len(score.substructures) if score.substructures else 1.0


def format_score(completion: str, sample: Mapping[str, Any], tags: Sequence[str] = ("think", "answer")) -> float:
    """1.0 when the ``tags`` open/close pairs occur once each, in order, in ``assistant_prefix`` +
    completion (:func:`llmrl.rewards.format.think_answer_format`), else 0.0."""
    return _format_fn(tuple(tags))(completion, sample)


@lru_cache(maxsize=16)
def _format_fn(tags: tuple[str, ...]) -> Any:
    return think_answer_format(tags)


def molecule_reward(completion: str, spec: Mapping[str, Any], *, weights: Mapping[str, float] | None = None,
                    invalid_value: float = 0.0, format_weight: float = 0.0,
                    format_tags: Sequence[str] = ("think", "answer"), fallback: bool = True,
                    allow_fragments: bool = False) -> float:
    """Design score of the completion's molecule plus ``format_weight`` × format score.

    See the module docstring for the exact definition, the range
    ``[min(0, invalid_value), max(1, invalid_value) + format_weight]`` and the cost bound."""
    if not math.isfinite(invalid_value) or not math.isfinite(format_weight) or format_weight < 0:
        raise ValueError(f"need finite invalid_value and format_weight >= 0, got {invalid_value}, {format_weight}")
    score = score_molecule(completion, spec, fallback=fallback, allow_fragments=allow_fragments)
    total = design_score(score, weights, invalid_value)
    if format_weight:
        total += format_weight * format_score(completion, spec, format_tags)
    return total
