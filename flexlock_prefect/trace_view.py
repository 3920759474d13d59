"""How a trace reads: titled sections for `flexlock-prefect trace`, and a Mermaid flowchart of its
provenance for markdown artifacts (Prefect's UI draws the Mermaid blocks of a markdown artifact)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from flexlock_prefect.lock import save_dir_name
from flexlock_prefect.provenance import Record, Upstream
from flexlock_prefect.report import Table, human_size
from flexlock_prefect.tracking.registry import Move
from flexlock_prefect.tracking.tags import APPROVED_BY
from flexlock_prefect.tracking.trace import RunRecord, Trace

SHORT = 12
"""Hex digits of a commit or digest in a flowchart node: enough to tell them apart; tables show all."""
KEY_VALUE = ("", "")
"""The columns of a section that reads as `key  value` lines: no header to print."""
_MERMAID_SAFE = frozenset(" .,:/_-+=@()")


def trace_tables(trace: Trace) -> list[Table]:
    """The sections of a trace, in the order a person asks: version & history, logical run,
    code, data, environment lockfiles, lineage, then problems and checks when there are any.
    Most read as `key  value` lines (`KEY_VALUE`), so that a trace fits one screen and long
    values (digests, the git command) get the width of the line."""
    version = trace.version
    moves = [_move_text(m) for m in version.history]
    head = [("aliases", ", ".join(version.aliases) or "(none)"), *version.tags.items()]
    tables = [
        Table(
            f"Version & history: {version.model} version {version.version}", KEY_VALUE, head + _rows("history", moves)
        ),
        _logical_run_table(trace),
        *(_record_tables(trace.record) if trace.record else []),
        Table("Problems", KEY_VALUE, [("⚠", problem) for problem in trace.problems]),
    ]
    if trace.checks is not None:
        rows = [(c.what, "OK" if c.ok else "MISMATCH", c.detail) for c in trace.checks]
        tables.append(Table("Verification", ("check", "outcome", "detail"), rows))
    return tables


def _rows(key: str, values: list[str]) -> list[tuple[str, str]]:
    """`key` on the first of `values`' lines only."""
    return [(key if index == 0 else "", value) for index, value in enumerate(values)]


def _move_text(move: Move) -> str:
    """One move on one line: who decided it (`by`) and, when recorded, which MLflow account wrote it."""
    text = f"{move.at}  {move.from_state or 'new'} → {move.to_state}  by {move.made_by}"
    return (
        text
        + (f": {move.comment}" if move.comment else "")
        + (f"  (flow run {move.flow_run_id})" if move.flow_run_id else "")
    )


def _logical_run_table(trace: Trace) -> Table:
    logical, record = trace.logical_run, trace.record
    version_run, active = logical.version_run, logical.active_run
    rows = [
        ("save_dir", logical.save_dir or "(unknown)"),
        ("logical run key", logical.key or "(unknown)"),
        ("version's run", f"{version_run.run_id} · {_state(version_run)}" if version_run else "(none)"),
        ("active run", _active_text(active, version_run)),
    ]
    if record:
        result = f", {record.result}" if record.result else ""
        flow_run = f" in flow run {record.flow_run_id}" if record.flow_run_id else ""
        rows += [
            ("run.lock", f"digest {record.digest}"),
            ("", f"created {record.created_at}{flow_run}{result}"),
            ("config", ", ".join(f"{k}={v}" for k, v in record.config.items())),
        ]
    return Table("Logical run", KEY_VALUE, [(k, v) for k, v in rows if v])


def _active_text(active: RunRecord | None, version_run: RunRecord | None) -> str:
    if active is None:
        return "(none)"
    if version_run and active.run_id == version_run.run_id:
        return "the version's run"
    return f"{active.run_id} · {_state(active)}"


def _state(run: RunRecord) -> str:
    """MLflow's status and flexlock's: `FINISHED, active`."""
    return f"{run.status}, {run.flexlock_status or 'no flexlock status'}" + (", deleted" if run.deleted else "")


def _record_tables(record: Record) -> list[Table]:
    code: list[tuple[str, str]] = []
    for c in record.code:
        state = "dirty: a snapshot keeps its working state" if c.dirty else "clean"
        code += _rows(
            c.name,
            [f"commit {c.commit or '(none)'}, {state}", f"{c.restore or '(nothing to check out)'}  (in {c.path})"],
        )
    data: list[tuple[str, str]] = []
    for d in record.data:
        data += _rows(
            d.name, [f"{d.digest}  ({human_size(d.size)} in {d.files} file{'' if d.files == 1 else 's'})", d.uri]
        )
    return [
        Table("Code", KEY_VALUE, code),
        Table("Data", KEY_VALUE, data),
        Table("Environment lockfiles", KEY_VALUE, list(record.lockfiles.items())),
        Table("Lineage", KEY_VALUE, list(_lineage_rows(record.upstream))),
    ]


def _lineage_rows(upstream: tuple[Upstream, ...], depth: int = 0) -> Iterator[tuple[str, str]]:
    """One line per upstream run (the data input it made, then its save_dir), indented under
    the run that read that data."""
    for up in upstream:
        note = "; ".join(up.problems) or ("traced above" if up.repeated else "")
        yield (
            "  " * depth + ("└ " if depth else "") + up.input,
            f"made by {up.save_dir}" + (f"  ({note})" if note else ""),
        )
        if up.record:
            yield from _lineage_rows(up.record.upstream, depth + 1)


def lineage_mermaid(trace: Trace) -> str:
    """The provenance of a trace as a fenced Mermaid flowchart: model version → MLflow run →
    save_dir and run.lock → its commits and data → the upstream save_dirs that made the data,
    recursively. Every label is escaped (`mermaid_text`); a save_dir reached twice is one node.

    Example:
        >>> print(lineage_mermaid(trace("churn@prod")))  # doctest: +SKIP
        ```mermaid
        flowchart LR
          n0["churn version 3<br/>aliases: prod"]
          ...
    """
    graph = _Graph()
    version, logical = trace.version, trace.logical_run
    approved = [f"approved by {version.tags[APPROVED_BY]}"] if APPROVED_BY in version.tags else []
    aliases = [f"aliases: {', '.join(version.aliases)}"] if version.aliases else []
    top = graph.node(("version",), f"{version.model} version {version.version}", *aliases, *approved)
    run = logical.version_run
    if run is not None:
        top = graph.edge(top, graph.run(run, "MLflow run"))
    saved = None
    if trace.record is not None:
        saved = graph.record(top, trace.record)
    elif logical.save_dir:
        saved = graph.edge(top, graph.save_dir(logical.save_dir, "run.lock unreadable"))
    active = logical.active_run
    if saved is not None and active is not None and (run is None or active.run_id != run.run_id):
        graph.edge(graph.run(active, "active MLflow run"), saved, "active view", dotted=True)
    return "```mermaid\nflowchart LR\n" + "\n".join(graph.lines) + "\n```"


def _short(digest: str) -> str:
    """`xxh3-128-tree:5c0f…` → its algorithm and first `SHORT` hex digits."""
    algorithm, _, hexdigits = digest.rpartition(":")
    return f"{algorithm}:{hexdigits[:SHORT]}" if algorithm else hexdigits[:SHORT]


@dataclass
class _Graph:
    """Nodes named n0, n1, … (never user text), one per key; edges in the order added."""

    ids: dict[tuple[str, ...], str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def node(self, key: tuple[str, ...], *label: str) -> str:
        if key not in self.ids:
            self.ids[key] = f"n{len(self.ids)}"
            self.lines.append(f'  {self.ids[key]}["{"<br/>".join(mermaid_text(line) for line in label)}"]')
        return self.ids[key]

    def edge(self, source: str, target: str, label: str = "", dotted: bool = False) -> str:
        arrow = "-.->" if dotted else "-->"
        self.lines.append(f"  {source} {arrow}{f'|{mermaid_text(label)}|' if label else ''} {target}")
        return target

    def run(self, run: RunRecord, what: str) -> str:
        return self.node(("run", run.run_id), f"{what} {run.run_id}", _state(run))

    def save_dir(self, url: str, *notes: str) -> str:
        return self.node(("save_dir", url), f"save_dir {save_dir_name(url)}", url, *notes)

    def record(self, parent: str, record: Record, label: str = "") -> str:
        """The save_dir of `record` under `parent`, with its code, data and upstream runs
        (those once only: a save_dir reached again is only linked)."""
        known = ("save_dir", record.save_dir) in self.ids
        saved = self.edge(parent, self.save_dir(record.save_dir, f"run.lock {_short(record.digest)}"), label)
        if known:
            return saved
        for code in record.code:  # one node per code state: runs of the same code share it
            ref = code.snapshot_ref or code.commit or ""
            snapshot = [f"dirty: snapshot {_short(ref.rsplit('/', 1)[-1])}"] if code.snapshot_ref else []
            lines = (f"repo {code.name}", f"commit {_short(code.commit or 'none')}", *snapshot)
            self.edge(saved, self.node(("code", code.path, ref), *lines))
        inputs = {
            data.name: self.edge(
                saved, self.node(("data", record.save_dir, data.name), f"data {data.name}", _short(data.digest))
            )
            for data in record.data
        }
        for up in record.upstream:
            source = inputs.get(up.input, saved)
            if up.record is not None:
                self.record(source, up.record, "made by")
            else:
                problems = [f"problem: {'; '.join(up.problems)}"] if up.problems else []
                self.edge(source, self.save_dir(up.save_dir, *problems), "made by")
        return saved


def mermaid_text(text: str) -> str:
    """`text` safe inside a quoted Mermaid label: every character but ASCII letters, digits and
    a few plain punctuation marks becomes an entity code (`"` → `#34;`, `[` → `#91;`), so no
    save_dir, model name or comment can end a label, a node or the code fence.

    Example:
        >>> mermaid_text('runs/it\\'s "a" [b]')
        'runs/it#39;s #34;a#34; #91;b#93;'
    """
    return "".join(c if c.isascii() and (c.isalnum() or c in _MERMAID_SAFE) else f"#{ord(c)};" for c in text)
