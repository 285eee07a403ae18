"""Closed-loop load generator for SGLang's native ``/generate`` endpoint (streaming, greedy).

At concurrency c, c workers each take the next prompt from a shared queue and send it, so at
most c requests are in flight and a new one starts as soon as one finishes. Per request it
records end-to-end latency, time to first token (first streamed chunk carrying output), output
tokens and the server-reported forward-pass count (for the effective k).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import aiohttp


@dataclass
class RequestResult:
    """What one request measured (times in seconds). ``error`` is set when it failed."""

    index: int
    ok: bool = False
    error: Optional[str] = None
    latency: Optional[float] = None
    ttft: Optional[float] = None
    output_tokens: int = 0
    prompt_tokens: Optional[int] = None
    forward_passes: Optional[int] = None
    text: str = ""
    correct: Optional[bool] = None
    finish_reason: Optional[str] = None
    meta: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> Optional[float]:
        """Per-user speed: output tokens / end-to-end latency."""
        if not self.ok or not self.latency:
            return None
        return self.output_tokens / self.latency

    def to_json(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


def forward_passes(meta: dict) -> Optional[int]:
    """Server-reported forward passes for the request: the plugin's ``mtp_forward_passes``,
    else SGLang's speculative ``spec_verify_ct``; None when the server reports neither."""
    for key in ("mtp_forward_passes", "spec_verify_ct"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def generate_payload(text: str, max_new_tokens: int, ignore_eos: bool = False, temperature: float = 0.0) -> dict:
    """The ``/generate`` body: greedy unless ``temperature`` > 0, streamed, no MTP fields."""
    params = {"temperature": temperature, "max_new_tokens": max_new_tokens}
    if ignore_eos:
        params["ignore_eos"] = True
    return {"text": text, "sampling_params": params, "stream": True}


def apply_chunk(result: RequestResult, chunk: dict, t_start: float, now: float) -> None:
    """Fold one streamed ``/generate`` chunk into ``result`` (text and meta are cumulative)."""
    if "error" in chunk:
        err = chunk["error"]
        raise RuntimeError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
    meta = chunk.get("meta_info") or {}
    tokens = meta.get("completion_tokens")
    if isinstance(tokens, int):
        result.output_tokens = tokens
    if result.ttft is None and (result.output_tokens > 0 or chunk.get("text")):
        result.ttft = now - t_start
    result.text = chunk.get("text", result.text)
    if meta:
        result.meta = meta
        result.prompt_tokens = meta.get("prompt_tokens", result.prompt_tokens)
        result.finish_reason = _finish_type(meta.get("finish_reason"))
        result.forward_passes = forward_passes(meta)


def _finish_type(reason) -> Optional[str]:
    if isinstance(reason, dict):
        return reason.get("type")
    return reason if isinstance(reason, str) else None


async def send_one(session: aiohttp.ClientSession, url: str, payload: dict, index: int,
                   timeout: float) -> RequestResult:
    """Send one streaming request; failures are recorded, never raised."""
    result = RequestResult(index)
    t_start = time.perf_counter()
    try:
        async with session.post(url + "/generate", json=payload,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                body = (await resp.text())[:500]
                raise RuntimeError(f"HTTP {resp.status}: {body}")
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                apply_chunk(result, json.loads(data), t_start, time.perf_counter())
        result.latency = time.perf_counter() - t_start
        result.ok = True
    except Exception as e:  # a failed request is a measurement too
        result.error = f"{type(e).__name__}: {e}"[:1000]
    return result


async def run_load(url: str, payloads: List[dict], concurrency: int, timeout: float = 1800.0):
    """Send every payload with at most ``concurrency`` in flight.

    Returns ``(results in payload order, wall seconds from the first send to the last reply)``.
    """
    queue: asyncio.Queue = asyncio.Queue()
    for i, p in enumerate(payloads):
        queue.put_nowait((i, p))
    results: List[Optional[RequestResult]] = [None] * len(payloads)
    connector = aiohttp.TCPConnector(limit=concurrency)
    # read_bufsize: streamed chunks carry the cumulative text, so lines can get long.
    async with aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20) as session:

        async def worker():
            while True:
                try:
                    i, p = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results[i] = await send_one(session, url, p, i, timeout)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(payloads)))))
        wall = time.perf_counter() - t0
    return results, wall
