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


@dataclass(frozen=True)
class Problem:
    """One word problem (hashable: the held-out split is a set of problems)."""

    name: str
    obj: str
    verb: str
    a: int
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.verb in GAIN else self.a - self.b

    @property
    def prompt(self) -> str:
        n, o = self.name, self.obj
        return (f"Q: {n} has {self.a} {o}. {n} {self.verb} {self.b} {o}. "
                f"How many {o} does {n} have now?\nA:")

    @property
    def response(self) -> str:
        op = "+" if self.verb in GAIN else "-"
        return (f" {self.name} has {self.a} {self.obj}. {self.name} {self.verb} {self.b}, "
                f"so {self.a} {op} {self.b} = {self.answer}. The answer is {self.answer}.")


def random_problem(rng: random.Random) -> Problem:
    """Draw one problem uniformly from the template space."""
    verb = rng.choice(GAIN + LOSE)
    return Problem(rng.choice(NAMES), rng.choice(OBJECTS), verb, rng.randint(10, 99),
                   rng.randint(1, 9))


def make_splits(n_train: int, n_eval: int, seed: int = 0):
    """(train problems, held-out problems): disjoint, deterministic in ``seed``."""
    rng = random.Random(seed)
    held_out = []
    seen = set()
    while len(held_out) < n_eval:
        p = random_problem(rng)
        if p not in seen:
            seen.add(p)
            held_out.append(p)
    train = []
    while len(train) < n_train:
        p = random_problem(rng)
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
    lines = [Problem(n, o, v, 10, 1).prompt + Problem(n, o, v, 10, 1).response
             for n in NAMES for o in OBJECTS for v in GAIN + LOSE]
    digits = " ".join(str(d) for d in range(10)) + " " + "".join(str(d) for d in range(10))
    return lines + [" ".join(words), digits, " 100 + 9 = 108"]
