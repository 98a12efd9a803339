"""ChatMol-style molecule design (Fan et al., 2025, arXiv:2502.19794): propose a molecule, as SMILES, that meets numeric
property targets and substructure constraints. Needs RDKit (``pip install 'llmrl[chem]'``).

Generation (offline, deterministic in the seed)
-----------------------------------------------
Every sample starts from one of the :data:`SEED_MOLECULES` (48 well-known drugs and natural products,
typed below). Its properties are computed with RDKit and the task draws

* ``num_properties`` (a [min, max] range, default 1..3) distinct targets from ``properties`` (default
  all of qed, logp, mw, hbd, hba). A continuous property v gets ``[lo, hi]`` with hi − lo about a width
  w drawn per property, v placed at a uniform fraction r ∈ [0.15, 0.85] of it, and the ends rounded
  outwards to a grid (mw: w ∈ {60, 100, 150} Da, grid 10; logp: w ∈ {1.5, 2, 3}, grid 0.5; qed: w ∈
  {0.2, 0.3}, grid 0.05). With probability 1/8 each only one side is kept ("at most hi" / "at least
  lo"); a mw or qed lower end ≤ 0 also gives "at most hi" and a qed upper end ≥ 1 "at least lo". A
  count v (hbd, hba) gets [v − a, v − a + s] with s ∈ {0, 1, 2}, a ∈ 0..s (a lower end ≤ 0 becomes
  "at most", and "at most 0" reads "no ...").
* ``num_substructures`` (default 1..2) constraints from :data:`SUBSTRUCTURES`: each is a pattern the
  seed contains (asked as "contains …", ``must_match``; probability 0.6 when one is left) or one it does
  not contain ("contains no …", ``must_not_match``).

The seed therefore satisfies the spec; it is the sample's ``answer``, and every generated sample is
checked with :func:`llmrl.rewards.molecule.score_molecule` (a failure would be a bug and raises).

Sample fields: ``task``, ``prompt`` (a plain-text instruction listing the constraints, each SMARTS
shown next to its English description, asking for reasoning in ``<think></think>`` and only the SMILES
in ``<answer></answer>``), ``answer`` (the seed's SMILES), ``targets`` ({property: [lo, hi]}, null for
an open side), ``must_match`` / ``must_not_match`` (lists of ``{"smarts", "description"}``).

Rewards (:mod:`llmrl.rewards.molecule`; their sum is ``molecule_reward(completion, sample,
format_weight=format_weight)``): ``format`` = ``format_weight`` (default 0.2) when ``<think>…</think>
<answer>…</answer>`` occur once each and in order, else 0; ``design`` = the design score in [0, 1]
(0 for an invalid or missing SMILES; 1 when every constraint is met). Total in [0, 1 + format_weight].
``is_correct``: the extracted molecule is valid and meets every constraint. ``is_well_formed``: the
completion has an ``<answer>`` block holding a valid SMILES.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from llmrl.rewards.base import RewardFn
from llmrl.rewards.molecule import (
    PROPERTIES,
    design_score,
    extract_smiles,
    format_score,
    is_valid_smiles,
    molecule_properties,
    score_molecule,
)
from llmrl.tasks.base import TASKS, Task

if TYPE_CHECKING:
    from llmrl.core.types import Sample

SEED_MOLECULES: tuple[tuple[str, str], ...] = (
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O"), ("paracetamol", "CC(=O)Nc1ccc(O)cc1"),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"), ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
    ("naproxen", "COc1ccc2cc(ccc2c1)C(C)C(=O)O"), ("diclofenac", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl"),
    ("nicotine", "CN1CCCC1c1cccnc1"), ("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C"),
    ("procaine", "CCN(CC)CCOC(=O)c1ccc(N)cc1"), ("benzocaine", "CCOC(=O)c1ccc(N)cc1"),
    ("salbutamol", "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1"), ("propranolol", "CC(C)NCC(O)COc1cccc2ccccc12"),
    ("atenolol", "CC(C)NCC(O)COc1ccc(CC(N)=O)cc1"), ("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21"),
    ("fluoxetine", "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1"), ("theophylline", "Cn1c2nc[nH]c2c(=O)n(C)c1=O"),
    ("phenobarbital", "CCC1(c2ccccc2)C(=O)NC(=O)NC1=O"), ("carbamazepine", "NC(=O)N1c2ccccc2C=Cc2ccccc21"),
    ("haloperidol", "OC1(CCN(CCCC(=O)c2ccc(F)cc2)CC1)c1ccc(Cl)cc1"),
    ("warfarin", "CC(=O)CC(c1ccccc1)c1c(O)c2ccccc2oc1=O"), ("metronidazole", "Cc1ncc([N+](=O)[O-])n1CCO"),
    ("isoniazid", "NNC(=O)c1ccncc1"), ("dopamine", "NCCc1ccc(O)c(O)c1"),
    ("serotonin", "NCCc1c[nH]c2ccc(O)cc12"), ("melatonin", "COc1ccc2[nH]cc(CCNC(C)=O)c2c1"),
    ("ketoprofen", "CC(C(=O)O)c1cccc(c1)C(=O)c1ccccc1"),
    ("indomethacin", "COc1ccc2n(C(=O)c3ccc(Cl)cc3)c(C)c(CC(=O)O)c2c1"),
    ("phenacetin", "CCOc1ccc(NC(C)=O)cc1"), ("mefenamic acid", "Cc1cccc(Nc2ccccc2C(=O)O)c1C"),
    ("tolbutamide", "CCCCNC(=O)NS(=O)(=O)c1ccc(C)cc1"), ("furosemide", "NS(=O)(=O)c1cc(C(=O)O)c(NCc2ccco2)cc1Cl"),
    ("hydrochlorothiazide", "NS(=O)(=O)c1cc2c(cc1Cl)NCNS2(=O)=O"), ("captopril", "CC(CS)C(=O)N1CCCC1C(=O)O"),
    ("amphetamine", "CC(N)Cc1ccccc1"), ("ephedrine", "CNC(C)C(O)c1ccccc1"),
    ("bupropion", "CC(NC(C)(C)C)C(=O)c1cccc(Cl)c1"), ("venlafaxine", "COc1ccc(cc1)C(CN(C)C)C1(O)CCCCC1"),
    ("metformin", "CN(C)C(=N)NC(N)=N"), ("sulfamethoxazole", "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1"),
    ("trimethoprim", "COc1cc(Cc2cnc(N)nc2N)cc(OC)c1OC"),
    ("celecoxib", "Cc1ccc(cc1)-c1cc(nn1-c1ccc(cc1)S(N)(=O)=O)C(F)(F)F"),
    ("sildenafil", "CCCc1nn(C)c2c1nc([nH]c2=O)-c1cc(ccc1OCC)S(=O)(=O)N1CCN(C)CC1"),
    ("omeprazole", "COc1ccc2[nH]c(nc2c1)S(=O)Cc1ncc(C)c(OC)c1C"),
    ("ciprofloxacin", "OC(=O)c1cn(C2CC2)c2cc(N3CCNCC3)c(F)cc2c1=O"),
    ("chlorpromazine", "CN(C)CCCN1c2ccccc2Sc2ccc(Cl)cc21"), ("lamotrigine", "Nc1nnc(c(N)n1)-c1cccc(Cl)c1Cl"),
    ("vanillin", "COc1cc(C=O)ccc1O"), ("menthol", "CC(C)C1CCC(C)CC1O"),
)

# (SMARTS, "contains …" phrase, "contains no …" phrase)
SUBSTRUCTURES: tuple[tuple[str, str, str], ...] = (
    ("c1ccccc1", "a benzene ring", "benzene ring"),
    ("[F,Cl,Br,I]", "a halogen atom (F, Cl, Br or I)", "halogen atom (F, Cl, Br or I)"),
    ("F", "a fluorine atom", "fluorine atom"),
    ("Cl", "a chlorine atom", "chlorine atom"),
    ("[#16]", "a sulfur atom", "sulfur atom"),
    ("[#7]", "a nitrogen atom", "nitrogen atom"),
    ("n", "an aromatic nitrogen atom", "aromatic nitrogen atom"),
    ("[CX3](=O)[OX2H1]", "a carboxylic acid group (-C(=O)OH)", "carboxylic acid group (-C(=O)OH)"),
    ("[#6][CX3](=O)[OX2H0][#6]", "an ester group (C-C(=O)-O-C)", "ester group (C-C(=O)-O-C)"),
    ("[NX3][CX3](=[OX1])[#6]", "a carboxamide group (C-C(=O)-N)", "carboxamide group (C-C(=O)-N)"),
    ("[#6][CX3](=O)[#6]", "a ketone (C-C(=O)-C)", "ketone (C-C(=O)-C)"),
    ("[OX2H][CX4]", "an alcohol OH (on a saturated carbon)", "alcohol OH (on a saturated carbon)"),
    ("[OX2H]c", "a phenol OH (on an aromatic carbon)", "phenol OH (on an aromatic carbon)"),
    ("[NX3;H2;!$(NC=[O,S,N])][#6]", "a primary amine (-NH2 on carbon, not an amide)",
     "primary amine (-NH2 on carbon, not an amide)"),
    ("S(=O)(=O)[NX3]", "a sulfonamide group (S(=O)(=O)N)", "sulfonamide group (S(=O)(=O)N)"),
    ("[CH3][OX2][#6]", "a methoxy group (CH3-O-C)", "methoxy group (CH3-O-C)"),
    ("[r5]", "a five-membered ring", "five-membered ring"),
)

# per continuous property: (candidate widths, grid step, decimals shown)
_CONTINUOUS = {"mw": ((60.0, 100.0, 150.0), 10.0, 0), "logp": ((1.5, 2.0, 3.0), 0.5, 1),
               "qed": ((0.2, 0.3), 0.05, 2)}
_NAMES = {"mw": "molecular weight", "logp": "Crippen logP", "qed": "QED drug-likeness",
          "hbd": "hydrogen-bond donors", "hba": "hydrogen-bond acceptors"}
_UNITS = {"mw": " Da", "logp": "", "qed": ""}


@cache
def _seed_table() -> tuple[tuple[str, dict[str, float], tuple[bool, ...]], ...]:
    """(SMILES, properties, which SUBSTRUCTURES it contains) for each seed; computed once."""
    patterns = {"must_match": [smarts for smarts, _, _ in SUBSTRUCTURES]}
    out = []
    for name, smiles in SEED_MOLECULES:
        props = molecule_properties(smiles)
        if props is None:  # pragma: no cover - the table is checked by the tests
            raise RuntimeError(f"seed molecule {name!r} has an invalid SMILES {smiles!r}")
        hits = score_molecule(f"<answer>{smiles}</answer>", patterns).substructures
        out.append((smiles, props, tuple(hits["+" + smarts] == 1.0 for smarts, _, _ in SUBSTRUCTURES)))
    return tuple(out)


def _range_text(name: str, lo: float | None, hi: float | None) -> str:
    if name in ("hbd", "hba"):
        label = _NAMES[name]
        if lo is None:
            return f"no {label}" if hi == 0 else f"at most {hi:g} {label[:-1] if hi == 1 else label}"
        if lo == hi:
            return f"exactly {lo:g} {label[:-1] if lo == 1 else label}"
        return f"between {lo:g} and {hi:g} {label}"
    decimals, unit = _CONTINUOUS[name][2], _UNITS[name]
    if lo is None:
        return f"{_NAMES[name]} at most {hi:.{decimals}f}{unit}"
    if hi is None:
        return f"{_NAMES[name]} at least {lo:.{decimals}f}{unit}"
    return f"{_NAMES[name]} between {lo:.{decimals}f} and {hi:.{decimals}f}{unit}"


def _span(pair: Any, what: str) -> tuple[int, int]:
    if isinstance(pair, int) and not isinstance(pair, bool):
        pair = (pair, pair)
    if (not isinstance(pair, Sequence) or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair) or pair[0] > pair[1]):
        raise ValueError(f"molecule: {what} must be an int or [min, max] ints, got {pair!r}")
    return int(pair[0]), int(pair[1])


@TASKS.register("molecule")
class MoleculeTask(Task):
    """Design a molecule (SMILES) meeting property targets and SMARTS constraints (ChatMol-style; RDKit).

    Options: ``num_properties`` ([min, max] targets per prompt, from ``properties``), ``properties``
    (subset of qed, logp, mw, hbd, hba), ``num_substructures`` ([min, max] SMARTS constraints),
    ``format_weight`` (reward for the think/answer format, >= 0).
    """

    name = "molecule"
    required_fields = {}  # the reward scores the constraints below; `answer` (a seed SMILES) only demonstrates
    optional_fields = {"targets": dict | None, "tolerances": dict | None, "must_match": list | None,
                       "must_not_match": list | None}

    def __init__(self, *, num_properties: Any = (1, 3), properties: Sequence[str] = PROPERTIES,
                 num_substructures: Any = (1, 2), format_weight: float = 0.2) -> None:
        self.properties = tuple(properties)
        if not self.properties or any(p not in PROPERTIES for p in self.properties) \
                or len(set(self.properties)) != len(self.properties):
            raise ValueError(f"molecule: properties must be distinct names from {PROPERTIES}, got {properties!r}")
        self.num_properties = _span(num_properties, "num_properties")
        self.num_substructures = _span(num_substructures, "num_substructures")
        if self.num_properties[0] < 0 or self.num_properties[1] > len(self.properties):
            raise ValueError(f"molecule: num_properties must lie in 0..{len(self.properties)}, "
                             f"got {num_properties!r}")
        if self.num_substructures[0] < 0 or self.num_substructures[1] > 4:
            raise ValueError(f"molecule: num_substructures must lie in 0..4, got {num_substructures!r}")
        if self.num_properties[1] + self.num_substructures[1] == 0:
            raise ValueError("molecule: need at least one property or substructure constraint")
        if isinstance(format_weight, bool) or not isinstance(format_weight, int | float) \
                or not math.isfinite(format_weight) or format_weight < 0:
            raise ValueError(f"molecule: format_weight must be a finite number >= 0, got {format_weight!r}")
        self.format_weight = float(format_weight)
        _seed_table()  # fail at construction, with the install hint, when RDKit is missing

    # -- generation -------------------------------------------------------------------------------
    def _target(self, name: str, value: float, rng: random.Random) -> list[float | None]:
        if name in ("hbd", "hba"):
            v = int(round(value))
            span = rng.randint(0, 2)
            lo = v - rng.randint(0, span)
            hi = lo + span
            return [None, float(hi)] if lo <= 0 else [float(lo), float(hi)]
        widths, step, decimals = _CONTINUOUS[name]
        width, r = rng.choice(widths), rng.uniform(0.15, 0.85)
        lo = round(math.floor((value - r * width) / step) * step, decimals + 1)
        hi = round(math.ceil((value + (1 - r) * width) / step) * step, decimals + 1)
        side = rng.random()
        if (name != "logp" and lo <= 0.0) or side < 0.125:  # mw and qed are positive: "at most hi"
            return [None, hi]
        if (name == "qed" and hi >= 1.0) or side < 0.25:  # qed < 1: "at least lo"
            return [lo, None]
        return [lo, hi]

    def make_sample(self, rng: random.Random) -> Sample:
        smiles, props, contains = rng.choice(_seed_table())
        names = rng.sample(self.properties, rng.randint(*self.num_properties))
        targets = {n: self._target(n, props[n], rng) for n in PROPERTIES if n in names}
        n_sub = rng.randint(*self.num_substructures)
        present = [i for i, hit in enumerate(contains) if hit]
        absent = [i for i, hit in enumerate(contains) if not hit]
        must, must_not = [], []
        for _ in range(n_sub):
            pool = present if (present and (not absent or rng.random() < 0.6)) else absent
            i = pool.pop(rng.randrange(len(pool)))
            smarts, yes, no = SUBSTRUCTURES[i]
            (must if contains[i] else must_not).append(
                {"smarts": smarts, "description": f"contains {yes}" if contains[i] else f"contains no {no}"})
        lines = [_range_text(n, *targets[n]) for n in targets]
        lines += [f"{c['description']}; SMARTS: {c['smarts']}" for c in must + must_not]
        prompt = ("Design a drug-like molecule that meets every constraint below.\n"
                  + "".join(f"- {line}\n" for line in lines)
                  + "Think step by step inside <think></think>, then give only the molecule's SMILES "
                    "inside <answer></answer>.")
        sample: Sample = {"task": self.name, "prompt": prompt, "answer": smiles, "targets": targets,
                          "must_match": must, "must_not_match": must_not}
        if not score_molecule(f"<answer>{smiles}</answer>", sample).satisfied:  # pragma: no cover - a bug
            raise RuntimeError(f"molecule: seed {smiles} does not satisfy its own generated spec {sample}")
        return sample

    # -- parsing and rewards ----------------------------------------------------------------------
    def is_well_formed(self, completion: str, sample: Mapping[str, Any]) -> bool:
        smiles = extract_smiles(completion, fallback=False)
        return smiles is not None and is_valid_smiles(smiles)

    def is_correct(self, completion: str, sample: Mapping[str, Any]) -> bool:
        return score_molecule(completion, sample).satisfied

    def reward_functions(self) -> dict[str, RewardFn]:
        """``format``: ``format_weight`` × think/answer format (0/1); ``design``: design score in [0, 1]."""
        weight = self.format_weight

        def format_(completion: str, sample: Mapping[str, Any]) -> float:
            return weight * format_score(completion, sample)

        def design(completion: str, sample: Mapping[str, Any]) -> float:
            return design_score(score_molecule(completion, sample))

        return {"format": format_, "design": design}

    # -- demonstrations ---------------------------------------------------------------------------
    def demonstration(self, sample: Mapping[str, Any]) -> str:
        """The seed SMILES in the answer block, after a think block stating its computed properties."""
        smiles = str(sample["answer"])
        props = molecule_properties(smiles) or {}
        facts = [f"{_NAMES[n]} {props[n]:.2f}" for n in sample.get("targets", {}) if n in props]
        facts += [c["description"] for c in [*sample.get("must_match", []), *sample.get("must_not_match", [])]]
        think = f"Candidate {smiles}: " + "; ".join(facts) + ". Every constraint holds."
        return f"<think>{think}</think>\n<answer>{smiles}</answer>"
