"""Self-made prompts for the self-distillation set: seed templates x topics, no external data.

Held-out prompts use topics that no training prompt mentions (and templates of the same
kinds), so the evaluation measures generalisation to unseen prompts, not memorisation.
"""

from __future__ import annotations

import random

TEMPLATES = (
    "What is {t}?",
    "Explain {t} in simple terms.",
    "Give me three facts about {t}.",
    "Write a short poem about {t}.",
    "Why is {t} important?",
    "Describe {t} to a child.",
    "What are the pros and cons of {t}?",
    "Write one sentence about {t}.",
    "How would you teach someone about {t}?",
    "List two common questions people ask about {t}.",
    "Summarize what you know about {t} in two sentences.",
    "Tell me a fun fact about {t}.",
)
TOPICS = (
    "the moon", "photosynthesis", "coffee", "the ocean", "volcanoes", "chess", "bicycles",
    "rain", "honey bees", "the internet", "pizza", "libraries", "trees", "music", "friendship",
    "the sun", "electricity", "gardening", "dogs", "cats", "mountains", "bread", "recycling",
    "exercise", "sleep", "the alphabet", "maps", "clocks", "snow", "rivers", "birds",
    "football", "painting", "computers", "vaccines", "money", "elephants", "deserts",
    "the weather", "history", "water", "tea", "trains", "robots", "the brain",
    "stars", "islands", "cooking", "dinosaurs", "airplanes",
)
HELD_OUT_TOPICS = ("bridges", "penguins", "the piano", "rainbows", "cheese", "forests",
                   "the heart", "kites", "glaciers", "mathematics")
MATH = ("What is {a} plus {b}?", "What is {a} times {b}?", "What is {a} minus {b}?")


def _math(rng, n):
    return [rng.choice(MATH).format(a=rng.randint(2, 99), b=rng.randint(2, 20)) for _ in range(n)]


def make_prompts(n_train: int, n_eval: int, seed: int = 0) -> tuple:
    """(train prompts, held-out prompts): disjoint topics, no prompt in both lists."""
    rng = random.Random(seed)
    train = [tpl.format(t=t) for tpl in TEMPLATES for t in TOPICS]
    train += _math(rng, max(0, n_train - len(train)) or len(train) // 10)
    rng.shuffle(train)
    held = [tpl.format(t=t) for tpl in TEMPLATES for t in HELD_OUT_TOPICS]
    held += _math(random.Random(seed + 1), len(held) // 10)
    rng.shuffle(held)
    train = list(dict.fromkeys(train))[:n_train]
    held = [p for p in dict.fromkeys(held) if p not in set(train)][:n_eval]
    return train, held
