"""A small generated preference set with a ground truth: arithmetic questions and capital-city
facts whose `chosen` answer is right and `rejected` answer wrong."""
from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable

from .records import Pair

CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Russia", "Moscow"), ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"), ("Norway", "Oslo"), ("Finland", "Helsinki"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Mexico", "Mexico City"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Ireland", "Dublin"), ("Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"), ("Switzerland", "Bern"), ("Denmark", "Copenhagen"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("Iran", "Tehran"),
    ("Morocco", "Rabat"), ("Colombia", "Bogota"), ("New Zealand", "Wellington"),
)
GENERATED_KINDS = ("addition", "subtraction", "multiplication", "capitals")
GENERATED_SECTIONS = {"arithmetic": ["addition", "subtraction", "multiplication"], "facts": ["capitals"]}
GENERATED_SPLITS = {"test": range(0, 2), "validation": range(2, 3), "train": range(3, 10)}  # buckets of 10
_OPS = {"addition": ("+", "plus", lambda a, b: a + b), "subtraction": ("-", "minus", lambda a, b: a - b),
        "multiplication": ("*", "times", lambda a, b: a * b)}
_ASK = ("What is {a} {sym} {b}?", "Compute {a} {sym} {b}.", "Calculate {a} {word} {b}.",
        "Quick question: what does {a} {sym} {b} equal?")
_SAY = ("{a} {sym} {b} = {x}.", "The answer is {x}.", "{a} {word} {b} is {x}.", "Let me compute: {a} {sym} {b} = {x}.")
_ASK_CAPITAL = ("What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital city of {c}.")
_SAY_CAPITAL = ("The capital of {c} is {x}.", "{x} is the capital of {c}.", "It is {x}.")


def _bucket(question_key: str) -> int:
    return int(hashlib.sha256(question_key.encode()).hexdigest(), 16) % 10


def _wrong_number(rng: random.Random, x: int) -> int:
    """A plausible wrong answer: off by 1, 2 or 10, or 100, or with two digits swapped."""
    for _ in range(20):
        how = rng.choice(("one", "two", "ten", "hundred", "swap"))
        if how == "swap" and len(str(abs(x))) >= 2:
            d = list(str(abs(x)))
            i = rng.randrange(len(d) - 1)
            d[i], d[i + 1] = d[i + 1], d[i]
            w = int("".join(d)) * (1 if x >= 0 else -1)
        else:
            w = x + rng.choice((-1, 1)) * {"one": 1, "two": 2, "ten": 10, "hundred": 100, "swap": 1}[how]
        if w != x and w >= 0:
            return w
    return x + 1


def _generated_pair(rng: random.Random, kind: str) -> tuple[str, dict, str, str, str]:
    """(question key, meta, prompt, chosen, rejected) of one item of `kind`."""
    if kind == "capitals":
        i = rng.randrange(len(CAPITALS))
        country, capital = CAPITALS[i]
        wrong = rng.choice([c for j, (_, c) in enumerate(CAPITALS) if j != i])
        say = rng.choice(_SAY_CAPITAL)
        meta = {"kind": kind, "country": country, "answer": capital, "wrong": wrong}
        return (f"capitals:{country}", meta, rng.choice(_ASK_CAPITAL).format(c=country),
                say.format(c=country, x=capital), say.format(c=country, x=wrong))
    sym, word, fn = _OPS[kind]
    if kind == "multiplication":
        a, b = rng.randint(3, 99), rng.randint(3, 12)
    else:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        if kind == "subtraction" and b > a:
            a, b = b, a
    x = fn(a, b)
    w = _wrong_number(rng, x)
    say = rng.choice(_SAY)
    meta = {"kind": kind, "a": a, "b": b, "op": sym, "answer": x, "wrong": w}
    fill = {"a": a, "b": b, "sym": sym, "word": word}
    return (f"{kind}:{a}:{b}", meta, rng.choice(_ASK).format(**fill), say.format(**fill, x=x), say.format(**fill, x=w))


def generated_pairs(n: int, seed: int = 0, split: str = "train", kinds: Iterable[str] = GENERATED_KINDS) -> list[Pair]:
    """`n` pairs whose `chosen` states the right answer and `rejected` the same sentence with a wrong
    one. Deterministic (a smaller n gives a prefix of a larger one); splits are disjoint by question
    (a hash of it: test 20%, validation 10%, train 70%); meta holds the ground truth."""
    if split not in GENERATED_SPLITS:
        raise ValueError(f"split must be one of {sorted(GENERATED_SPLITS)}, got {split!r}")
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in GENERATED_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown generated kind(s) {unknown}; expected some of {GENERATED_KINDS}")
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(f"critcore-generated:{seed}:{split}")
    buckets = GENERATED_SPLITS[split]
    seen: set[tuple[str, str, str]] = set()
    out: list[Pair] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * (n + 10):
            raise ValueError(f"cannot generate {n} distinct {split} pairs of kinds {kinds}")
        kind = rng.choice(kinds)
        qkey, meta, prompt, chosen, rejected = _generated_pair(rng, kind)
        if _bucket(qkey) not in buckets or (prompt, chosen, rejected) in seen:
            continue
        seen.add((prompt, chosen, rejected))
        out.append(Pair(id=f"generated/{split}/{seed}/{len(out)}", prompt=prompt, chosen=chosen, rejected=rejected,
                        subset=kind, source="generated", meta=meta).validate())
    return out


def generated_truth(pair: Pair) -> bool:
    """Recompute a generated pair's answer from its operands: True when `chosen` states the right
    answer and `rejected` states a different, wrong one."""
    m = pair.meta
    if m.get("kind") == "capitals":
        truth = dict(CAPITALS)[m["country"]]
        return truth == m["answer"] and truth in pair.chosen and m["wrong"] != truth and \
            truth not in pair.rejected and m["wrong"] in pair.rejected
    _, _, fn = _OPS[m["kind"]]
    truth = fn(int(m["a"]), int(m["b"]))
    nums = lambda text: [int(t) for t in re.findall(r"\d+", text)]  # noqa: E731
    return (truth == m["answer"] and nums(pair.chosen)[-1] == truth and nums(pair.rejected)[-1] == m["wrong"]
            and m["wrong"] != truth)
