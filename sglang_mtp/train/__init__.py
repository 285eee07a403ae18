"""MTP self-distillation training (method.md, "Training").

- :mod:`.layout`: packed sequence layout (mask spans, replicated truth, original positions,
  blocked causal attention);
- :mod:`.loss`: the student-forced hard/soft teacher objective;
- :mod:`.trainer`: the loop (:func:`train`, :class:`TrainConfig`, checkpoints, resume);
- :mod:`.data`: JSONL/text loading; :mod:`.cli`: ``sglang-mtp train`` (:func:`train_main`).
"""

from .data import Example, load_examples
from .layout import Batch, Packed, collate, pack_sequence, render_pattern
from .loss import LossOutput, mtp_loss
from .trainer import TrainConfig, frozen_teacher, save_checkpoint, train


def train_main(argv=None) -> int:
    """``sglang-mtp train`` (imported lazily: the CLI module pulls in transformers)."""
    from .cli import train_main as _main
    return _main(argv)


__all__ = ["Batch", "Example", "LossOutput", "Packed", "TrainConfig", "collate",
           "frozen_teacher", "load_examples", "mtp_loss", "pack_sequence", "render_pattern",
           "save_checkpoint", "train", "train_main"]
