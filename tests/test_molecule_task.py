"""The ``molecule`` task: seeded, train/test disjoint, every answer verified and scoring the maximum."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Descriptors  # noqa: E402

from llmrl.cli.main import main  # noqa: E402
from llmrl.rewards.base import combine_rewards  # noqa: E402
from llmrl.rewards.molecule import molecule_reward  # noqa: E402
from llmrl.tasks import get_task, split_of  # noqa: E402
from llmrl.tasks.molecule import SEED_MOLECULES, SUBSTRUCTURES, MoleculeTask  # noqa: E402


def test_seed_molecules_parse_and_are_distinct():
    names = [n for n, _ in SEED_MOLECULES]
    canon = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for _, s in SEED_MOLECULES]
    assert len(SEED_MOLECULES) >= 40 and len(set(names)) == len(names) and len(set(canon)) == len(canon)
    by_name = dict(SEED_MOLECULES)
    # spot checks against textbook molecular weights
    for name, mw in [("aspirin", 180.16), ("caffeine", 194.19), ("ibuprofen", 206.28), ("sildenafil", 474.58)]:
        assert Descriptors.MolWt(Chem.MolFromSmiles(by_name[name])) == pytest.approx(mw, abs=0.02)


@pytest.mark.parametrize(("smarts", "yes", "no"), [
    ("c1ccccc1", "Cc1ccccc1", "c1ccncc1"),
    ("[F,Cl,Br,I]", "CCBr", "CCO"),
    ("[CX3](=O)[OX2H1]", "CC(=O)O", "CC(=O)OC"),
    ("[#6][CX3](=O)[OX2H0][#6]", "CC(=O)OC", "CC(=O)O"),
    ("[NX3][CX3](=[OX1])[#6]", "CC(=O)NC", "NC(=O)N"),
    ("[#6][CX3](=O)[#6]", "CC(=O)C", "CC=O"),
    ("[OX2H][CX4]", "CCO", "Oc1ccccc1"),
    ("[OX2H]c", "Oc1ccccc1", "CCO"),
    ("[NX3;H2;!$(NC=[O,S,N])][#6]", "CCN", "CC(N)=O"),
    ("S(=O)(=O)[NX3]", "NS(=O)(=O)c1ccccc1", "CS(=O)(=O)C"),
    ("[CH3][OX2][#6]", "COc1ccccc1", "CCOCC"),
    ("[r5]", "C1CCCC1", "C1CCCCC1"),
])
def test_substructure_descriptions_match_their_smarts(smarts, yes, no):
    assert smarts in [s for s, _, _ in SUBSTRUCTURES]
    pattern = Chem.MolFromSmarts(smarts)
    assert Chem.MolFromSmiles(yes).HasSubstructMatch(pattern)
    assert not Chem.MolFromSmiles(no).HasSubstructMatch(pattern)


def test_deterministic_by_seed():
    task = get_task("molecule")
    a, b = task.samples(20, "train", seed=0), task.samples(20, "train", seed=0)
    assert a == b
    assert [s["prompt"] for s in task.samples(20, "train", seed=1)] != [s["prompt"] for s in a]


def test_train_test_disjoint():
    task = get_task("molecule")
    train, test = task.samples(300, "train"), task.samples(40, "test")
    assert not {s["prompt"] for s in train} & {s["prompt"] for s in test}
    assert all(split_of(s["prompt"]) == "train" for s in train)
    assert all(split_of(s["prompt"]) == "test" for s in test)


def test_every_answer_scores_the_maximum():
    task = MoleculeTask(format_weight=0.2)
    fns = task.reward_functions()
    for s in task.samples(150, "train", seed=3):
        assert set(s) >= {"task", "prompt", "answer", "targets", "must_match", "must_not_match"}
        assert s["task"] == "molecule" and s["prompt"].isascii()
        assert 1 <= len(s["targets"]) + len(s["must_match"]) + len(s["must_not_match"])
        assert molecule_reward(f"<answer>{s['answer']}</answer>", s) == 1.0
        demo = task.demonstration(s)
        assert task.is_correct(demo, s) and task.is_well_formed(demo, s)
        out = combine_rewards(fns, demo, s)
        assert out.total == pytest.approx(1.2) and out.components == {"format": 0.2, "design": 1.0}
        # the samples survive a JSON round trip (llmrl tasks sample / llmrl reward)
        assert molecule_reward(demo, json.loads(json.dumps(s)), format_weight=0.2) == pytest.approx(1.2)


def test_rewards_sum_to_molecule_reward_and_verdicts():
    task = MoleculeTask(format_weight=0.5)
    fns = task.reward_functions()
    s = task.samples(1, "train", seed=0)[0]
    completions = ["", "<think>x</think><answer>C1CC</answer>", "<answer>CCO</answer>", "CCO",
                   "<think>x</think><answer>CCCCCCCCCCCCCCCCCCCCCCCC</answer>", task.demonstration(s)]
    for c in completions:
        out = combine_rewards(fns, c, s)
        assert not out.failures
        assert out.total == pytest.approx(molecule_reward(c, s, format_weight=0.5))
        assert 0.0 <= out.total <= 1.5
    assert not task.is_well_formed("CCO", s) and task.is_well_formed("<answer>CCO</answer>", s)
    assert not task.is_well_formed("<answer>C1CC</answer>", s) and not task.is_correct("", s)


def test_options():
    task = get_task("molecule", num_properties=2, properties=["mw", "logp"], num_substructures=0)
    for s in task.samples(30, "train"):
        assert set(s["targets"]) == {"mw", "logp"} and not s["must_match"] and not s["must_not_match"]
    task = get_task("molecule", num_properties=[0, 0], num_substructures=[2, 2])
    for s in task.samples(30, "train"):
        assert not s["targets"] and len(s["must_match"]) + len(s["must_not_match"]) == 2
    for bad in [{"properties": ["tpsa"]}, {"num_properties": [3, 1]}, {"num_properties": 6},
                {"num_substructures": 9}, {"format_weight": -1}, {"num_properties": 0, "num_substructures": 0}]:
        with pytest.raises(ValueError):
            get_task("molecule", **bad)


def test_cli_sample(capsys):
    assert main(["tasks", "sample", "molecule", "--n", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(r["task"] == "molecule" and r["answer"] for r in rows)
    assert main(["tasks", "sample", "molecule", "--option", "properties=[bogus]"]) == 2
    assert "properties" in capsys.readouterr().err


def test_cli_reward(tmp_path, capsys):
    task = get_task("molecule")
    s = task.samples(2, "test")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({**x, "completion": c}) for x, c in
                             [(s[0], task.demonstration(s[0])), (s[1], "<answer>C1CC</answer>")]) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["reward", "molecule", "--input", str(src), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [pytest.approx(1.2), 0.0]
    assert scored[1]["reward_components"] == {"format": 0.0, "design": 0.0}
    capsys.readouterr()
