"""Replacing one attribute of one SGLang object for the duration of a call."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def overriding(obj, name: str, value):
    """Set ``obj.<name> = value`` inside the block; afterwards ``obj`` is exactly as before: an
    attribute of its own is put back, one it only had from its class is removed again (so a
    method stays the class's method)."""
    had_own = name in vars(obj)
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield original
    finally:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)
