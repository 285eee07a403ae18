"""sglang-mtp: multi-token-prediction decoding (Kirchenbauer et al. 2026) for SGLang.

Submodules: ``ops`` (fused kernels; ``ops.reference``, ``ops.step_reference``: their plain-torch definitions),
``strategy`` (decoding strategies); see the README for the decoder, plugin and trainer.
"""

__version__ = "0.1.0"


def generate(*args, **kwargs):
    """The reference MTP decoder; see :func:`sglang_mtp.decode.generate`."""
    from .decode import generate as _generate

    return _generate(*args, **kwargs)
