"""Request classes carrying a minimum quality."""

from __future__ import annotations

import pytest

from oserve.errors import ConfigError
from oserve.types import ClassScheme


def test_min_quality_per_class():
    s = ClassScheme(min_quality=(("short-in/long-out", 0.95),))
    assert s.by_name("short-in/long-out").min_quality == 0.95
    assert s.by_name("short-in/short-out").min_quality == 0.0
    assert s.min_quality_by_class == {"short-in/long-out": 0.95}
    assert ClassScheme().min_quality_by_class == {}


@pytest.mark.parametrize(("entry", "match"), [(("nope", 0.5), "unknown class"),
                                              (("short-in/short-out", 1.2), "within 0-1"),
                                              (("short-in/short-out", -0.1), "within 0-1")])
def test_min_quality_rejects_bad_entries(entry, match):
    with pytest.raises(ConfigError, match=match) as info:
        ClassScheme(min_quality=(entry,))
    assert info.value.field == f"min_quality.{entry[0]}"
