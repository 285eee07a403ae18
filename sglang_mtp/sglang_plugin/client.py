"""MTP settings for ``sgl.function`` programs (the frontend's ``sgl.gen`` has no passthrough).

    import sglang as sgl
    from sglang_mtp.sglang_plugin.client import MTPRuntimeEndpoint, mtp_gen

    sgl.set_default_backend(MTPRuntimeEndpoint("http://localhost:30000", mtp={"threshold": 0.9}))

    @sgl.function
    def qa(s, question):
        s += "Q: " + question + "\\nA:"
        s += mtp_gen("answer", max_tokens=64, mtp={"strategy": "verify"})  # this call only
        s += "\\nWhy?" + sgl.gen("why", max_tokens=64)  # the endpoint default

``mtp`` takes what ``custom_params["mtp"]`` takes: a dict with ``strategy``, ``threshold``,
``k_max``, or ``False`` for plain decoding. The server must run ``--decode-mode mtp``.
"""

from __future__ import annotations

import copy
import threading

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.ir import SglConstantText, SglExpr, SglExprList

_pending = threading.local()


def _check(mtp):
    if mtp is not None and not isinstance(mtp, (dict, bool)):
        raise ValueError(f"mtp must be a dict of MTP settings, True or False, got {mtp!r}")
    return mtp


class _NextGenSettings(SglConstantText):
    """Empty text whose evaluation arms the settings of the ``gen`` that follows it.

    The interpreter evaluates a program's expressions in order, in one thread per program
    state, and reads ``value`` of text expressions; reading it stores the settings for the
    endpoint's very next request (a thread-local, so concurrent programs do not mix).
    """

    def __init__(self, mtp):
        SglExpr.__init__(self)  # not SglConstantText's: ``value`` is computed
        self._mtp = mtp

    @property
    def value(self) -> str:
        _pending.mtp = self._mtp
        return ""


def mtp_gen(name=None, *, mtp=None, **gen_kwargs):
    """``sgl.gen(name, **gen_kwargs)`` decoded with the given MTP settings."""
    import sglang as sgl

    return SglExprList([_NextGenSettings(_check(mtp)), sgl.gen(name, **gen_kwargs)])


class MTPRuntimeEndpoint(RuntimeEndpoint):
    """A ``RuntimeEndpoint`` that sends ``custom_params={"mtp": ...}`` with every request.

    ``mtp``: the default settings of this endpoint (None = the server's defaults);
    :func:`mtp_gen` overrides them for one call.
    """

    def __init__(self, base_url: str, *args, mtp=None, **kwargs):
        super().__init__(base_url, *args, **kwargs)
        self.mtp = _check(mtp)

    def _with_mtp(self, sampling_params):
        mtp = getattr(_pending, "mtp", None)
        _pending.mtp = None
        mtp = self.mtp if mtp is None else mtp
        if mtp is None:
            return sampling_params
        sp = copy.copy(sampling_params)
        base = sp.to_srt_kwargs
        sp.to_srt_kwargs = lambda: {**base(), "custom_params": {"mtp": mtp}}
        return sp

    def generate(self, s, sampling_params, *args, **kwargs):
        return super().generate(s, self._with_mtp(sampling_params), *args, **kwargs)

    def generate_stream(self, s, sampling_params, *args, **kwargs):
        return super().generate_stream(s, self._with_mtp(sampling_params), *args, **kwargs)
