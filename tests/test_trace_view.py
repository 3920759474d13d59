"""How a trace reads without servers: the Mermaid flowchart of its provenance, whose labels no
save_dir, model name or comment can break out of. The traces are built by hand."""

from __future__ import annotations

import re

from flexlock_prefect.provenance import Code, Data, Record, Upstream
from flexlock_prefect.registry import Move
from flexlock_prefect.trace_view import lineage_mermaid, mermaid_text
from flexlock_prefect.tracking.trace import LogicalRun, RunRecord, Trace, VersionRecord

AWKWARD = 'file:///runs/it\'s a "run" [v1] {x} <b>#1</b> | `eval` ; --> end'
"""A save_dir with spaces, both quotes and everything Mermaid reads as syntax."""
NODE = re.compile(r'^  n\d+\["((?:[^"\[\]{}<>|`;]|<br/>|#\d+;)*)"\]$')
"""A node line: only plain text, line breaks and entity codes inside the quotes."""
EDGE = re.compile(r"^  n\d+ (-->|-\.->)(\|[^|\"]*\|)? n\d+$")


def record(save_dir: str, *upstream: Upstream, commit: str = "a" * 40) -> Record:
    return Record(
        save_dir=save_dir,
        digest="d" * 64,
        fingerprint="f" * 64,
        created_at="2026-12-01T10:00:00.000Z",
        result="completed",
        flow_run_id=None,
        config={"lr": "0.1"},
        code=(Code("code", commit, True, f"refs/flexlock/snapshots/{'5' * 40}", "main", None, "/src", "git checkout"),),
        data=(Data("features", f"{save_dir}/../in.csv", "xxh3-128-tree:" + "e" * 32, 10, 1),),
        upstream=upstream,
    )


def traced(save_dir: str, *upstream: Upstream, approver: str = "alice") -> Trace:
    move = Move("churn", "3", "dev", "staging", "2026-12-01T10:00:00.000Z", approver, 'ok "ship" [it]', None)
    run = RunRecord("r1", "FINISHED", "deprecated", False, "d" * 64, None)
    active = RunRecord("r2", "FINISHED", "active", False, "d" * 64, None)
    return Trace(
        VersionRecord("churn", "3", ("staging",), "r1", {"flexlock.approved_by": approver}, (move,)),
        LogicalRun(save_dir, "0123456789abcdef", run, active),
        record(save_dir, *upstream),
        (),
    )


def labels(flowchart: str) -> list[str]:
    """The text of every node label, its entity codes decoded."""
    found = [NODE.match(line) for line in flowchart.splitlines()[2:-1]]
    return [re.sub(r"#(\d+);", lambda m: chr(int(m[1])), m[1]) for m in found if m]


def test_every_label_is_escaped_so_awkward_names_stay_inside_their_node() -> None:
    upstream = Upstream("features", AWKWARD + " up", "f" * 64, record(AWKWARD + " up", commit="b" * 40))
    flowchart = lineage_mermaid(traced(AWKWARD, upstream, approver='bo "the" <boss>'))

    lines = flowchart.splitlines()
    assert lines[:2] == ["```mermaid", "flowchart LR"] and lines[-1] == "```" and flowchart.count("```") == 2
    assert all(NODE.match(line) or EDGE.match(line) for line in lines[2:-1]), flowchart
    texts = "\n".join(labels(flowchart))
    for original in (AWKWARD, AWKWARD + " up", 'approved by bo "the" <boss>'):
        assert original in texts


def test_the_chain_runs_from_the_version_to_its_run_save_dir_code_data_and_upstream_runs() -> None:
    upstream = Upstream("features", "file:///runs/a", "f" * 64, record("file:///runs/a"))
    flowchart = lineage_mermaid(traced("file:///runs/b", upstream))

    assert labels(flowchart) == [
        "churn version 3<br/>aliases: staging<br/>approved by alice",
        "MLflow run r1<br/>FINISHED, deprecated",
        "save_dir b<br/>file:///runs/b<br/>run.lock dddddddddddd",
        "repo code<br/>commit aaaaaaaaaaaa<br/>dirty: snapshot 555555555555",
        "data features<br/>xxh3-128-tree:eeeeeeeeeeee",
        "save_dir a<br/>file:///runs/a<br/>run.lock dddddddddddd",
        "data features<br/>xxh3-128-tree:eeeeeeeeeeee",
        "active MLflow run r2<br/>FINISHED, active",
    ]
    edges = [line.strip() for line in flowchart.splitlines() if EDGE.match(line)]
    assert edges == [
        "n0 --> n1",
        "n1 --> n2",
        "n2 --> n3",
        "n2 --> n4",
        "n4 -->|made by| n5",
        "n5 --> n3",  # the upstream ran the same code: one node for it
        "n5 --> n6",
        "n7 -.->|active view| n2",
    ]


def test_a_save_dir_met_again_is_linked_not_drawn_twice() -> None:
    cycle = Upstream("features", "file:///runs/b", "f" * 64, None, ("a lineage cycle",))
    flowchart = lineage_mermaid(traced("file:///runs/b", cycle))
    assert sum("save_dir b" in label for label in labels(flowchart)) == 1
    assert "  n4 -->|made by| n2" in flowchart.splitlines()


def test_mermaid_text_keeps_plain_text_and_codes_the_rest() -> None:
    assert mermaid_text("runs/2026-12-01_a: lr=0.1, (v2)") == "runs/2026-12-01_a: lr=0.1, (v2)"
    assert mermaid_text('"[x]"') == "#34;#91;x#93;#34;"
    assert mermaid_text("é → #") == "#233; #8594; #35;"
