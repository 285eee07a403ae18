"""sglang_plugin.patching.overriding: an object is exactly as before after the block."""

import pytest

from sglang_mtp.sglang_plugin.patching import overriding


class Thing:
    def method(self):
        return "class"


def test_a_method_from_the_class_stays_the_class_method():
    t = Thing()
    with overriding(t, "method", lambda: "patched") as original:
        assert t.method() == "patched" and original() == "class"
    assert "method" not in vars(t) and t.method() == "class"


def test_an_own_attribute_is_put_back_even_after_an_error():
    t = Thing()
    t.value = 1
    with pytest.raises(RuntimeError):
        with overriding(t, "value", 2):
            assert t.value == 2
            raise RuntimeError("a failed forward")
    assert vars(t)["value"] == 1
