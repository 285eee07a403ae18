"""Keep SGLang's committed KV length equal to the KV that real tokens produced.

SGLang assumes the EAGLE invariant: after a step that emits ``a`` tokens, KV exists for
every emitted token but the last, so it does ``req.kv.kv_committed_len += a``. In the lossy
MTP modes the tokens emitted by a step were predicted at MASK positions: the KV written at
their positions came from ``<MTP>`` inputs and is only replaced with real-token KV on the
next step (when those tokens are fed as inputs). If SGLang's committed length covered them,
the radix cache would key the request's final tokens to mask-input KV when the request
finishes, and a later request sharing that prefix would read wrong KV.

The worker therefore reports, per request, how many query positions of the step hold
real-token KV (``keep``) in one extra column of the stride-padded ``next_token_ids``
(stride ``W + 1``; SGLang reads only the first ``accept_len`` columns). This AFTER hook on
the result processor replaces SGLang's ``+= a`` with ``+= keep``. Finishing requests are
released right after this hook, so the radix cache only ever keys real-token KV; the slots
of the uncommitted tail stay reserved and are freed with the request
(``_release_overallocated_kv_indices``). No device sync: the column rides in the D2H copy
SGLang already makes.

Streaming sessions (``--enable-streaming-session``) keep a finished turn's KV for the next
turn and set its committed length to the prompt plus every output token, bounded only by the
allocated length. On an MTP server the allocated length runs past the real KV (a step's
reserve, whose positions hold mask-input KV or nothing), so the next turn read that as its
context: on the toy, turns after the first decoded differently from the same context sent
whole, plain requests included. :func:`session_keeps_real_kv` bounds it by the committed
length this module kept; the next turn re-prefills the rest.
"""

from __future__ import annotations

from .flags import ALGORITHM

TARGET = (
    "sglang.srt.managers.scheduler_components.batch_result_processor."
    "SchedulerBatchResultProcessor._resolve_spec_v2_tokens"
)
SESSION_TARGET = "sglang.srt.session.streaming_session.StreamingSession.try_cache_finished_req"


def keep_column(result):
    """The per-request ``keep`` counts shipped by the MTP worker, or None for other results."""
    width = result.speculative_num_draft_tokens
    stride = result.speculative_output_stride
    if width is None or stride != width + 1 or result.next_token_ids is None:
        return None
    return result.next_token_ids.view(-1, stride)[:, width].tolist()


def correct_committed_lengths(predict_tokens, processor, result, batch, *args, **kwargs):
    """AFTER hook: ``kv_committed_len += keep - (tokens SGLang just committed)``."""
    if getattr(batch.spec_algorithm, "name", None) != ALGORITHM:
        return predict_tokens
    keep = keep_column(result)
    if keep is None:
        return predict_tokens
    for req, tokens, kept in zip(batch.reqs, predict_tokens, keep):
        # Same skip rule as SGLang's own increment (nothing was added for these).
        if req.is_retracted or req.finished():
            continue
        req.kv.kv_committed_len += kept - len(tokens)
    return predict_tokens


def session_keeps_real_kv(original, session, req, *args, **kwargs):
    """AROUND hook on ``StreamingSession.try_cache_finished_req``: on MTP servers the kept
    record's committed length never exceeds the real KV the request committed."""
    from sglang.srt.mem_cache import allocation_sizing as sizing

    kv = getattr(req, "kv", None)
    real = getattr(kv, "kv_committed_len", None)
    kept = original(session, req, *args, **kwargs)
    if kept and real is not None and sizing.get_spec().speculative_algorithm == ALGORITHM:
        kv.kv_committed_len = min(kv.kv_committed_len, real)
    return kept
