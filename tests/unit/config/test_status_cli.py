"""``oserve status``: parked replicas are shown in the plans; a bad ``--timeout-s`` is a usage error."""

from __future__ import annotations

import pytest

from oserve.cli import build_parser
from oserve.cli.status import format_status


def test_status_lists_parked_replicas_of_the_current_and_target_plans():
    placement = {"variant": "fp32", "node": "local", "device_ids": [0]}
    plan = {"replicas": [{**placement, "variant": "int8"}], "parked": [placement, {**placement, "device_ids": [1]}],
            "routing": {"a/b": {"int8": 1.0}}}
    text = format_status({"time_s": 1.0, "running": True, "current_plan": plan, "target_plan": plan})
    assert text.count("1 x int8 on local\n") == 2
    assert text.count("2 x fp32 on local (parked)") == 2


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_status_refuses_a_bad_timeout_as_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["status", "http://127.0.0.1:1", "--timeout-s", value])
    assert e.value.code == 2
    assert "--timeout-s" in capsys.readouterr().err
