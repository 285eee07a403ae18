"""``meta_info["mtp_forward_passes"]``: how many forward passes produced a request's tokens;
``meta_info["mtp_widths"]``: how many of its decode passes ran at each width.

Counts the prefill (it emits the first token) plus every decode pass of the request,
whatever its width: ``completion_tokens / mtp_forward_passes`` is the request's effective k
(1 for plain decoding, close to k for static k). SGLang counts the decode passes of a
speculative request in ``spec_verify_ct`` (the result processor increments it once per
decode step in which the request took part) and reports it only when drafts were proposed;
this AFTER hook on the tokenizer manager's speculative metrics (run once per finished
request) adds the prefill and always reports the count. A prefill split in chunks counts
once (only its last chunk produces a token); a retracted request restarts its count.

The widths (load-adaptive width, :mod:`sglang_mtp.width`) ride SGLang's per-request
``cap_lens`` histogram (the worker reports each step's width as the request's ``cap_lens``
entry); ``mtp_widths`` maps width (a string, as in JSON) to pass count.
"""

from __future__ import annotations

from .flags import ALGORITHM

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._calculate_spec_decoding_metrics"
KEY = "mtp_forward_passes"
WIDTHS_KEY = "mtp_widths"


def forward_passes(spec_verify_ct: int) -> int:
    """Passes that produced tokens: the prefill plus ``spec_verify_ct`` decode passes."""
    return int(spec_verify_ct) + 1


def add_forward_passes(result, manager, meta_info, recv_obj, i, *args, **kwargs):
    """AFTER hook: ``meta_info["mtp_forward_passes"]`` for requests of the MTP algorithm."""
    from sglang.srt.runtime_context import get_spec

    algorithm = get_spec().speculative_algorithm
    if str(getattr(algorithm, "name", algorithm)).upper() != ALGORITHM:
        return result
    counts = getattr(recv_obj, "spec_verify_ct", None)
    if counts is not None and len(counts) > i:
        meta_info[KEY] = forward_passes(counts[i])
    hist = getattr(recv_obj, "spec_cap_lens_histogram", None)
    if hist is not None and len(hist) > i and hist[i]:
        meta_info[WIDTHS_KEY] = widths_used(hist[i])
    return result


def widths_used(histogram) -> dict:
    """{"width": decode passes} from a cap-lens histogram (index = width)."""
    return {str(w): int(n) for w, n in enumerate(histogram) if n}
