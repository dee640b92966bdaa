"""Switch figures the demo reports (oserve.cli.demo_report): decision to serving, requests touched."""

from __future__ import annotations

from types import SimpleNamespace

from oserve.cli.demo_report import interrupted_share, switch_times, switch_windows, touched_share


def _sw(started: float, finished: float, steps: list[tuple[str, float]], planner: str = "milp") -> dict:
    return {"started_s": started, "finished_s": finished, "replicas_changed": True, "target": {"planner": planner},
            "steps": [{"kind": k, "ok": True, "finished_s": t} for k, t in steps]}


def test_a_parked_switch_serves_at_its_wake_step() -> None:
    switches = [_sw(100.0, 103.0, [("wake", 100.4), ("route", 100.4), ("drain", 102.9), ("park", 103.0)]),
                _sw(0.0, 1.0, [("start", 1.0)], planner="config"),  # the initial deployment: not a switch
                {**_sw(200.0, 200.5, []), "replicas_changed": False}]
    total, serving = switch_times(switches)
    assert total == [3.0] and serving == [0.4]
    assert switch_windows(switches) == [(100.0, 103.0)]


def test_touched_share_counts_requests_in_flight_during_a_switch() -> None:
    rec = [SimpleNamespace(send_s=s, e2e_s=e) for s, e in [(0.0, 1.0), (9.0, 2.0), (12.5, None), (20.0, 1.0)]]
    # replay started at orchestrator time 50: the switch ran from replay time 10 to 13
    assert touched_share(rec, [(60.0, 63.0)], 50.0) == 0.5
    assert touched_share(rec, [], 50.0) == 0.0 and touched_share([], [(60.0, 63.0)], 50.0) is None


def test_interrupted_share_counts_cut_streams_per_request() -> None:
    assert interrupted_share(retried=3, resumed=5, aborted=0, requests=400) == 0.02
    assert interrupted_share(retried=0, resumed=0, aborted=0, requests=10) == 0.0
    assert interrupted_share(retried=1, resumed=0, aborted=0, requests=0) is None
