"""A class scheme's expected lengths lie inside their own buckets (``[lo, hi)``, the top one open above)."""

from __future__ import annotations

import pytest

from oserve.config import ClassesConfig
from oserve.errors import ConfigError
from oserve.types import ClassScheme


def test_expected_input_length_outside_its_bucket_names_field_bucket_and_range() -> None:
    # before: accepted, and capacities were computed for the first class at 200-token prompts
    # although it only holds prompts below 128 tokens
    with pytest.raises(ConfigError, match=r"expected_input_tokens\[0\] is 200 tokens, outside bucket 0 \[0, 128\)") \
            as info:
        ClassScheme(input_edges=(128,), expected_input_tokens=(200, 300))
    assert info.value.field == "expected_input_tokens"
    assert info.value.allowed == "bucket 0: [0, 128) tokens"


def test_expected_output_length_below_its_bucket_names_the_top_bucket_open_above() -> None:
    with pytest.raises(ConfigError, match=r"expected_output_tokens\[2\] is 40 tokens, outside bucket 2 \[48, inf\)") \
            as info:
        ClassScheme(output_edges=(24, 48), output_names=("s", "m", "l"), expected_output_tokens=(14, 30, 40))
    assert info.value.field == "expected_output_tokens" and info.value.allowed == "bucket 2: [48, inf) tokens"


@pytest.mark.parametrize("axis", ["input", "output"])
def test_bucket_lower_edge_is_accepted_and_upper_edge_rejected(axis: str) -> None:
    edges = {f"{axis}_edges": (128, 512)}
    names = {f"{axis}_names": ("a", "b", "c")}
    lo = ClassScheme(**edges, **names, **{f"expected_{axis}_tokens": (1, 128, 512)})  # each at its lower edge
    rc = lo.classes[-1] if axis == "input" else lo.classes[2]
    assert getattr(rc, f"expected_{axis}_tokens") == 512
    assert getattr(ClassScheme(**edges, **names, **{f"expected_{axis}_tokens": (127, 511, 10**6)}).classes[0],
                   f"expected_{axis}_tokens") == 127  # just below each upper edge; the top bucket has none
    with pytest.raises(ConfigError, match=rf"expected_{axis}_tokens\[1\] is 512 tokens, outside bucket 1 \[128, 512\)"):
        ClassScheme(**edges, **names, **{f"expected_{axis}_tokens": (1, 512, 600)})
    with pytest.raises(ConfigError, match=rf"expected_{axis}_tokens\[0\] is 128 tokens, outside bucket 0 \[0, 128\)"):
        ClassScheme(**edges, **names, **{f"expected_{axis}_tokens": (128, 200, 600)})


def test_classes_config_reports_the_section_path() -> None:
    with pytest.raises(ConfigError, match="outside bucket 1") as info:
        ClassesConfig(input_edges=[128], output_edges=[24], expected_input_tokens=[48, 208],
                      expected_output_tokens=[14, 20]).to_scheme()
    assert info.value.field == "classes.expected_output_tokens" and info.value.allowed == "bucket 1: [24, inf) tokens"


def test_default_midpoints_lie_in_their_buckets() -> None:
    scheme = ClassesConfig(input_edges=[2, 3, 100], output_edges=[24]).to_scheme()
    for c in scheme.classes:
        assert c.input_range[0] <= c.expected_input_tokens < c.input_range[1]
        assert c.output_range[0] <= c.expected_output_tokens < c.output_range[1]
