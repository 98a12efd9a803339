"""Big-Math style curation (`llmrl data curate`): filters, dedup, solvability buckets, report, CLI."""

from __future__ import annotations

import io
import json
import math
import random
import zlib
from pathlib import Path

import pytest

from llmrl.cli.data import FILTER_NAMES
from llmrl.cli.main import main
from llmrl.data import filters as F
from llmrl.data.curate import (
    STEPS,
    CurateOptions,
    curate_file,
    curate_records,
    default_report_path,
    read_records,
)
from llmrl.data.dedup import (
    NearDuplicateIndex,
    answer_key,
    jaccard,
    lsh_rows,
    normalize_text,
    numbers_key,
    shingles,
)
from llmrl.data.solvability import difficulty, difficulty_edges, solve_counts
from llmrl.tasks.io import DataError

# -- filters: (question, answer) positives and negatives, written by hand ---------------------------------
CASES = {
    "language": (
        [("已知 $f(x)=ax^2+bx+c$，求 $a+b+c$ 的值。", "3"), ("Найдите значение $x$, если $2x = 6$.", "3"),
         ("x の値を求めよ: $2x = 6$", "3")],
        [("Find $\\theta$ if $\\sin θ = 1/2$ and θ is acute.", "30"), ("A café sells 3 cakes. How many?", "3"),
         ("Compute $\\alpha + \\beta$ where $\\alpha = 1$, $\\beta = 2$.", "3"), ("$1+1$", "2")],
    ),
    "hyperlink": (
        [("See https://example.com/q1 and compute 2+2.", "4"), ("From www.mathforum.org: find x.", "1"),
         ("Source: \\url{aops.com}. Solve $x+1=2$.", "1"), ("Visit mathsite.com/problems for more. Find 3!", "6")],
        [("Compute $3.14 \\times 2$.", "6.28"), ("The com-plex number $z = 1 + i$. Find $|z|^2$.", "2"),
         ("Let f.g denote composition; find (f.g)(1) with f(x)=x, g(x)=2.", "2")],
    ),
    "multiple_choice": (
        [("Which of the following is prime? 4, 6, 7, 9", "7"), ("Find x. (A) 1 (B) 2 (C) 3 (D) 4", "2"),
         ("Find x if 2x = 4.\nA. 1\nB. 2\nC. 3", "2"), ("Find x if 2x=4. A: 1 B: 2 C: 3 D: 4", "2"),
         ("Find the value of x.", "C"), ("Find the value of x.", "(B)"), ("Find x.", "\\textbf{(B)}\\ 12"),
         ("Find y.", "D. 15")],
        [("Compute $P(A)+P(B)$ where $P(A)=0.2$ and $P(B)=0.3$.", "0.5"), ("Points A and B are 5 apart.", "5"),
         ("Let A: the set of evens and B: the set of odds. How many elements does A have below 10?", "5"),
         ("What is 2+2?", "4"), ("Find the point of intersection.", "(1, 2)"), ("Simplify.", "(A + B)^2"),
         ("Which set is the union?", "A \\cup B"), ("Name the vertex.", "A + B")],
    ),
    "yes_no": (
        [("Is 91 prime? Answer yes or no.", "No"), ("Is 91 a prime number?", "No, 91 = 7 \\times 13"),
         ("Can 7 be written as a sum of two squares?", "\\text{Yes}"), ("Is $x=2$ a root? (yes/no)", "1")],
        [("How many real solutions does $x^2 = -1$ have?", "No solution"), ("How many yes votes were cast?", "12"),
         ("Which set is empty?", "None")],
    ),
    "true_false": (
        [("True or false: 2 is even.", "True"), ("Decide: every prime is odd.", "\\text{False}"),
         ("Determine whether the following statement is true: $2^{10} > 1000$.", "1"),
         ("Is this statement correct: $\\sqrt{4} = 2$?", "correct")],
        [("If it is true that $x = 2$, find $x + 1$.", "3"), ("The answer is true to 2 digits. Round 3.14159.", "3.14"),
         ("How many of 1, 2, 3 are odd?", "2")],
    ),
    "multi_part": (
        [("(a) Compute 2+2. (b) Compute 3+3.", "4"), ("(1) Find $f(2)$; (2) find the minimum of $f$.", "3"),
         ("(i) Solve $x+1=2$. (ii) Solve $x+2=4$.", "1"), ("Given ① $a>0$ ② $b>0$, find the sign of ab.", "+"),
         ("Answer both:\n1. What is 2+2\n2. What is 3+3", "4"), ("What is x? What is y?", "1"),
         ("Find x. Then, in part (b), find y.", "1")],
        [("Compute $f(1) + f(2)$ for $f(x) = x$.", "3"), ("Solve $(2)^3 + (1)$.", "9"),
         ("What is $x$ if $x^2 = 4$ and $x > 0$?", "2"), ("Expand $(a+b)(a-b)$.", "a^2-b^2")],
    ),
    "proof": (
        [("Prove that there are infinitely many primes.", "0"), ("Show that $n^2 + n$ is even.", "0"),
         ("Give a proof of the AM-GM inequality.", "0"), ("Demonstrate that 7 is prime.", "0")],
        [("A waterproof box costs $5. How much do 3 boxes cost?", "15"), ("Show your work: what is 2+2?", "4"),
         ("The approved budget is 10 dollars. How much is left after spending 4?", "6")],
    ),
}


def test_filter_names_match_the_cli() -> None:
    assert FILTER_NAMES == tuple(F.FILTERS) == tuple(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_filter_positives_and_negatives(name: str) -> None:
    fn = F.FILTERS[name]
    positives, negatives = CASES[name]
    assert [q for q, a in positives if not fn(q, a)] == []
    assert [q for q, a in negatives if fn(q, a)] == []
    # each negative passes every filter (they are ordinary problems), so the pipeline keeps them
    assert [(q, n) for q, a in negatives for n, f in F.FILTERS.items() if f(q, a)] == []


def test_non_ascii_letter_ratio_by_hand() -> None:
    # letters C a f é a u l a i t: 1 of 10 non-ASCII; math and the digit are not letters
    assert F.non_ascii_letter_ratio("Café au lait $x^2 + y$ 7") == pytest.approx(1 / 10)
    assert F.non_ascii_letter_ratio("αβγ θ") == 0.0  # Greek counts as maths
    assert F.non_ascii_letter_ratio("求值 ab") == pytest.approx(2 / 4)
    assert F.is_non_english("求值 ab", max_ratio=0.6) is False and F.is_non_english("求值 ab", max_ratio=0.4)


@pytest.mark.parametrize("value, solution, expected", [
    ("\\boxed{5}", False, "5"), ("So the answer is $\\boxed{\\frac{1}{2}}$.", False, "\\frac{1}{2}"),
    ("She has 3 + 4 = 7 left.\n#### 72", False, "72"), (3, False, "3"), (2.5, False, "2.5"),
    ("  x = 4 ", False, "x = 4"), ("The sum is \\boxed{12}.", True, "12"), ("The sum is 12.", True, None),
    (True, False, None), (float("nan"), False, None), ("", False, None), ("   ", False, None),
    (["1", "2"], False, None), (None, False, None), ("9" * 2001, False, None), ("\\boxed{}", False, None), ("\\boxed{5", False, None),
    ("\\fbox{7}", False, "7"),
])
def test_answer_text(value: object, solution: bool, expected: str | None) -> None:
    assert F.answer_text(value, solution=solution) == expected


# -- dedup ----------------------------------------------------------------------------------------------
def test_normalize_text_by_hand() -> None:
    assert normalize_text("What is  $2.5 + 3$?") == "whatis2.5+3"
    assert normalize_text("Compute \\dfrac{1}{2}\\,+\\left(1\\right), please.") == "compute\\frac{1}{2}+(1)please"
    variants = ["What is 1,000 + 2?", "what is 1,000+2", "  WHAT IS $1,000 + 2$ ?", "What is \\(1,000\\;+\\;2\\)."]
    assert {normalize_text(v) for v in variants} == {"whatis1,000+2"}
    assert normalize_text("What is 25?") != normalize_text("What is 2.5?")
    assert normalize_text("Is x = 2 - 3?") != normalize_text("Is x = 2 + 3?")


def test_answer_key_and_shingles_by_hand() -> None:
    assert {answer_key(a) for a in ("0.5", "\\frac{1}{2}", "1/2", "\\dfrac{2}{4}", ".5")} == {"#1/2"}
    assert answer_key("1,000") == answer_key("1000") == "#1000/1"
    assert answer_key("x + 1") == "x+1" and answer_key("2") != answer_key("3")
    assert shingles("ABCDEF") == {zlib.crc32(b"abcde"), zlib.crc32(b"bcdef")}
    assert shingles("Ab", size=5) == {zlib.crc32(b"ab")}
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(2 / 4) and jaccard(set(), set()) == 1.0


def test_lsh_rows_by_hand() -> None:
    def p(r: int, t: float) -> float:  # probability that a pair at Jaccard t shares a band
        return 1 - (1 - t**r) ** (128 // r)

    assert p(8, 0.7) < 0.999 <= p(4, 0.7) and lsh_rows(128, 0.7) == 4
    assert p(16, 0.9) < 0.999 <= p(8, 0.9) and lsh_rows(128, 0.9) == 8
    assert lsh_rows(128, 1.0) == 128


def test_near_duplicate_index_agrees_with_brute_force() -> None:
    rng = random.Random(0)
    words = "apple pear plum grape melon lemon berry cherry peach mango kiwi fig lime".split()
    base = [" ".join(rng.choice(words) for _ in range(12)) + "?" for _ in range(30)]
    texts = base + [b.replace(b.split()[rng.randrange(12)], rng.choice(words), 1) + " now" for b in base]
    rng.shuffle(texts)
    index, kept_sets, found, expected = NearDuplicateIndex(0.7, text_only=True), [], [], []
    for t in texts:
        ids = shingles(t)
        expected.append(next((j for j, s in enumerate(kept_sets) if jaccard(ids, s) >= 0.7), None))
        j, sim, state = index.find(t)
        found.append(j)
        if j is None:
            index.add(state)
            kept_sets.append(ids)
        else:
            assert sim >= 0.7
    assert found == expected
    assert sum(j is not None for j in found) >= 10  # the set does contain near duplicates


def test_near_duplicates_need_the_same_answer_and_numbers() -> None:
    q1 = "A rectangle is $12$ cm long and $7$ cm wide. What is its area?"
    reworded = "A rectangle measures $12$ cm long and $7$ cm wide. What is its area?"
    other_numbers = "A rectangle is $13$ cm long and $7$ cm wide. What is its area?"
    assert jaccard(shingles(q1), shingles(other_numbers)) >= 0.7 and jaccard(shingles(q1), shingles(reworded)) >= 0.7
    index = NearDuplicateIndex(0.7)
    index.add(index.find(q1, "84")[2])
    assert index.find(reworded, "84")[0] == 0
    assert index.find(reworded, "85")[0] is None  # other answer
    assert index.find(other_numbers, "84")[0] is None  # other numbers (even with the same answer)
    assert numbers_key("a $12$ by 7.5 box, 12 of them") == numbers_key("12 boxes 12 by 7.5") == "12|12|7.5"
    text_only = NearDuplicateIndex(0.7, text_only=True)
    text_only.add(text_only.find(q1, "84")[2])
    assert text_only.find(other_numbers, "91")[0] == 0


# -- solvability and difficulty -------------------------------------------------------------------------
def fake_generate(correct: dict[str, int]):
    """k completions per prompt, the first correct[prompt] of them right (boxed gold), the rest wrong."""
    def generate(prompts: list[str], k: int) -> list[list[str]]:
        out = []
        for p in prompts:
            gold = p.split("=")[1].split("\n")[0].strip()  # prompts look like "q7 = 12\n\n<instruction>"
            c = correct[p.split("\n")[0]]
            out.append([f"so \\boxed{{{gold}}}" if i < c else f"so \\boxed{{{gold}1}}" for i in range(k)])
        return out
    return generate


def test_difficulty_quintiles_by_hand() -> None:
    rates = [i / 10 for i in range(1, 11)]  # distinct: two per bucket; edges sorted[floor(q*10)]
    edges = difficulty_edges(rates)
    assert edges == [rates[2], rates[4], rates[6], rates[8]]
    assert [difficulty(r, edges) for r in rates] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    tied = [1, 0.25, 0.75, 0.5, 1, 0.25, 0.5, 0.75, 1]  # sorted .25 .25 .5 .5 .75 .75 1 1 1 -> idx 1,3,5,7
    assert difficulty_edges(tied) == [0.25, 0.5, 0.75, 1]
    assert [difficulty(r, [0.25, 0.5, 0.75, 1]) for r in tied] == [1, 4, 2, 3, 1, 4, 3, 2, 1]
    assert [difficulty(r, [0.2, 0.4, 0.6, 0.8]) for r in (0.0, 0.2, 0.5, 0.8, 1.0)] == [5, 4, 3, 1, 1]


def test_solve_rates_drop_unsolved_and_bucket() -> None:
    correct = [0, 4, 1, 3, 2, 4, 1, 0, 2, 3, 4]  # out of k = 4
    rows = [(i + 1, {"problem": f"q{i} = {10 + i}", "answer": str(10 + i)}, None) for i in range(len(correct))]
    gen = fake_generate({f"q{i} = {10 + i}": c for i, c in enumerate(correct)})
    assert solve_counts([f"q{i} = {10 + i}\n\nx" for i in range(3)], ["10", "11", "12"], gen, 4) == [0, 4, 1]
    res = curate_records(rows, CurateOptions(rollouts=4), gen)
    assert res.counts["unsolved"] == 2 and len(res.kept) == 9
    assert [r["solve_rate"] for r in res.kept] == [1, 0.25, 0.75, 0.5, 1, 0.25, 0.5, 0.75, 1]
    assert [r["difficulty"] for r in res.kept] == [1, 4, 2, 3, 1, 4, 3, 2, 1]
    solv = res.report["solvability"]
    assert solv["difficulty_edges"] == [0.25, 0.5, 0.75, 1] and solv["difficulty_counts"] == {
        "1": 3, "2": 2, "3": 2, "4": 2, "5": 0}
    assert solv["mean_solve_rate"] == pytest.approx(sum([4, 1, 3, 2, 4, 1, 2, 3, 4]) / 4 / 9)
    keep_all = curate_records(rows, CurateOptions(rollouts=4, min_correct=0, difficulty_edges=[0.5]), gen)
    assert len(keep_all.kept) == 11 and [r["difficulty"] for r in keep_all.kept][:3] == [2, 1, 2]


# -- the pipeline on a handcrafted file -----------------------------------------------------------------
HANDCRAFTED = [
    '{"problem": "Tom has 5 apples and buys 7 more. How many apples does Tom have now?", "answer": "12"}',  # 1 kept
    '{"problem": "tom has 5 apples and buys 7 more.  How many apples does Tom have now", "answer": "12"}',  # 2 exact
    '{"problem": "Tom has 5 apples and he buys 7 more. How many apples does Tom have now?", "answer": "12"}',  # 3 near
    '{"problem": "Tom has 6 apples and buys 7 more. How many apples does Tom have now?", "answer": "13"}',  # 4 kept
    "",  # blank: not a row
    '{"problem": "Which of the following is 2+2? (A) 3 (B) 4", "answer": "B"}',  # 6 multiple_choice
    '{"problem": "Is 7 prime?", "answer": "Yes"}',  # 7 yes_no
    '{"problem": "Prove that 2+2=4.", "answer": "4"}',  # 8 proof
    '{"problem": "What is 3 times 3?", "solution": "Three threes make \\\\boxed{9}."}',  # 9 kept (boxed solution)
    '{"problem": "What is 4 times 4?", "solution": "Sixteen."}',  # 10 no_answer
    '{"problem": "What is 5 times 5?", "answer": "", "id": 11}',  # 11 no_answer
    '{"problem": "What is 6 times 6?" "answer": "36"}',  # 12 malformed (missing comma)
    '["not", "an", "object"]',  # 13 malformed
    '{"answer": "3"}',  # 14 malformed (no question)
    '{"question": "Compute $\\\\frac{1}{2} + \\\\frac{1}{4}$.", "answer": "\\\\boxed{\\\\frac{3}{4}}"}',  # 15 kept
    '{"problem": "See http://x.org/a. What is 1+1?", "answer": "2"}',  # 16 hyperlink
    '{"problem": "(a) What is 1+1. (b) What is 2+2.", "answer": "2"}',  # 17 multi_part
    '{"problem": "True or false: 1 < 2.", "answer": "True"}',  # 18 true_false (yes_no does not fire)
    '{"problem": "求 $1+1$ 的值。", "answer": "2"}',  # 19 language
]


@pytest.fixture
def handcrafted(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_bytes(("\n".join(HANDCRAFTED) + "\n").encode() + b'{"problem": "\xff bad utf8", "answer": "1"}\n')
    return path  # line 20: invalid UTF-8


def test_report_counts_add_up_on_the_handcrafted_set(handcrafted: Path, tmp_path: Path) -> None:
    err = io.StringIO()
    out, rejected = tmp_path / "out" / "curated.jsonl", tmp_path / "rejected.jsonl"
    report = curate_file(handcrafted, out, CurateOptions(), rejected_path=rejected, err=err)
    expected = {"malformed": 4, "no_answer": 2, "language": 1, "hyperlink": 1, "multiple_choice": 1, "yes_no": 1,
                "true_false": 1, "multi_part": 1, "proof": 1, "exact_duplicate": 1, "near_duplicate": 1, "unsolved": 0}
    assert {s["step"]: s["removed"] for s in report["steps"]} == expected
    assert [s["step"] for s in report["steps"]] == list(STEPS)
    assert report["rows_in"] == 19 and report["rows_kept"] == 4  # 20 lines, one blank
    assert report["rows_in"] == report["rows_kept"] + sum(s["removed"] for s in report["steps"])
    assert report["steps"][-1]["remaining"] == 4 and report["steps"][-1]["enabled"] is False
    assert [m["line"] for m in report["malformed_lines"]] == [12, 13, 14, 20]
    assert "invalid JSON" in report["malformed_lines"][0]["error"] and "UTF-8" in report["malformed_lines"][3]["error"]
    for line in (12, 13, 14, 20):
        assert f"{handcrafted}:{line}: skipped" in err.getvalue()
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["answer"] for r in kept] == ["12", "13", "9", "\\frac{3}{4}"]
    assert kept[3]["problem"] == "Compute $\\frac{1}{2} + \\frac{1}{4}$." and "solve_rate" not in kept[0]
    assert kept[0]["prompt"] == kept[0]["problem"] + "\n\nPut your final answer within \\boxed{}."
    assert json.loads(default_report_path(out).read_text())["rows_kept"] == 4
    rej = {r["line"]: r for r in map(json.loads, rejected.read_text().splitlines())}
    assert rej[3]["removed_by"] == "near_duplicate" and rej[3]["duplicate_of_line"] == 1 and rej[3]["jaccard"] >= 0.7
    assert rej[2]["removed_by"] == "exact_duplicate" and rej[11]["id"] == 11 and len(rej) == 15


def test_curating_a_curated_file_changes_nothing(handcrafted: Path, tmp_path: Path) -> None:
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    curate_file(handcrafted, once, quiet=True)
    report = curate_file(once, twice, quiet=True)
    assert once.read_text() == twice.read_text() and report["rows_in"] == report["rows_kept"] == 4


def test_steps_can_be_switched_off(handcrafted: Path) -> None:
    opts = CurateOptions(skip_filters=("proof", "language"), exact_dedup=False, near_dedup=False)
    res = curate_records(read_records(handcrafted), opts)
    assert len(res.kept) == 4 + 2 + 2  # + proof + language rows, + the exact and near duplicate
    assert res.report["rows_in"] == len(res.kept) + sum(res.counts.values())
    assert res.report["near_duplicate"] is None


def test_parquet_in_and_out(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"problem": ["What is 2+3?", "What is 2+3?", "Find $x$ if $x - 1 = 1$.", None, "1+1?"],
                          "solution": ["It is \\boxed{5}.", "Five: \\boxed{5}", "So $x=\\boxed{2}$.", "\\boxed{1}", "2"],
                          "domain": [["arith"], ["arith"], ["algebra", "linear"], [], []],
                          "llama8b_solve_rate": [0.5, float("nan"), 1.0, 0.0, 1.0]})
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    report = curate_file(src, tmp_path / "out.parquet", CurateOptions(), quiet=True)
    assert report["rows_in"] == 5 and report["rows_kept"] == 2  # a solution column needs a \boxed{} answer
    assert {s["step"]: s["removed"] for s in report["steps"] if s["removed"]} == {
        "malformed": 1, "no_answer": 1, "exact_duplicate": 1}
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out["answer"]) == ["5", "2"] and [list(d) for d in out["domain"]] == [["arith"], ["algebra", "linear"]]


def test_no_row_with_a_question_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"text": "What is 1+1?", "answer": "2"}\n')
    with pytest.raises(DataError, match="no row has a question"):
        curate_file(path, tmp_path / "o.jsonl", quiet=True)
    assert curate_file(path, tmp_path / "o.jsonl", CurateOptions(question_key="text"), quiet=True)["rows_kept"] == 1


# -- the command line -----------------------------------------------------------------------------------
def test_cli_end_to_end_without_rollouts(handcrafted: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, rep = tmp_path / "c.jsonl", tmp_path / "r.json"
    rc = main(["data", "curate", "--input", str(handcrafted), "--output", str(out), "--report", str(rep),
               "--no-solvability", "--near-dup-threshold", "0.99"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "near_duplicate" in printed and "unsolved" not in printed and f"wrote 5 rows to {out}" in printed
    report = json.loads(rep.read_text())
    assert report["rows_kept"] == 5 and report["near_duplicate"]["threshold"] == 0.99
    assert report["rows_in"] == report["rows_kept"] + sum(s["removed"] for s in report["steps"])


@pytest.mark.parametrize("extra, message", [
    ([], "needs --model"),
    (["--no-solvability", "--near-dup-threshold", "1.5"], "threshold"),
    (["--no-solvability", "--rollouts", "0"], "rollouts"),
    (["--no-solvability", "--difficulty-edges", "0.5,0.2"], "difficulty edges"),
    (["--model", "/nonexistent/model"], "does not exist"),
])
def test_cli_user_errors_exit_2(handcrafted: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                extra: list[str], message: str) -> None:
    rc = main(["data", "curate", "--input", str(handcrafted), "--output", str(tmp_path / "o.jsonl"), *extra])
    assert rc == 2 and message in capsys.readouterr().err


def test_cli_missing_input_and_same_output(tmp_path: Path, handcrafted: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "curate", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                 "--no-solvability"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["data", "curate", "--input", str(handcrafted), "--output", str(handcrafted), "--no-solvability"]) == 2
    assert "input file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["data", "curate", "--input", "a", "--output", "b", "--skip-filter", "nonsense"])
    assert exc.value.code == 2


def test_cli_rollouts_with_a_tiny_model(tmp_path: Path) -> None:
    from llmrl.models.tiny import TinyModelSpec, save_tiny_model

    model = save_tiny_model(tmp_path / "tiny", TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2,
                                                             num_kv_heads=2, intermediate_size=64))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                           for a, b in [(1, 2), (3, 4), (5, 6)]))
    args = ["data", "curate", "--input", str(src), "--output", str(out), "--model", str(model), "--rollouts", "3",
            "--max-new-tokens", "4", "--batch-size", "4", "--no-progress"]
    assert main([*args, "--min-correct", "0"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["rollouts"] == 3 and r["solve_rate"] in (0, 1 / 3, 2 / 3, 1) for r in rows)
    assert all(r["difficulty"] in range(1, 6) for r in rows)
    report = json.loads(default_report_path(out).read_text())
    assert report["model"] == str(model) and report["solvability"]["rollouts"] == 3
    assert report["sampling"]["max_new_tokens"] == 4 and report["sampling"]["temperature"] == 1.0
    assert main([*args, "--chat-template", "on"]) == 2  # the tiny tokenizer has no chat template
    assert main(args) == 0  # min_correct 1: what is unsolved is removed and counted
    report = json.loads(default_report_path(out).read_text())
    unsolved = sum(r["solve_rate"] == 0 for r in rows)
    assert report["steps"][-1] == {"step": "unsolved", "removed": unsolved, "remaining": 3 - unsolved, "enabled": True}


def test_curated_output_trains_with_the_bigmath_recipe(handcrafted: Path, tmp_path: Path) -> None:
    from llmrl.tasks.math_task import MathTask
    from tests.test_recipes import COMMON

    out = tmp_path / "curated.jsonl"
    curate_file(handcrafted, out, CurateOptions(), quiet=True)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    task = MathTask(path=out, question_key="problem")
    assert sorted(s["prompt"] for s in task.pool or []) == sorted(r["prompt"] for r in rows)
    recipe = Path(__file__).parent.parent / "recipes" / "bigmath_grpo.yaml"
    run = tmp_path / "run"
    rc = main(["train", str(recipe), *COMMON, "sft.steps=0", f"task.train_file={out}", f"output_dir={run}"])
    assert rc == 0 and math.isfinite(json.loads((run / "summary.json").read_text())["wall_seconds"])


def test_throughput_benchmark_runs(capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "curate_throughput.py"
    spec = importlib.util.spec_from_file_location("curate_throughput_benchmark", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--rows", "600", "--json"])
    assert json.loads(capsys.readouterr().out)["rows"] == result["rows"] == 600
    removed = {s["step"]: s["removed"] for s in result["steps"]}
    assert result["kept"] + sum(removed.values()) == 600
    assert all(removed[step] > 0 for step in STEPS if step != "unsolved")  # every injected kind is caught
