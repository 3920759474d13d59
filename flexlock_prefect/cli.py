"""The `flexlock-prefect` command (DESIGN.md §7).

Exit codes: 0 success; 1 a difference or mismatch was found (`diff`, `verify`, `audit`), or some items of
a batch failed (`relog`, `reconcile`: the others are done, the table says why each failed);
2 bad usage, bad input or an unreachable service, reported as one line on stderr.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from flexlock_prefect.exceptions import FlexlockError
from flexlock_prefect.report import (
    Table,
    lock_tables,
    reconcile_failures,
    reconcile_table,
    relog_failures,
    relog_table,
)

if TYPE_CHECKING:
    import optuna

    from flexlock_prefect.sweeplock import SweepLock

app = typer.Typer(
    name="flexlock-prefect",
    help="Reproducible ML runs on Prefect: inspect, compare and verify run records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SaveDir = Annotated[str, typer.Argument(help="A save_dir: local path or s3:// URL.", show_default=False)]


@app.command()
def show(
    save_dir: SaveDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Show the run record (run.lock) of SAVE_DIR."""
    from flexlock_prefect.lock import RunLock

    lock = RunLock.load(save_dir)
    if as_json:
        out.print_json(json.dumps(lock.to_dict() | {"digest": lock.digest}))
        return
    for table in lock_tables(lock):
        if table.rows:
            out.print(_rich_table(table))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="First save_dir.", show_default=False)],
    b: Annotated[str, typer.Argument(help="Second save_dir.", show_default=False)],
) -> None:
    """Compare the inputs of two runs; exit 1 when they differ."""
    from flexlock_prefect.compare import diff_locks
    from flexlock_prefect.lock import RunLock

    changes = diff_locks(RunLock.load(a), RunLock.load(b))
    if not changes:
        out.print("no differences in config, code, data or environment")
        return
    table = RichTable("section", "name", "before", "after", title=f"{len(changes)} differences")
    for change in changes:
        after = change.after or "(absent)"
        if change.details:
            after += "\n" + "\n".join(f"  {line}" for line in change.details)
        table.add_row(change.section, change.name, change.before or "(absent)", after)
    out.print(table)
    raise typer.Exit(1)


@app.command()
def verify(
    save_dir: SaveDir,
    digest: Annotated[
        str | None, typer.Option(help="Expected digest of the run.lock, e.g. from MLflow's flexlock.lock_digest tag.")
    ] = None,
) -> None:
    """Re-hash the data and look up the code of SAVE_DIR; exit 1 naming what no longer matches."""
    from flexlock_prefect.lock import RunLock
    from flexlock_prefect.verify import verify_lock

    lock = RunLock.load(save_dir)
    mismatches = verify_lock(lock, expected_digest=digest)
    if mismatches:
        for mismatch in mismatches:
            out.print(f"[red]MISMATCH[/red] {mismatch}")
        raise typer.Exit(1)
    out.print(
        f"[green]OK[/green] {lock.logical_run_id}: {len(lock.data)} data inputs and {len(lock.repos)} repos match"
    )


@app.command()
def relog(
    save_dirs: Annotated[list[str] | None, typer.Argument(help="save_dirs to relog.", show_default=False)] = None,
    root: Annotated[str | None, typer.Option(help="Relog every save_dir with a run.lock below DIR.")] = None,
    force: Annotated[bool, typer.Option(help="Relog even save_dirs whose active run is up to date.")] = False,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the diag's, else from each config).")
    ] = None,
    diag: Annotated[
        str | None,
        typer.Option(help="Your diag: FILE.py:NAME or module.NAME, a diag_flow or a body (save_dir, run)."),
    ] = None,
    via_event: Annotated[
        bool, typer.Option(help="Emit flexlock.relog.requested for --root; a relog-all deployment does the work.")
    ] = False,
    main_flow: Annotated[
        str | None,
        typer.Option(
            "--main", help="Only the save_dirs this main flow recorded; with --via-event, the pipeline to ask."
        ),
    ] = None,
) -> None:
    """Log save_dirs to MLflow as new runs that supersede their active runs; exit 1 if any failed."""
    from flexlock_prefect.diag import load_diag
    from flexlock_prefect.diag import relog as relog_save_dirs

    if not save_dirs and not root:
        raise typer.BadParameter("give SAVE_DIR arguments or --root DIR")
    if via_event:
        if not root or save_dirs or diag:
            raise typer.BadParameter(
                "--via-event takes --root DIR, no SAVE_DIR and no --diag (the deployment has its own)"
            )
        _request_relog(root, force, main_flow)
        return
    spec = load_diag(diag) if diag else None
    outcomes = relog_save_dirs(
        save_dirs or [], root=root, force=force, diag=spec, experiment=experiment, recorded_by=main_flow
    )
    out.print(_rich_table(relog_table(outcomes)))
    _exit_1_on(relog_failures(outcomes))


def _request_relog(root: str, force: bool, main_flow: str | None) -> None:
    """Emit the relog request, once an automation is there to act on it."""
    from flexlock_prefect.concurrency import prefect_api_configured
    from flexlock_prefect.events import emit_relog_requested, relog_listeners
    from flexlock_prefect.storage import canonical_url

    if not prefect_api_configured():
        raise FlexlockError("--via-event needs a Prefect API: set PREFECT_API_URL, or relog without --via-event")
    url = canonical_url(root)
    listeners, pipelines = relog_listeners(url, main_flow)
    if not listeners:
        scope = f"of the pipeline {main_flow!r}" if main_flow else "for requests without --main"
        known = (
            f"relog-all deployments listen for: {', '.join(pipelines)}; pass --main NAME"
            if pipelines
            else ("serve or deploy a Pipeline")
        )
        raise FlexlockError(
            f"no relog-all deployment {scope} listens for flexlock.relog.requested ({known}), "
            "or relog directly without --via-event"
        )
    emit_relog_requested(url, force=force, main=main_flow)
    out.print(f"flexlock.relog.requested emitted for {url}: {', '.join(listeners)} will relog it", soft_wrap=True)


@app.command()
def reconcile(
    save_dirs: Annotated[list[str] | None, typer.Argument(help="save_dirs (default: every logical run).")] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            help="Without a Prefect API: seconds after which a RUNNING relog counts as dead "
            "[default: FLEXLOCK_RECONCILE_STALE_AFTER_S, 3600]."
        ),
    ] = None,
) -> None:
    """Repair supersession chains left by crashed relogs; changes nothing when all is sound; exit 1
    if any logical run could not be repaired."""
    from flexlock_prefect.diag import reconcile as reconcile_chains

    outcomes = reconcile_chains(save_dirs or [], stale_after_s=stale_after)
    table = reconcile_table(outcomes)
    if table.rows:
        out.print(_rich_table(table))
    else:
        out.print(f"every supersession chain is sound ({len(outcomes)} logical runs): nothing to repair")
    _exit_1_on(reconcile_failures(outcomes))


def _exit_1_on(failures: str | None) -> None:
    """Some items of a batch failed: say which on stderr, in one line, and exit 1."""
    if failures:
        err.print(f"error: {failures}", markup=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def gc(
    snapshots: Annotated[
        bool, typer.Option("--snapshots", help="Collect code snapshots (the only kind of garbage so far).")
    ] = False,
    root: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DIR", help="Keep every snapshot a run.lock below DIR records (repeatable; path or s3:// URL)."
        ),
    ] = None,
    repo: Annotated[
        list[str] | None, typer.Option(metavar="PATH", help="A repository to collect in (repeatable; default: .).")
    ] = None,
    older_than: Annotated[
        float | None, typer.Option(metavar="DAYS", min=0, help="Keep snapshots made within the last DAYS too.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be removed, remove nothing.")] = False,
) -> None:
    """Remove the refs/flexlock/snapshots/ refs that no run.lock under the roots references."""
    from flexlock_prefect.gc import gc_snapshots

    if not snapshots:
        raise FlexlockError("say what to collect: `gc --snapshots` (code snapshots are the only kind so far)")
    if not root:
        raise FlexlockError("gc --snapshots needs --root DIR: the snapshots that run.locks below it record are kept")
    result = gc_snapshots(repo or ["."], root, older_than_days=older_than, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for snapshot in result.removed:
        age = snapshot.age_days(result.checked_at)
        out.print(
            f"{verb} {snapshot.ref} (commit {snapshot.commit[:12]}, {age:.1f} days old) in {snapshot.repo}",
            markup=False,
            soft_wrap=True,
        )
    total = len(result.removed) + result.referenced + result.young
    young = f" and {result.young} made within the last {older_than:g} days" if older_than is not None else ""
    out.print(
        f"{verb} {len(result.removed)} of {total} snapshots; kept {result.referenced} recorded by a run.lock{young}; "
        f"run.locks read: {result.run_locks}",
        markup=False,
        soft_wrap=True,
    )


@app.command()
def sweep(
    entrypoint: Annotated[
        str,
        typer.Argument(metavar="FILE:FLOW", help="Your locked_flow: FILE.py:NAME or module.NAME.", show_default=False),
    ],
    grid: Annotated[
        list[str] | None, typer.Option(metavar="KEY=V1,V2", help="Values of one config key (repeatable).")
    ] = None,
    random: Annotated[int | None, typer.Option(metavar="N", min=1, help="N random draws from --space instead.")] = None,
    optuna: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Or an Optuna study (TPE, --seed) over --space, to N completed trials."),
    ] = None,
    optuna_storage: Annotated[
        str | None, typer.Option(metavar="URL", help="The Optuna study's storage, e.g. sqlite:///optuna.db.")
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(metavar="NAME", help="The Optuna study's name in --optuna-storage.")
    ] = None,
    space: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=KIND:…", help="uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH or choice:A,B."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed of the random draws or of Optuna's sampler.")] = 0,
    root: Annotated[str | None, typer.Option(metavar="DIR", help="sweep.lock and the trials' save_dirs.")] = None,
    override: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="A config override of every trial (repeatable).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="The metrics.json key that ranks the trials.")] = None,
    mode: Annotated[str, typer.Option(help="max or min: which metric value is best.")] = "max",
    max_parallel: Annotated[
        int | None, typer.Option(min=1, help="Trials at once [default: FLEXLOCK_SWEEP_MAX_PARALLEL, 2].")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(metavar="FLOW/NAME", help="Run each trial as a flow run of this deployment.")
    ] = None,
    fail_fast: Annotated[bool, typer.Option(help="Start no trial after one failed.")] = False,
) -> None:
    """Run FLOW once per point of a grid, of random draws or of an Optuna study under --root;
    completed trials with unchanged inputs are reused. Exit 1 if any trial failed (with
    --optuna: if fewer than N completed)."""
    from flexlock_prefect._user_flow import load_entrypoint
    from flexlock_prefect.exceptions import TrialsFailed
    from flexlock_prefect.report import sweep_table
    from flexlock_prefect.study import (
        Space,
        TrialPlanner,
        check_overrides,
        parse_distribution_option,
        parse_grid_option,
        plan_study,
    )
    from flexlock_prefect.sweep import sweep as sweep_flow
    from flexlock_prefect.sweep import trial_capture
    from flexlock_prefect.sweeplock import SweepLock

    if not root:
        raise FlexlockError("sweep needs --root DIR: the directory of its sweep.lock and of its trials' save_dirs")
    if mode not in ("max", "min"):
        raise FlexlockError(f"--mode is {mode!r}: give max or min")
    drawn = bool(random) + bool(optuna)
    if bool(grid) + drawn != 1 or bool(space) != bool(drawn):
        raise FlexlockError("give either --grid KEY=V1,V2 … or --random N or --optuna N with --space KEY=KIND:… …")
    if (optuna_storage or study_name) and not optuna:
        raise FlexlockError("--optuna-storage and --study-name go with --optuna N")
    flow = load_entrypoint(entrypoint, "the flow")
    grid_values = dict(parse_grid_option(text) for text in grid or []) if grid else None
    distributions = dict(parse_distribution_option(text) for text in space or []) if space else None
    asked_by = "optuna" if optuna else None
    points = Space.of(grid=grid_values, distributions=distributions, n=random, seed=seed, asked_by=asked_by)
    check_overrides(points, override or [])
    planner = TrialPlanner.of(root, trial_capture(flow, override or []))
    plan_study(points, planner)  # bad keys and values fail here, in one line
    study = _optuna_study(optuna_storage, study_name, mode, seed) if optuna else None
    try:
        lock = sweep_flow(
            flow,
            grid=grid_values,
            root=root,
            distributions=distributions,
            n=random,
            seed=seed,
            overrides=override or [],
            metric=metric,
            mode=mode,
            max_parallel=max_parallel,
            deployment=deployment,
            fail_fast=fail_fast,
            study=study,
            n_trials=optuna,
        )
    except TrialsFailed as exc:
        out.print(_rich_table(sweep_table(SweepLock.load(root))))
        _exit_1_on(str(exc))
    out.print(_rich_table(sweep_table(lock)))
    out.print(f"study {lock.study_key_hash} in {lock.root}", soft_wrap=True)
    if lock.best:
        out.print(f"best: {lock.best.save_dir} ({lock.best.metric} = {lock.best.value:.6g})", soft_wrap=True)
    _exit_1_on(_sweep_shortfall(lock))


def _sweep_shortfall(lock: SweepLock) -> str | None:
    """Why the sweep exits 1: a failed trial, or with an Optuna study (which asks again for what
    failed) fewer completed trials than wanted."""
    if lock.n_trials:
        missing = lock.n_trials - lock.count("completed")
        wanted = f"{missing} of the {lock.n_trials} trials wanted did not complete; see the table"
        return wanted if missing > 0 else None
    failed = lock.count("failed")
    return f"{failed} of {len(lock.trials)} trials failed; see the table" if failed else None


def _optuna_study(storage: str | None, name: str | None, mode: str, seed: int) -> optuna.Study:
    """The study of `sweep --optuna`: TPE seeded with --seed, loaded from --optuna-storage when it
    holds --study-name already (with the sweep's direction)."""
    try:
        import optuna
    except ImportError:
        raise FlexlockError("--optuna needs Optuna: pip install 'flexlock-prefect[optuna]'") from None
    from flexlock_prefect.redact import Redactor, strip_url_credentials

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # flexlock logs each trial; Optuna's lines repeat them
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            load_if_exists=True,
            direction="maximize" if mode == "max" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
        )
    except Exception as exc:  # Optuna raises its own, SQLAlchemy's and ValueError for a bad storage URL
        where = strip_url_credentials(storage) if storage else "memory"
        said = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", " ".join(str(exc).split()))  # SQLAlchemy's
        reason = Redactor.from_settings().scrub(said, [storage] if storage else [])
        raise FlexlockError(f"cannot open the Optuna study {name!r} in {where}: {reason}") from None


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Model version.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="Target alias: dev, staging, prod or archived.", show_default=False)],
    check: Annotated[
        list[str] | None, typer.Option(help="Metric rule, e.g. 'accuracy >= prod.accuracy - 0.01'.")
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option(help="Seconds to wait for approval [default: FLEXLOCK_APPROVAL_TIMEOUT_S, 3600]."),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(help="The promote deployment, `promote/<pipeline>` [default: the only one there is]."),
    ] = None,
) -> None:
    """Start the approval-gated promotion (a `promote` deployment) and say where to approve."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from flexlock_prefect.registry import check_move
    from flexlock_prefect.settings import get_settings

    check_move(model, version, to)
    timeout = timeout or get_settings().approval_timeout_s
    name = deployment or _only_promote_deployment()
    try:
        run = run_deployment(
            name,
            parameters={"model": model, "version": version, "to": to, "checks": check or [], "timeout": timeout},
            timeout=0,
        )
    except ObjectNotFound:
        raise FlexlockError(
            f"no deployment {name!r} on this Prefect server: serve or deploy a Pipeline(..., promote=True), "
            "or give an existing one with --deployment promote/<pipeline>"
        ) from None
    out.print(f"promotion of {model} version {version} to {to} started: flow run {run.id}", soft_wrap=True)
    out.print(f"approve:  flexlock-prefect approve {run.id} [--comment TEXT]", soft_wrap=True)
    out.print(f"reject:   flexlock-prefect approve {run.id} --reject --comment TEXT", soft_wrap=True)


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="The paused promotion's flow run id.", show_default=False)],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    comment: Annotated[str, typer.Option(help="Why; recorded in the model version's history.")] = "",
    reviewer: Annotated[str | None, typer.Option(help="Who decides (default: the login name).")] = None,
) -> None:
    """Answer a paused promotion: approve it (default) or reject it.

    A promotion still running its checks is waited for, up to FLEXLOCK_APPROVE_WAIT_S."""
    from flexlock_prefect.approval import answer

    by = answer(flow_run_id, approved=not reject, reviewer=reviewer, comment=comment)
    out.print(f"{'rejected' if reject else 'approved'} flow run {flow_run_id} as {by}")


@app.command()
def history(model: Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]) -> None:
    """Every lifecycle move of every version of MODEL, oldest first."""
    from flexlock_prefect.registry import history as model_history

    table = RichTable("at", "version", "from", "to", "by", "comment", "flow run", title=f"lifecycle of {model}")
    for step in model_history(model):
        table.add_row(
            step.at,
            step.version,
            step.from_state or "new",
            step.to_state,
            step.made_by,
            step.comment,
            step.flow_run_id or "",
        )
    out.print(table)


@app.command()
def trace(
    ref: Annotated[
        str,
        typer.Argument(help="MODEL@ALIAS, models:/MODEL@ALIAS, or MODEL followed by VERSION.", show_default=False),
    ],
    version: Annotated[str | None, typer.Argument(help="The version, after a bare MODEL.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash the data and check the code now; exit 1 on any mismatch.")
    ] = False,
) -> None:
    """What produced a model version, and who moved it through the lifecycle: registry, MLflow
    runs, run.lock, code, data and upstream runs on one screen."""
    from flexlock_prefect.trace_view import trace_tables
    from flexlock_prefect.tracking.trace import trace as trace_version

    found = trace_version((ref, version) if version else ref, verify=verify)
    if as_json:
        out.print_json(json.dumps(found.to_dict()))
    else:
        for table in trace_tables(found):
            if table.rows:
                out.print(_section(table))
    if not found.verified:
        raise typer.Exit(1)


def _section(table: Table) -> RichTable:
    """A section of a trace: a bold title, then its rows without borders, a header only where
    the columns have names (so it fits one screen)."""
    rich = RichTable(
        title=table.title, title_justify="left", title_style="bold", box=None, show_header=any(table.columns)
    )
    for column in table.columns:
        rich.add_column(column, overflow="fold")
    for row in table.rows:
        rich.add_row(*map(Text, row))  # as text: a save_dir or a comment may hold [brackets]
    return rich


@app.command()
def audit(
    model: Annotated[str, typer.Argument(help="Registered model name.", show_default=False)],
    repair: Annotated[
        bool, typer.Option("--repair", help="Realign aliases and lifecycle tags with the history (never approvals).")
    ] = False,
) -> None:
    """Check that MODEL's aliases, lifecycle tags and approvals agree with its lifecycle history;
    exit 1 naming each finding.

    --repair realigns aliases and lifecycle tags first, but gives no staging or prod alias to a
    version whose move there was not approved; exit 1 then only if findings remain. With a
    Prefect API (PREFECT_API_URL) it runs under the model's lock and emits flexlock.model.drift
    on findings; without one it audits all the same, without lock or event.
    """
    from flexlock_prefect.audit import audit_model
    from flexlock_prefect.report import counted
    from flexlock_prefect.tracking.audit import AGREES

    findings = audit_model(model, repair)
    if not findings:
        out.print(f"{model}: {AGREES}", soft_wrap=True)
        return
    for finding in findings:  # one line each, whatever the width: greppable
        outcome = [("repaired " if finding.repaired else "unresolved ", "green" if finding.repaired else "red")]
        line = Text.assemble(*(outcome if repair else []), (finding.kind, "bold"), ": ")
        out.print(line.append(finding.message), soft_wrap=True)  # as text: a tag may hold [brackets]
    unresolved = sum(not finding.repaired for finding in findings)
    if repair:
        out.print(f"{model}: repaired {len(findings) - unresolved} of {counted(len(findings), 'finding')}")
    if not unresolved:
        return
    remains = f"{model}: {counted(unresolved, 'finding')}"
    if repair:
        _exit_1_on(f"{remains} that repair cannot resolve: each needs a person (an approval, or a tag fixed by hand)")
    _exit_1_on(
        f"{remains} against the lifecycle history; `flexlock-prefect audit {model} --repair` realigns what it can"
    )


@app.command()
def init(
    main: Annotated[
        str, typer.Option("--main", help="Your main flow: FILE.py:NAME of a locked_flow.", show_default=False)
    ],
    diag: Annotated[str, typer.Option("--diag", help="Your diag: FILE.py:NAME of a diag_flow.", show_default=False)],
    pool: Annotated[str, typer.Option(help="The process work pool the deployments run on.")] = "flexlock-process",
    cron: Annotated[str | None, typer.Option(help="A schedule for the main flow, e.g. '0 2 * * *'.")] = None,
    promote: Annotated[bool, typer.Option(help="Also deploy approval-gated promotion.")] = True,
    output: Annotated[str, typer.Option(help="Where to write the file.")] = "prefect.yaml",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a prefect.yaml with your pipeline's deployments and scoped triggers (run from your project root)."""
    from pathlib import Path

    from prefect import Flow

    from flexlock_prefect._user_flow import load_entrypoint
    from flexlock_prefect.pipeline import DIAG_QUEUE, Pipeline, write_prefect_yaml

    target = Path(output)
    if target.exists() and not force:
        raise FlexlockError(f"{target} exists: pass --force to overwrite it, or --output another path")
    flows = {}
    for option, entrypoint in (("--main", main), ("--diag", diag)):
        flows[option] = load_entrypoint(entrypoint, option)
        if not isinstance(flows[option], Flow):
            raise FlexlockError(
                f"{option} {entrypoint} is not a Prefect flow: decorate it with locked_flow / diag_flow"
            )
    pipeline = Pipeline(main=flows["--main"], diag=flows["--diag"], promote=promote, cron=cron)
    write_prefect_yaml([pipeline], target, pool, project_root=Path.cwd())
    out.print(f"wrote {target} with the deployments of the {pipeline.deployment_name} pipeline; then:", soft_wrap=True)
    for command in (
        f"prefect work-pool create {pool} --type process",
        f"prefect work-queue create {DIAG_QUEUE} --pool {pool} --priority 1",
        f"prefect deploy --prefect-file {target} --all",
        f"prefect worker start --pool {pool}",
    ):
        out.print(f"  {command}", soft_wrap=True)


@app.command()
def demo(
    root: Annotated[
        str, typer.Option(help="Where the example data, runs and local stores are written.")
    ] = "flexlock-demo",
    keep: Annotated[
        bool, typer.Option(help="Leave the local Prefect server and the served deployments running.")
    ] = False,
) -> None:
    """Run the example end to end: Prefect server, served deployments, main run, triggered diag."""
    from flexlock_prefect.demo import run_demo

    result = run_demo(root, keep=keep, console=err)
    out.print(f"Prefect UI:  {result.prefect_ui}", soft_wrap=True)
    out.print(f"save_dir:    {result.save_dir}  (flexlock-prefect show {result.save_dir})", soft_wrap=True)
    out.print(f"MLflow run:  {result.mlflow_run_id}", soft_wrap=True)
    out.print(f"MLflow UI:   {result.mlflow_ui_command}", soft_wrap=True)


@app.command()
def serve(
    root: Annotated[str, typer.Option(help="Where a local Prefect server keeps its database.")] = "flexlock-demo",
    queue: Annotated[
        str | None,
        typer.Option(
            help="Serve only the deployments of this work queue of prefect.yaml: 'diag' (diag, relog-all, "
            "promote, audit) beside the pool's workers, or 'default' (the main flow)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Run at most this many flow runs at once.")] = None,
    cold: Annotated[
        bool,
        typer.Option(
            "--cold", help="Start each flow run in a new interpreter, which loads edited code without a restart."
        ),
    ] = False,
) -> None:
    """Serve the project's deployments (and a local Prefect server if none is configured) until Ctrl-C."""
    from pathlib import Path

    from flexlock_prefect.local import prefect_api
    from flexlock_prefect.pipeline import check_queue
    from flexlock_prefect.serving import serve_examples

    check_queue(queue)  # before a local server is started for nothing
    with prefect_api(Path(root).resolve() / "prefect") as api_url:
        what = f"the {queue!r} queue's deployments" if queue else "the deployments"
        err.print(f"Prefect API at {api_url}; serving {what} (Ctrl-C stops)")
        serve_examples(queue=queue, limit=limit, warm=not cold)


def _only_promote_deployment() -> str:
    """`promote/<pipeline>` when exactly one promote deployment exists; else say what to pass."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        names = sorted(
            f"promote/{d.name}"
            for d in client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])))
        )
    if len(names) == 1:
        return names[0]
    if not names:
        raise FlexlockError(
            "no promote deployment on this Prefect server: serve or deploy a Pipeline(..., promote=True) "
            "(`flexlock-prefect serve` serves the example's)"
        )
    raise FlexlockError(f"several promote deployments ({', '.join(names)}): choose one with --deployment")


def _rich_table(table: Table) -> RichTable:
    rich = RichTable(title=table.title, title_justify="left")
    for column in table.columns:
        rich.add_column(column, overflow="fold")
    for row in table.rows:
        rich.add_row(*map(Text, row))  # as text: a reason or a config value may hold [brackets]
    return rich


def main() -> None:
    """Console entry point: a FlexlockError, or a Prefect API request that failed, becomes one
    line on stderr and exit code 2."""
    try:
        app()
    except FlexlockError as exc:
        _fail(exc)
    except (httpx.TransportError, httpx.HTTPStatusError) as exc:  # Prefect's client, outside any named operation
        from flexlock_prefect.prefect_errors import as_prefect_api_error

        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        _fail(as_prefect_api_error(exc, f"run `flexlock-prefect {command}`"))


def _fail(exc: FlexlockError) -> None:
    one_line = " ".join(str(exc).split())  # a message quoting a library's multi-line error stays one line
    err.print(f"error: {one_line}", markup=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
