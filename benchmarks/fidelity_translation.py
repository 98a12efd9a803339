"""How often ``llmrl.rewards.translation``'s chrF / BLEU differ from sacreBLEU's sentence scores, and how long a
reward call takes on 1 MB adversarial inputs, before (the module at ``fidelity_common.BEFORE``) and after.

``cases(n, seed)`` makes ``n`` fresh (hypothesis, reference) pairs from ``random.Random(seed)``: random
sentences in a dozen scripts (Latin with diacritics, Cyrillic, Greek, CJK without spaces, kana, Hangul,
Arabic, Devanagari with combining marks, emoji, numbers such as ``3.14``/``1,000``) with punctuation, paired
with an identical copy, word or character edits, the tokenised form (``"word ,"``), a prefix, a repeat, or an
unrelated sentence; then a fixed list of adversarial pairs: empty and whitespace-only strings, the cases
sacreBLEU's 13a tokeniser splits or rewrites (``&quot;``, ``<skipped>``, ``-\\n``, ``1,000`` against ``1 , 000``,
``e-mail``), control characters, lone surrogates, and inputs over 10,000 characters (a long hypothesis that
repeats the start of the reference: the old truncation scored it 100).

``disagreements(module, cases)`` counts the pairs where ``module.chrf(h, r)`` / ``module.sentence_bleu(h, r)``
(and ``module.chrf_plus_plus`` where it exists) differ from ``sacrebleu.sentence_chrf(h, [r]).score`` /
``sacrebleu.sentence_bleu(h, [r]).score`` (exact ``==``; an exception counts as a disagreement).
``worst_times(module)`` times both metrics and ``translation_reward`` on 1 MB hypotheses against a short and a
1 MB reference.

Run: ``python benchmarks/fidelity_translation.py [--n 2000] [--seed 0] [--json] [--before REV]``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from fidelity_common import BEFORE, module_at, print_table, use_source_tree

MB = 1_000_000
WORDS = {
    "en": "the cat sees a big dog and runs home quickly while children play in old park".split(),
    "de": "der Bär läuft über die Straße und grüßt fünf müde Füchse im Wald heute".split(),
    "fr": "l'homme a été très content d'être là où il fait beau aujourd'hui garçon".split(),
    "ru": "кошка видит большую собаку и быстро бежит домой пока дети играют".split(),
    "el": "η γάτα βλέπει ένα μεγάλο σκύλο και τρέχει γρήγορα στο σπίτι".split(),
    "zh": list("猫看见一只大狗然后很快跑回家孩子们在公园里玩"),
    "ja": "ねこ が おおきな いぬ を みて はしって いえ に かえる".split(),
    "ko": "고양이가 큰 개를 보고 빨리 집으로 달려간다 아이들은 공원에서 논다".split(),
    "ar": "القطة ترى كلبا كبيرا وتجري بسرعة إلى البيت بينما يلعب الأطفال".split(),
    "hi": "बिल्ली एक बड़े कुत्ते को देखती है और जल्दी घर भागती है".split(),
    "emoji": ["🐱", "🐶", "🏠", "👍🏽", "🇫🇷", "❤️", "😀😀"],
    "num": ["3.14", "1,000", "2-3", "10%", "$5", "1.5e3", "42", "-7", "½"],
}
PUNCT = [",", ".", "!", "?", ";", ":", "...", "—", "…", '"', "'", "(", ")", "«", "»", "-", "&", "/"]


def _sentence(rng: random.Random) -> str:
    langs = [rng.choice(list(WORDS))] if rng.random() < 0.8 else rng.sample(list(WORDS), 2)
    words = []
    for _ in range(rng.randrange(1, 26)):
        word = rng.choice(WORDS[rng.choice(langs)])
        if rng.random() < 0.2:
            p = rng.choice(PUNCT)
            word = word + p if rng.random() < 0.7 else p + word
        words.append(word)
    sep = "" if langs == ["zh"] and rng.random() < 0.7 else " "
    text = sep.join(words)
    return text + rng.choice(["", ".", "!", "?", " .", "\n"])


def _edit(rng: random.Random, text: str) -> str:
    words = text.split()
    kind = rng.randrange(9)
    if kind == 0 and words:  # drop a word
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if kind == 1 and len(words) > 1:  # swap two words
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
        return " ".join(words)
    if kind == 2:  # character typo
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice("xqé漢 .,") + text[i + 1 :]
    if kind == 3:  # tokenised form: punctuation split off by spaces
        return "".join(f" {c} " if c in ",.!?;:()\"'" else c for c in text)
    if kind == 4:  # case change
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == 5:  # spaces removed / doubled
        return text.replace(" ", "") if rng.random() < 0.5 else text.replace(" ", "  \t")
    if kind == 6:  # prefix
        return text[: rng.randrange(len(text) + 1)]
    if kind == 7:  # repeated
        return " ".join([text] * rng.randrange(2, 5))
    return text + " " + rng.choice(WORDS["en"])


def adversarial_cases() -> list[tuple[str, str]]:
    """Fixed pairs: empty/whitespace, 13a tokenisation edge cases, odd characters, inputs over 10,000 chars."""
    ref = "The quick brown fox, 3.14 km away, doesn't jump over the lazy dog's e-mail (really)!"
    long_ref = " ".join(
        f"Sentence {i}: the cat sees the dog, and the bird (number {i}) sings." for i in range(250)
    )
    pairs = [
        ("", ""), ("", ref), (ref, ""), ("   ", ref), (ref, " \t\n"), (" ", " "), ("\n", "\n"),
        (ref, ref), (ref.lower(), ref), (ref + " .", ref), (ref.rstrip("!"), ref),
        ("Hello, world!", "Hello , world !"), ("3.14", "3 . 14"), ("1,000", "1 , 000"), ("e-mail", "e - mail"),
        ("2-3", "2 - 3"), ("&quot;hi&quot;", '"hi"'), ("&amp; &lt;b&gt;", "& <b>"), ("<skipped>word", "word"),
        ("hyph-\nen", "hyphen"), ("line\nbreak", "line break"), ("U.S.A.", "U . S . A ."), ("don't", "don ' t"),
        ("(parens)", "( parens )"), ("a...b", "a . . . b"), ("«quote» — dash…", "« quote » — dash …"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"), ("e\u0301", "é"), ("zero\u200bwidth", "zerowidth"),
        ("nb\u00a0sp", "nb sp"), ("nul\x00char", "nul char"), ("lone \ud800 surrogate", "lone surrogate"),
        ("🐱🐶", "🐱 🐶"), ("猫看见狗", "猫 看见 狗"), ("a", "a"), ("a", "b"), (".", "."), ("ab", "abc"),
        # over 10,000 characters
        (long_ref[:10_000] + " and a different ending" * 50, long_ref),
        ((long_ref[:200] + " ") * 60, long_ref),
        ((ref + " ") * 200, ref),
        (long_ref, long_ref[:300]),
        (long_ref * 2, long_ref),
        ("x" * 12_000, "x" * 11_000),
    ]  # fmt: skip
    return pairs


def cases(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` fresh random (hypothesis, reference) pairs from ``random.Random(seed)``, then the fixed adversarial
    pairs of :func:`adversarial_cases`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ref = _sentence(rng)
        roll = rng.random()
        if roll < 0.1:
            hyp = ref
        elif roll < 0.75:
            hyp = ref
            for _ in range(rng.randrange(1, 4)):
                hyp = _edit(rng, hyp)
        elif roll < 0.95:
            hyp = _sentence(rng)
        else:
            hyp = rng.choice(["", " ", "\t\n", ref + ref])
        out.append((hyp, ref) if rng.random() < 0.9 else (ref, hyp))
    return out + adversarial_cases()


def _reference_scores() -> dict[str, Callable[[str, str], float]]:
    import sacrebleu

    return {
        "chrf": lambda h, r: sacrebleu.sentence_chrf(h, [r]).score,
        "chrf++": lambda h, r: sacrebleu.sentence_chrf(h, [r], word_order=2).score,
        "bleu": lambda h, r: sacrebleu.sentence_bleu(h, [r]).score,
    }


def disagreements(module: ModuleType, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Per metric, the number of pairs where ``module``'s score differs (``!=``) from sacreBLEU's sentence score;
    ``None`` for a metric the module lacks; ``examples``: up to 3 per metric."""
    names = {"chrf": "chrf", "chrf++": "chrf_plus_plus", "bleu": "sentence_bleu"}
    truth = _reference_scores()
    out: dict[str, Any] = {"pairs": len(pairs), "examples": {}}
    for metric, attr in names.items():
        fn = getattr(module, attr, None)
        if fn is None:
            out[metric] = None
            continue
        count, examples = 0, []
        for hyp, ref in pairs:
            expected = truth[metric](hyp, ref)
            try:
                got: Any = fn(hyp, ref)
            except Exception as exc:  # a crash is a disagreement too
                got = f"{type(exc).__name__}: {exc}"
            if got != expected:
                count += 1
                if len(examples) < 3:
                    examples.append([hyp[:60], ref[:60], len(hyp), got, expected])
        out[metric] = count
        out["examples"][metric] = examples
    return out


def adversarial_inputs(seed: int = 0) -> dict[str, str]:
    """1 MB (10^6-character) hypotheses."""
    rng = random.Random(seed)
    start = "The quick brown fox jumps over"
    alphabet = "abcdefghij klmnop,.éü漢字кошка "
    return {
        "one_char": "a" * MB,
        "random": "".join(rng.choice(alphabet) for _ in range(MB)),
        "ref_start_repeat": ((start + " ") * (MB // (len(start) + 1) + 1))[:MB],
        "no_whitespace": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(MB)),
        "single_char_words": " ".join(rng.choice("abcdefghij") for _ in range(MB // 2)),
        "unicode": "".join(
            chr(rng.choice((rng.randrange(0x80, 0xD800), rng.randrange(0x10000, 0x30000)))) for _ in range(MB)
        ),
        "punctuation": "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(MB)),
    }


def worst_times(module: ModuleType) -> dict[str, float]:
    """Seconds per call of ``chrf``, ``sentence_bleu``, ``chrf_plus_plus`` (where the module has it) and
    ``translation_reward`` (chrF and BLEU) on each 1 MB hypothesis of :func:`adversarial_inputs` against a
    short and a 1 MB reference, and on a 2 MB one (over the default ``max_chars``)."""
    rng = random.Random(1)
    short = "The quick brown fox jumps over the lazy dog, and then it runs away."
    words = [w for pool in WORDS.values() for w in pool]
    long_ref = ""
    while len(long_ref) < MB:
        long_ref += " ".join(rng.choice(words) for _ in range(1000)) + ". "
    refs = {"short_ref": short, "1MB_ref": long_ref[:MB]}
    hyps = adversarial_inputs()
    hyps["2MB_one_char"] = "a" * (2 * MB)

    def timed(fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
        start = time.perf_counter()
        fn(*args, **kwargs)
        return time.perf_counter() - start

    out: dict[str, float] = {}
    for ref_name, ref in refs.items():
        for name, hyp in hyps.items():
            key = f"{name}/{ref_name}"
            completion = f"<think>t</think><answer>{hyp}</answer>"
            out[f"chrf/{key}"] = timed(module.chrf, hyp, ref)
            out[f"bleu/{key}"] = timed(module.sentence_bleu, hyp, ref)
            if hasattr(module, "chrf_plus_plus"):
                out[f"chrf++/{key}"] = timed(module.chrf_plus_plus, hyp, ref)
            out[f"reward_chrf/{key}"] = timed(module.translation_reward, completion, ref)
            out[f"reward_bleu/{key}"] = timed(module.translation_reward, completion, ref, metric="bleu")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--before", default=BEFORE, help="git revision for the 'before' column ('' to skip)")
    ap.add_argument("--no-times", action="store_true", help="skip the 1 MB timings")
    args = ap.parse_args(argv)
    use_source_tree()
    from llmrl.rewards import translation

    pairs = cases(args.n, args.seed)
    result: dict[str, Any] = {"n": args.n, "seed": args.seed, "pairs": len(pairs)}
    result["after"] = disagreements(translation, pairs)
    before = module_at(args.before, "src/llmrl/rewards/translation.py") if args.before else None
    if before is not None:
        result["before"] = disagreements(before, pairs)
    if not args.no_times:
        result["times_after"] = worst_times(translation)
        if before is not None:
            result["times_before"] = worst_times(before)
    if args.json:
        print(json.dumps(result))
        return result
    print(f"{len(pairs)} pairs ({args.n} random, seed {args.seed}); disagreements with sacreBLEU (exact ==):")
    rows = [
        {"metric": m, "before": result.get("before", {}).get(m), "after": result["after"][m]}
        for m in ("chrf", "chrf++", "bleu")
    ]
    print_table(rows, ["metric", "before", "after"])
    for m, examples in result["after"]["examples"].items():
        for ex in examples:
            print(f"    after {m}: {ex}")
    if "times_after" in result:
        after, old = result["times_after"], result.get("times_before", {})
        print("\nseconds per call, 1 MB hypotheses:")
        print_table(
            [{"case": k, "before_s": old.get(k), "after_s": v} for k, v in after.items()],
            ["case", "before_s", "after_s"],
        )
        worst = max(after, key=after.__getitem__)
        print(f"worst after: {worst} {after[worst]:.3f} s")
    return result


if __name__ == "__main__":
    main()
