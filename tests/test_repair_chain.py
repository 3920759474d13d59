"""`repair_chain`: the runs of one logical id become one chain (DESIGN.md §5), idempotently.

The chain of a sound logical run: finished runs in end-time order, each deprecated run naming
the run that superseded it, each run after the first naming the run it supersedes, the newest
active; failed and killed runs outside it, with no chain tag. A run whose relog never tagged it
(RUNNING, or FINISHED without `flexlock.status`) is in flight until it is stale, then a dead
relog's run: ended FAILED, never active.
"""

from __future__ import annotations

import pytest

from flexlock_prefect.lock import logical_run_key
from flexlock_prefect.tracking.supersede import Repair, repair_chain
from flexlock_prefect.tracking.tags import (
    ACTIVE,
    CHAIN_TAGS,
    DEPRECATED,
    MLFLOW_NOTE,
    STATUS,
    SUPERSEDED_BY,
    SUPERSEDES,
)
from flexlock_prefect.tracking.tags import LOGICAL_RUN_KEY as KEY
from tests.helpers.fakes import FakeMlflowClient, now_ms

LOGICAL_KEY = logical_run_key("file:///runs/a")
MINUTE_MS = 60_000


def _add(client: FakeMlflowClient, run_id: str, minutes_ago: float, status: str = "FINISHED", **chain: str) -> None:
    """A run of the logical id that ended `minutes_ago` (started then, when still running)."""
    at = now_ms() - int(minutes_ago * MINUTE_MS)
    tags = {KEY: LOGICAL_KEY, "flexlock.fingerprint": "f" * 64} | chain
    if status == "RUNNING":
        client.add_run(run_id, status=status, start_time=at, end_time=None, tags=tags)
    else:
        client.add_run(run_id, status=status, start_time=at - MINUTE_MS, end_time=at, tags=tags)


def _chain(client: FakeMlflowClient, run_id: str) -> dict[str, str]:
    return {k: v for k, v in client.tags(run_id).items() if k in CHAIN_TAGS}


def _sound_chain(client: FakeMlflowClient) -> None:
    """a → b → c, c active: what three clean relogs leave."""
    _add(client, "a", 30, **{STATUS: DEPRECATED, SUPERSEDED_BY: "b"})
    _add(client, "b", 20, **{STATUS: DEPRECATED, SUPERSEDES: "a", SUPERSEDED_BY: "c"})
    _add(client, "c", 10, **{STATUS: ACTIVE, SUPERSEDES: "b"})


def _assert_chain(client: FakeMlflowClient, order: list[str]) -> None:
    for index, run_id in enumerate(order):
        newest = index == len(order) - 1
        expected = {STATUS: ACTIVE if newest else DEPRECATED}
        if index:
            expected[SUPERSEDES] = order[index - 1]
        if not newest:
            expected[SUPERSEDED_BY] = order[index + 1]
        assert _chain(client, run_id) == expected, run_id


def test_a_sound_chain_is_left_untouched_and_nothing_is_written() -> None:
    client = FakeMlflowClient()
    _sound_chain(client)
    assert repair_chain(client, client.runs(), stale_after_s=None) == []
    assert repair_chain(client, client.runs(), stale_after_s=3600) == []
    assert client.writes == []


def test_no_runs_need_no_repair() -> None:
    client = FakeMlflowClient()
    assert repair_chain(client, [], stale_after_s=3600) == []
    assert client.writes == []


def test_a_finished_run_without_status_is_left_alone_while_its_relog_may_be_in_flight() -> None:
    client = FakeMlflowClient()
    _add(client, "good", 20, **{STATUS: ACTIVE})
    _add(client, "untagged", 5)  # ended, its relog about to tag it active
    assert repair_chain(client, client.runs(), stale_after_s=None) == []
    assert repair_chain(client, client.runs(), stale_after_s=3600) == []
    assert client.writes == []


def test_two_active_runs_leave_the_newest_active_and_link_both_ways() -> None:
    client = FakeMlflowClient()
    _add(client, "old", 20, **{STATUS: ACTIVE})
    _add(client, "new", 10, **{STATUS: ACTIVE})
    repair_chain(client, client.runs(), stale_after_s=None)
    assert _chain(client, "old") == {STATUS: DEPRECATED, SUPERSEDED_BY: "new"}
    assert _chain(client, "new") == {STATUS: ACTIVE, SUPERSEDES: "old"}


def test_a_relog_that_died_between_promote_and_deprecate_is_completed() -> None:
    # The new run is active and names its predecessor; the predecessor was never demoted.
    client = FakeMlflowClient()
    _add(client, "old", 20, **{STATUS: ACTIVE})
    _add(client, "new", 10, **{STATUS: ACTIVE, SUPERSEDES: "old"})
    repairs = repair_chain(client, client.runs(), stale_after_s=None)
    _assert_chain(client, ["old", "new"])
    assert [r.run_id for r in repairs] == ["old"]


def test_the_newest_by_end_time_wins_whatever_order_the_runs_are_given_in() -> None:
    client = FakeMlflowClient()
    for run_id, minutes_ago in [("b", 20), ("c", 10), ("a", 30)]:
        _add(client, run_id, minutes_ago, **{STATUS: ACTIVE})
    repair_chain(client, list(reversed(client.runs())), stale_after_s=None)
    _assert_chain(client, ["a", "b", "c"])


def test_runs_that_ended_at_the_same_moment_are_ordered_by_start_time() -> None:
    client = FakeMlflowClient()
    end = now_ms() - MINUTE_MS
    client.add_run("late-start", start_time=end - 1000, end_time=end, tags={KEY: LOGICAL_KEY, STATUS: ACTIVE})
    client.add_run("early-start", start_time=end - 9000, end_time=end, tags={KEY: LOGICAL_KEY, STATUS: ACTIVE})
    repair_chain(client, client.runs(), stale_after_s=None)
    _assert_chain(client, ["early-start", "late-start"])


def test_a_finished_run_never_promoted_is_ended_failed_once_stale_and_never_becomes_active() -> None:
    # DESIGN.md §5, invariant 2: "c" ended last, but its relog was killed before tagging it active.
    client = FakeMlflowClient()
    _add(client, "a", 30, **{STATUS: DEPRECATED, SUPERSEDED_BY: "b"})
    _add(client, "b", 20, **{STATUS: ACTIVE, SUPERSEDES: "a"})
    _add(client, "c", 10)
    ended_at = client.runs()[-1].info.end_time
    repairs = repair_chain(client, client.runs(), stale_after_s=300)
    assert repairs == [Repair(LOGICAL_KEY, "c", "ended FAILED: its relog died before tagging it active")]
    assert client.status("c") == "FAILED" and _chain(client, "c") == {}
    assert [r.info.end_time for r in client.runs() if r.info.run_id == "c"] == [ended_at]  # its end time kept
    _assert_chain(client, ["a", "b"])


def test_a_finished_run_never_promoted_between_two_others_stays_outside_the_chain() -> None:
    client = FakeMlflowClient()
    _add(client, "a", 30, **{STATUS: DEPRECATED, SUPERSEDED_BY: "c"})
    _add(client, "b", 20)
    _add(client, "c", 10, **{STATUS: ACTIVE, SUPERSEDES: "a"})
    repair_chain(client, client.runs(), stale_after_s=0)  # under the lock: nothing is in flight
    assert client.status("b") == "FAILED"
    _assert_chain(client, ["a", "c"])


def test_links_that_skip_or_point_at_the_wrong_run_are_rewritten() -> None:
    client = FakeMlflowClient()
    _add(client, "a", 30, **{STATUS: DEPRECATED, SUPERSEDED_BY: "c"})
    _add(client, "b", 20, **{STATUS: DEPRECATED, SUPERSEDES: "c", SUPERSEDED_BY: "a"})
    _add(client, "c", 10, **{STATUS: ACTIVE, SUPERSEDES: "a"})
    repair_chain(client, client.runs(), stale_after_s=None)
    _assert_chain(client, ["a", "b", "c"])


def test_the_oldest_run_loses_a_supersedes_link_it_should_not_have() -> None:
    client = FakeMlflowClient()
    _add(client, "a", 20, **{STATUS: DEPRECATED, SUPERSEDES: "gone", SUPERSEDED_BY: "b"})
    _add(client, "b", 10, **{STATUS: ACTIVE, SUPERSEDES: "a"})
    repairs = repair_chain(client, client.runs(), stale_after_s=None)
    _assert_chain(client, ["a", "b"])
    assert repairs == [Repair(LOGICAL_KEY, "a", f"removed {SUPERSEDES}")]


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_failed_and_killed_runs_lose_every_chain_tag(status: str) -> None:
    client = FakeMlflowClient()
    _add(client, "a", 30, **{STATUS: DEPRECATED, SUPERSEDED_BY: "broken"})
    _add(client, "broken", 20, status=status, **{STATUS: ACTIVE, SUPERSEDES: "a", SUPERSEDED_BY: "c"})
    _add(client, "c", 10, **{STATUS: ACTIVE, SUPERSEDES: "broken"})
    repair_chain(client, client.runs(), stale_after_s=None)
    assert _chain(client, "broken") == {}
    assert client.status("broken") == status
    _assert_chain(client, ["a", "c"])


def test_a_failed_run_that_ended_last_never_becomes_active() -> None:
    # DESIGN.md §5, invariant 2: a failed relog leaves the previous active run active.
    client = FakeMlflowClient()
    _add(client, "good", 20, **{STATUS: ACTIVE})
    _add(client, "failed", 10, status="FAILED")
    assert repair_chain(client, client.runs(), stale_after_s=3600) == []
    assert _chain(client, "good") == {STATUS: ACTIVE}
    assert _chain(client, "failed") == {}


def test_running_runs_are_left_alone_when_stale_after_is_none() -> None:
    client = FakeMlflowClient()
    _add(client, "good", 120, **{STATUS: ACTIVE})
    _add(client, "in-flight", 60 * 24 * 7, status="RUNNING")  # a week old, still not touched
    assert repair_chain(client, client.runs(), stale_after_s=None) == []
    assert client.writes == []
    assert client.status("in-flight") == "RUNNING"


def test_a_run_running_for_less_than_stale_after_is_left_alone() -> None:
    client = FakeMlflowClient()
    _add(client, "good", 120, **{STATUS: ACTIVE})
    _add(client, "in-flight", 5, status="RUNNING")
    assert repair_chain(client, client.runs(), stale_after_s=3600) == []
    assert client.status("in-flight") == "RUNNING" and client.writes == []


def test_a_run_running_longer_than_stale_after_is_ended_failed_and_reported() -> None:
    client = FakeMlflowClient()
    _add(client, "good", 120, **{STATUS: ACTIVE})
    _add(client, "dead", 90, status="RUNNING")
    repairs = repair_chain(client, client.runs(), stale_after_s=600)
    assert client.status("dead") == "FAILED"
    assert client.writes == [("set_terminated", "dead", "FAILED")]
    assert repairs == [Repair(LOGICAL_KEY, "dead", "ended FAILED: its relog died")]
    assert _chain(client, "good") == {STATUS: ACTIVE}


def test_a_dead_relog_that_was_already_tagged_is_ended_failed_and_untagged() -> None:
    client = FakeMlflowClient()
    _add(client, "good", 120, **{STATUS: ACTIVE, SUPERSEDED_BY: "dead"})
    _add(client, "dead", 90, status="RUNNING", **{SUPERSEDES: "good"})
    repairs = repair_chain(client, client.runs(), stale_after_s=600)
    assert [(r.run_id, r.change) for r in repairs] == [
        ("dead", "ended FAILED: its relog died"),
        ("dead", f"removed {SUPERSEDES}"),
        ("good", f"removed {SUPERSEDED_BY}"),
    ]
    assert _chain(client, "dead") == {} and _chain(client, "good") == {STATUS: ACTIVE}


def _messy(client: FakeMlflowClient) -> None:
    """Everything at once: two active, one never promoted, one failed with tags, one dead relog."""
    _add(client, "a", 50, **{STATUS: ACTIVE})
    _add(client, "b", 40)
    _add(client, "failed", 35, status="FAILED", **{STATUS: ACTIVE})
    _add(client, "c", 30, **{STATUS: ACTIVE, SUPERSEDES: "a"})
    _add(client, "dead", 25, status="RUNNING")


def test_running_a_second_time_after_a_repair_makes_no_changes() -> None:
    client = FakeMlflowClient()
    _messy(client)
    first = repair_chain(client, client.runs(), stale_after_s=600)
    writes = list(client.writes)
    assert first and writes
    assert repair_chain(client, client.runs(), stale_after_s=600) == []
    assert client.writes == writes
    _assert_chain(client, ["a", "c"])
    assert _chain(client, "failed") == {} and client.status("dead") == "FAILED" and client.status("b") == "FAILED"


def test_after_any_repair_exactly_one_run_is_active() -> None:
    client = FakeMlflowClient()
    _messy(client)
    repair_chain(client, client.runs(), stale_after_s=600)
    assert [r.info.run_id for r in client.runs() if r.data.tags.get(STATUS) == ACTIVE] == ["c"]


def test_repairs_name_the_logical_run_key_the_run_and_the_change() -> None:
    client = FakeMlflowClient()
    _add(client, "old", 20, **{STATUS: ACTIVE})
    _add(client, "failed", 15, status="FAILED", **{STATUS: ACTIVE})
    _add(client, "new", 10, **{STATUS: ACTIVE})
    repairs = repair_chain(client, client.runs(), stale_after_s=None)
    assert repairs == [
        Repair(LOGICAL_KEY, "failed", f"removed {STATUS}"),
        Repair(LOGICAL_KEY, "old", f"{STATUS}={DEPRECATED}, {SUPERSEDED_BY}=new"),
        Repair(LOGICAL_KEY, "new", f"{SUPERSEDES}=old"),
    ]


def test_tags_to_set_on_one_run_go_in_one_batch() -> None:
    client = FakeMlflowClient()
    for run_id, minutes_ago in [("a", 30), ("b", 20), ("c", 10)]:
        _add(client, run_id, minutes_ago, **{STATUS: ACTIVE})
    repair_chain(client, client.runs(), stale_after_s=None)
    assert [(name, run_id) for name, run_id, _ in client.writes] == [
        ("log_batch", "a"),
        ("log_batch", "b"),
        ("log_batch", "c"),
    ]
    assert client.writes[1][2]["tags"] == {
        STATUS: DEPRECATED,
        SUPERSEDES: "a",
        SUPERSEDED_BY: "c",
        MLFLOW_NOTE: "**deprecated**: superseded by run `c`",
    }


def test_a_repaired_runs_description_says_its_new_status_first_and_keeps_the_rest() -> None:
    client = FakeMlflowClient()
    record = "**flexlock run** `file:///runs/a`\n\n- fingerprint `f`"
    _add(
        client, "old", 20, **{STATUS: ACTIVE, MLFLOW_NOTE: f"**active**: the current run of this save_dir\n\n{record}"}
    )
    _add(client, "new", 10, **{STATUS: ACTIVE, MLFLOW_NOTE: record})
    _add(client, "dead", 5, status="FAILED", **{STATUS: ACTIVE, MLFLOW_NOTE: f"**active**: …\n\n{record}"})
    repair_chain(client, client.runs(), stale_after_s=None)
    assert client.tags("old")[MLFLOW_NOTE] == f"**deprecated**: superseded by run `new`\n\n{record}"
    assert client.tags("new")[MLFLOW_NOTE] == f"**active**: the current run of this save_dir\n\n{record}"
    assert client.tags("dead")[MLFLOW_NOTE] == record


def test_user_and_record_tags_are_never_touched_but_the_descriptions_status_line() -> None:
    client = FakeMlflowClient()
    _add(client, "old", 20, **{STATUS: ACTIVE, "project": "iris"})
    _add(client, "new", 10, **{STATUS: ACTIVE, "project": "iris"})
    repair_chain(client, client.runs(), stale_after_s=None)
    for run_id in ("old", "new"):
        others = {k: v for k, v in client.tags(run_id).items() if k not in (*CHAIN_TAGS, MLFLOW_NOTE)}
        assert others == {KEY: LOGICAL_KEY, "flexlock.fingerprint": "f" * 64, "project": "iris"}
