"""Room in each request's row of SGLang's request-to-token table for a decode step's reserve.

SGLang makes each row ``context_len + 4 + W`` slots wide (W: query tokens per request in a
verify forward) but, at every speculative decode step, reserves a request's slots up to its
committed length + 2W (a double buffer: ``get_alloc_reserve_per_decode``). It widens the rows
to that reserve only for paged KV and UNO. With page size 1, a request whose committed length
passes ``context_len + 4 - W`` gets a reserve that runs past the end of its row: the CPU's row
write fails and takes the server down, and a GPU kernel would write into the next request's
row. W is 2 * k_max - 1 for MTP (15 at k_max 8), so requests running to within 11 tokens of
the context end reach it. This AFTER hook gives MTP servers rows that hold the reserve (W more
int32 entries per row).
"""

from __future__ import annotations

from .flags import ALGORITHM

TARGET = "sglang.srt.mem_cache.allocation_sizing.get_req_to_token_extra_context_len"


def widen_rows(extra: int, *args, **kwargs) -> int:
    """AFTER hook: at least the per-step reserve (+ a page's rounding) past the context."""
    from sglang.srt.mem_cache import allocation_sizing as sizing

    if sizing.get_spec().speculative_algorithm != ALGORITHM:
        return extra
    return max(extra, sizing.get_alloc_reserve_per_decode() + sizing.get_alloc_page_size() - 1)
