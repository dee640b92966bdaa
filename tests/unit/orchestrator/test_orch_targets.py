"""TargetTracker: switches are decisions that changed the replica set, followed to their target."""

from __future__ import annotations

from orch_fakes import plan_of

from oserve.control.targets import TargetTracker, summarise_targets

ONE = plan_of(("fast", "node0", (0,)))
TWO = plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,)))
BIG = plan_of(("big", "node0", (2, 3)))


def test_reached_superseded_abandoned_and_pending_are_counted_apart():
    closed = []
    tr = TargetTracker(on_close=[closed.append])
    tr.decided(10.0, TWO, actual=ONE)
    assert tr.decided(20.0, plan_of(("fast", "node0", (0,)), ("fast", "node0", (1,)),
                                    routing={"x": {"fast": 1.0}})) is None  # same replica set: not a new switch
    tr.observe(25.0, ONE)  # not there yet
    tr.observe(42.0, TWO)
    tr.decided(50.0, BIG, actual=TWO)
    tr.decided(60.0, ONE, actual=TWO)  # BIG never reached: superseded
    tr.transition_ended(70.0, ONE, TWO, "partial")  # the switcher gave up with TWO running: abandoned
    tr.decided(80.0, BIG, actual=TWO)
    assert [(r.status, r.ended_s) for r in tr.records] == [
        ("reached", 42.0), ("superseded", 60.0), ("abandoned", 70.0), ("pending", None)]
    assert tr.records[0].reconfig_s == 32.0 and tr.records[1].reconfig_s is None
    assert closed == tr.records[:3]
    s = summarise_targets(tr.records)
    assert (s["switches"], s["switches_reached"], s["switches_superseded"], s["switches_abandoned"],
            s["switches_pending"]) == (4, 1, 1, 1, 1)
    assert s["reconfig_s"] == s["reconfig_max_s"] == 32.0


def test_a_superseded_transition_does_not_abandon_the_target_and_a_match_reaches_it_at_once():
    tr = TargetTracker()
    tr.decided(0.0, TWO, actual=ONE)
    tr.transition_ended(5.0, TWO, ONE, "superseded")
    assert tr.open is not None and tr.open.status == "pending"
    tr.transition_ended(30.0, TWO, TWO, "applied")
    assert tr.records[0].status == "reached" and tr.records[0].reconfig_s == 30.0
    tr.decided(40.0, ONE, actual=ONE)  # already there (e.g. a replica died)
    assert tr.records[1].status == "reached" and tr.records[1].reconfig_s == 0.0
    assert summarise_targets([])["reconfig_s"] is None
