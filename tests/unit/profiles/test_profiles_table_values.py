"""Profile values are validated at load: out-of-range capacities and times are typed errors naming the field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from oserve.errors import ProfileError
from oserve.profiles.table import MAX_CAPACITY_RPS, MIN_CAPACITY_RPS, ClassProfile, ProfileTable
from oserve.testing.tables import synthetic_table


def _write(tmp_path, mutate):
    table = synthetic_table({"v": {"a": 1.0}}, {"v": 1}, class_names=["a"])
    raw = json.loads(table.model_dump_json())
    mutate(raw)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("bad", [1e-15, 1e-7, 1e25, MAX_CAPACITY_RPS * 1.01, -1.0])
def test_out_of_range_capacity_rejected_at_load(tmp_path, bad):
    path = _write(tmp_path, lambda raw: raw["variants"]["v"]["classes"]["a"].update(capacity_rps=bad))
    with pytest.raises(ProfileError) as err:
        ProfileTable.load(path)
    assert "variants.v.classes.a.capacity_rps" in str(err.value)


@pytest.mark.parametrize("field", ["ttft_s", "tpot_s"])
def test_huge_latency_rejected(tmp_path, field):
    path = _write(tmp_path, lambda raw: raw["variants"]["v"]["classes"]["a"].update({field: 1e30}))
    with pytest.raises(ProfileError, match=field):
        ProfileTable.load(path)


def test_start_time_bounded(tmp_path):
    path = _write(tmp_path, lambda raw: raw["variants"]["v"].update(start_time_s=1e20))
    with pytest.raises(ProfileError, match="start_time_s"):
        ProfileTable.load(path)


@pytest.mark.parametrize("ok", [0.0, MIN_CAPACITY_RPS, 1.0, MAX_CAPACITY_RPS])
def test_in_range_capacity_accepted(ok):
    assert ClassProfile(capacity_rps=ok, ttft_s=0.1, tpot_s=0.01, max_concurrency=1).capacity_rps == ok


def test_tiny_capacity_message_names_range():
    with pytest.raises(ValidationError, match=r"capacity_rps must be 0 or in \[1e-06, 1e\+06\] req/s"):
        ClassProfile(capacity_rps=1e-15, ttft_s=0.1, tpot_s=0.01, max_concurrency=1)
