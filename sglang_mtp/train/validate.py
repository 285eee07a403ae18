"""Held-out validation during MTP training, and keeping the best checkpoint.

The training loss only sees training rows; what adaptation does to unseen prompts shows only
when the student decodes them. Every ``eval_every`` steps :func:`validate` decodes held-out
prompts with the reference decoder (``sglang_mtp.decode``) and compares them with the frozen
teacher's greedy output (computed once):

- ``plain``: the student's own greedy decoding (``ntp``): did adaptation change the model?
- each MTP strategy (default ConfAdapt 0.95 / 0.9 / 0.8 and verify, at the run's k_max):
  effective k (tokens per forward pass) and agreement with the teacher.

Agreement: ``exact`` = share of prompts whose whole output equals the teacher's, ``token`` =
share of the teacher's output positions where the student emitted the same token. With
answers in the eval data, ``accuracy`` = share of outputs that contain the answer as a whole
word (for the teacher too, as the reference point).

:class:`KeepBest` picks the checkpoint to keep, e.g. ``"conf_adapt:0.9, agreement>=0.98"``:
the evaluation with the highest effective k of that strategy among those whose agreement
(exact, or ``token_agreement>=``) meets the floor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..evaluate import run_strategy
from ..strategy import Strategy


@dataclass
class Validation:
    """Held-out prompts (token ids), optional answers, and what to decode."""

    prompts: list
    answers: list = None
    tokenizer: object = None  # needed for answers (decoding the outputs)
    metric: object = None  # (output text, answer) -> bool; default: the answer as a whole word
    max_new_tokens: int = 64
    strategies: tuple = ("conf_adapt:0.95", "conf_adapt:0.9", "conf_adapt:0.8", "verify")
    stop_token_ids: tuple = None  # None: the model's EOS
    batch_size: int = 64
    teacher_tokens: list = field(default=None, repr=False)  # set by teacher_reference()
    teacher: dict = field(default=None, repr=False)  # the teacher's record (accuracy)
    history: list = field(default=None, repr=False)  # [{"step", "eval"}] filled by train()

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("validation needs at least one held-out prompt")
        if self.answers is not None:
            if len(self.answers) != len(self.prompts):
                raise ValueError(f"{len(self.answers)} answers for {len(self.prompts)} prompts")
            if self.tokenizer is None:
                raise ValueError("validation with answers needs the tokenizer")

    def specs(self, k_max: int) -> list:
        """The strategies at the run's k_max (a spec that names its own k keeps it)."""
        out = []
        for spec in self.strategies:
            s = Strategy.parse(spec)
            if ":" not in spec or (s.kind == "conf_adapt" and spec.count(":") == 1):
                s = Strategy(s.kind, max(k_max, 1) if s.kind != "ntp" else 1, s.threshold)
            out.append(s)
        return out


def load_validation(path, tokenizer, *, chat_template=False, prompt_field="prompt", answer_field="answer",
                    **kwargs) -> Validation:
    """A :class:`Validation` from a JSONL file: one object per line with ``prompt_field``
    and, optionally, ``answer_field`` (every line or none). Other fields are ignored."""
    from .data import encode_example

    prompts, answers = [], []
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise ValueError(f"eval data file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"eval data file {path!r}: not JSONL ({e})") from None
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or not str(rec.get(prompt_field, "")).strip():
            raise ValueError(f"{path}:{n}: no {prompt_field!r} field")
        prompts.append(encode_example(tokenizer, str(rec[prompt_field]), "", chat_template=chat_template).ids[:-1])
        answers.append(rec.get(answer_field))
    have = [a is not None for a in answers]
    if any(have) and not all(have):
        raise ValueError(f"eval data file {path!r}: {answer_field!r} on some lines only")
    return Validation(prompts, answers if all(have) else None, tokenizer, **kwargs)


def name_of(s: Strategy) -> str:
    return {"conf_adapt": f"conf_adapt:{s.threshold:g}", "static": f"static:{s.k}"}.get(s.kind, s.kind)


def _decode(model, val, strategy):
    """(token lists, forward passes): the project's held-out decoding loop
    (:func:`sglang_mtp.evaluate.run_strategy`; it silences the untrained-mask warning, which
    every mid-training checkpoint would raise)."""
    tokens, passes, _ = run_strategy(model, val.prompts, strategy, val.max_new_tokens, val.stop_token_ids,
                                     val.batch_size)
    return tokens, passes


def _agreement(tokens, reference):
    exact = sum(t == r for t, r in zip(tokens, reference)) / len(reference)
    same = sum(sum(a == b for a, b in zip(t, r)) for t, r in zip(tokens, reference))
    return exact, same / max(1, sum(len(r) for r in reference))


def _accuracy(val, token_lists):
    texts = [val.tokenizer.decode(t, skip_special_tokens=True) for t in token_lists]
    metric = val.metric or contains_answer
    hits = [bool(metric(x, a)) for x, a in zip(texts, val.answers)]
    return sum(hits) / len(hits)


def contains_answer(text: str, answer) -> bool:
    """The default accuracy metric: ``answer`` occurs in ``text`` as a whole word."""
    return re.search(r"(?<!\w)" + re.escape(str(answer).strip()) + r"(?!\w)", text) is not None


def teacher_reference(teacher, val: Validation) -> dict:
    """Decode the teacher once (greedy); returns its record (``accuracy`` with answers)."""
    was_training = teacher.training
    teacher.eval()
    val.teacher_tokens, _ = _decode(teacher, val, "ntp")
    teacher.train(was_training)
    rec = {"tokens": sum(len(t) for t in val.teacher_tokens)}
    if val.answers is not None:
        rec["accuracy"] = _accuracy(val, val.teacher_tokens)
    return rec


def validate(student, val: Validation, k_max: int) -> dict:
    """One evaluation of ``student`` against the teacher's greedy output (see the module)."""
    if val.teacher_tokens is None:
        raise ValueError("call teacher_reference(teacher, validation) first")
    was_training = student.training
    student.eval()
    out = {}
    try:
        for s in [Strategy.ntp()] + val.specs(k_max):
            tokens, passes = _decode(student, val, s)
            exact, token = _agreement(tokens, val.teacher_tokens)
            rec = {"effective_k": sum(len(t) for t in tokens) / max(1, passes),
                   "agreement": exact, "token_agreement": token}
            if val.answers is not None:
                rec["accuracy"] = _accuracy(val, tokens)
            out["plain" if s.kind == "ntp" else name_of(s)] = rec
    finally:
        student.train(was_training)
    return out


def summary_line(step: int, ev: dict) -> str:
    parts = []
    for name, rec in ev.items():
        acc = f" acc {rec['accuracy']:.2f}" if "accuracy" in rec else ""
        k = "" if name == "plain" else f" k {rec['effective_k']:.2f}"
        parts.append(f"{name}{k} agree {rec['agreement']:.2f}{acc}")
    return f"[mtp-eval] step {step}: " + "; ".join(parts)


_KEEP = re.compile(r"^\s*(?P<mode>[\w.:]+)\s*,\s*(?P<metric>agreement|token_agreement|accuracy)\s*>=\s*"
                   r"(?P<floor>[0-9.]+)\s*$")


@dataclass
class KeepBest:
    """Checkpoint selection: the highest effective k of ``mode`` with ``metric >= floor``."""

    mode: str
    metric: str = "agreement"
    floor: float = 1.0
    best: dict = None  # {"step", "effective_k", metric} of the kept evaluation

    @staticmethod
    def parse(spec: str) -> "KeepBest":
        m = _KEEP.match(spec or "")
        if not m:
            raise ValueError(f"--keep-best {spec!r}: expected 'MODE, agreement>=X' (MODE e.g. conf_adapt:0.9, "
                             "verify, plain; or token_agreement / accuracy instead of agreement)")
        floor = float(m["floor"])
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"--keep-best: the floor must be in [0, 1], got {floor}")
        return KeepBest(m["mode"], m["metric"], floor)

    def offer(self, step: int, ev: dict) -> bool:
        """Whether this evaluation becomes the best one (then save its checkpoint)."""
        if self.mode not in ev:
            raise ValueError(f"--keep-best: mode {self.mode!r} is not evaluated; evaluated: {sorted(ev)}")
        rec = ev[self.mode]
        if self.metric not in rec:
            raise ValueError(f"--keep-best: {self.metric} needs answers in the eval data")
        if rec[self.metric] < self.floor:
            return False
        if self.best is not None and rec["effective_k"] <= self.best["effective_k"]:
            return False
        self.best = {"step": step, "effective_k": rec["effective_k"], self.metric: rec[self.metric]}
        return True

    def reason(self) -> str:
        if self.best is None:
            return (f"no evaluation reached {self.metric} >= {self.floor} for {self.mode}; the final model "
                    "is what the run wrote (nothing better to keep)")
        b = self.best
        return (f"kept step {b['step']}: {self.mode} effective k {b['effective_k']:.2f} with {self.metric} "
                f"{b[self.metric]:.3f} >= {self.floor} (the fastest evaluation above the floor)")

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "metric": self.metric, "floor": self.floor, "best": self.best,
                           "reason": self.reason()}, indent=1)


def plot_validation(history, path) -> None:
    """Effective k and agreement with the teacher vs training step, one line per mode."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    modes = list(history[0]["eval"])
    fig, (ax_k, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in modes:
        ax_a.plot(steps, [h["eval"][mode]["agreement"] for h in history], marker="o", label=mode)
        if mode != "plain":
            ax_k.plot(steps, [h["eval"][mode]["effective_k"] for h in history], marker="o", label=mode)
    ax_k.set(xlabel="training step", ylabel="effective k (tokens / pass)", title="held-out speed")
    ax_a.set(xlabel="training step", ylabel="identical to the teacher's greedy output",
             title="held-out agreement", ylim=(-0.02, 1.02))
    for ax in (ax_k, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
