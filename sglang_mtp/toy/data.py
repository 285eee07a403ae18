"""The toy task: templated arithmetic word problems with a short step-by-step answer.

A problem: someone has ``a`` (10..99) objects and gains or loses ``b`` (1..9) of them::

    Q: Ann has 47 shells. Ann sells 8 shells. How many shells does Ann have now?
    A: Ann has 47 shells. Ann sells 8, so 47 - 8 = 39. The answer is 39.

The answer mixes easy tokens (copies of the question, a fixed template) and hard ones (the
digits of the result), like the paper's math data. Everything is a deterministic function
of a seed; the held-out problems never occur in the training set.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NAMES = ("Tom", "Ann", "Bob", "Sue", "Max", "Eva")
OBJECTS = ("apples", "pens", "books", "cards", "shells", "coins")
GAIN = ("buys", "finds", "gets")
LOSE = ("sells", "loses", "gives away")
ANSWER_RE = re.compile(r"The answer is (-?\d+)\.")


def _apply(x, verb, b):
    return x + b if verb in GAIN else x - b


@dataclass(frozen=True)
class Problem:
    """One word problem (hashable: the held-out split is a set of problems).

    ``verb2``/``b2`` (optional) add a second step that starts from the first result.
    """

    name: str
    obj: str
    verb: str
    a: int
    b: int
    verb2: str | None = None
    b2: int | None = None

    @property
    def first(self) -> int:
        return _apply(self.a, self.verb, self.b)

    @property
    def answer(self) -> int:
        return self.first if self.verb2 is None else _apply(self.first, self.verb2, self.b2)

    @property
    def prompt(self) -> str:
        n, o = self.name, self.obj
        then = f"Then {n} {self.verb2} {self.b2} {o}. " if self.verb2 else ""
        return (f"Q: {n} has {self.a} {o}. {n} {self.verb} {self.b} {o}. {then}"
                f"How many {o} does {n} have now?\nA:")

    @property
    def response(self) -> str:
        n = self.name
        text = (f" {n} has {self.a} {self.obj}. {n} {self.verb} {self.b}, "
                f"so {self.a} {_op(self.verb)} {self.b} = {self.first}.")
        if self.verb2:
            text += (f" {n} {self.verb2} {self.b2}, "
                     f"so {self.first} {_op(self.verb2)} {self.b2} = {self.answer}.")
        return text + f" The answer is {self.answer}."


def _op(verb):
    return "+" if verb in GAIN else "-"


def random_problem(rng: random.Random, two_step: float = 0.0) -> Problem:
    """Draw one problem uniformly from the template space (two steps with prob. ``two_step``)."""
    name, obj, verb = rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(GAIN + LOSE)
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    if two_step <= 0 or rng.random() >= two_step:
        return Problem(name, obj, verb, a, b)
    while True:  # a second step that keeps the count positive
        p = Problem(name, obj, verb, a, b, rng.choice(GAIN + LOSE), rng.randint(1, 9))
        if p.answer > 0:
            return p


def make_splits(n_train: int, n_eval: int, seed: int = 0, two_step: float = 0.0):
    """(train problems, held-out problems): disjoint, deterministic in ``seed``."""
    rng = random.Random(seed)
    held_out = []
    seen = set()
    while len(held_out) < n_eval:
        p = random_problem(rng, two_step)
        if p not in seen:
            seen.add(p)
            held_out.append(p)
    train = []
    while len(train) < n_train:
        p = random_problem(rng, two_step)
        if p not in seen:  # repeats inside the training set are fine, leaks are not
            train.append(p)
    return train, held_out


def parse_answer(text: str):
    """The integer after "The answer is", or None when the output has none."""
    m = ANSWER_RE.search(text)
    return int(m.group(1)) if m else None


def corpus_text() -> list:
    """Strings covering every token the toy task can produce (to build the vocabulary)."""
    words = list(NAMES) + list(OBJECTS) + list(GAIN) + list(LOSE)
    lines = [Problem(n, o, v, 10, 1, v, 1).prompt + Problem(n, o, v, 10, 1, v, 1).response
             for n in NAMES for o in OBJECTS for v in GAIN + LOSE]
    digits = " ".join(str(d) for d in range(10)) + " " + "".join(str(d) for d in range(10))
    return lines + [" ".join(words), digits, " 100 + 9 = 108"]
