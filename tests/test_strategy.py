import pytest

from sglang_mtp.strategy import Strategy


def test_constructors_and_scan_threshold():
    assert Strategy.ntp() == Strategy("ntp", 1, 0.0)
    assert Strategy.static(3).scan_threshold == 0.0
    assert Strategy.conf_adapt(0.8, 16).scan_threshold == 0.8 and Strategy.conf_adapt(0.8, 16).k == 16
    assert Strategy.verify(4).is_verify and Strategy.verify(4).scan_threshold == 0.0


@pytest.mark.parametrize("spec,expected", [
    ("ntp", Strategy.ntp()),
    ("static:4", Strategy.static(4)),
    ("conf_adapt", Strategy.conf_adapt(0.9, 8)),
    ("conf_adapt:0.6:16", Strategy.conf_adapt(0.6, 16)),
    ("verify:2", Strategy.verify(2)),
    ({"strategy": "conf_adapt", "threshold": 0.95, "k_max": 4}, Strategy.conf_adapt(0.95, 4)),
    ({"threshold": 0.5}, Strategy.conf_adapt(0.5, 8)),
    ({"strategy": "static", "k": 2}, Strategy.static(2)),
])
def test_parse(spec, expected):
    assert Strategy.parse(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("conf_adapt:1.5", "threshold must be a number in \\[0, 1\\]"),
    ("conf_adapt:-0.1", "threshold"),
    ("conf_adapt:nan", "threshold"),
    ("static:0", "k must be in \\[1, 64\\]"),
    ("static", "bad strategy"),
    ("greedy", "bad strategy"),
    ("static:two", "bad strategy"),
    ({"strategy": "beam"}, "must be one of"),
    ({"threshold": 0.9, "temperature": 1.0}, "unknown strategy field"),
    ({"strategy": "verify", "k_max": 2.5}, "k must be an integer"),
    (3, "must be a Strategy, str or dict"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        Strategy.parse(spec)
