"""Hostile input: every case is one clear line (what, where, how to fix), never a traceback.

`CASES` is the README's hostile-input table: `python -m tests.test_hostile_input` prints it, and
`test_the_readme_lists_every_hostile_case` keeps the two the same. A CLI case runs the command as
a user does (a subprocess) and expects exit 2 (or 1 where it says so), one line on stderr, no
traceback and no secret; a Python case expects the named FlexlockError with a one-line message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flexlock_prefect import exceptions
from flexlock_prefect.local import free_port
from flexlock_prefect.promote import PromotionRejected
from tests.helpers.git_repos import git, make_repo

pytestmark = pytest.mark.one_prefect
SECRET = "s3cret-pw-7f2e"
README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass
class Bench:
    """What a case acts on: a scratch directory, and servers only for the cases that need them."""

    tmp: Path
    request: pytest.FixtureRequest

    def save_dir(self, name: str, lock: str | None = None) -> str:
        """A save_dir whose run.lock holds `lock` (no run.lock when None)."""
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        if lock is not None:
            (path / "run.lock").write_text(lock)
        return str(path)

    def recorded(self, name: str) -> str:
        from flexlock_prefect.capture import capture_run

        data = self.tmp / "data.csv"
        data.write_text("x\n1\n")
        _, lock = capture_run({"lr": 0.1, "data": str(data), "save_dir": str(self.tmp / name)}, data=["data"])
        lock.save()
        return str(self.tmp / name)

    def mlflow(self) -> str:
        return self.request.getfixturevalue("mlflow_server")

    def prefect(self) -> str:
        return self.request.getfixturevalue("prefect_api")

    def model(self, versions: int = 1) -> str:
        from tests.helpers.models import registered_model

        self.mlflow()
        return registered_model("hostile", versions)


def closed_url(scheme: str = "http", credentials: str = "") -> str:
    return f"{scheme}://{credentials}127.0.0.1:{free_port()}"


@dataclass(frozen=True)
class Cli:
    """`flexlock-prefect ARGS` with extra environment, once the servers it `needs` run."""

    args: Callable[[Bench], list[str]]
    env: Callable[[Bench], dict[str, str]] = lambda bench: {}
    needs: tuple[str, ...] = ()  # "mlflow", "prefect"
    exit: int = 2

    def outcome(self) -> str:
        return f"exit {self.exit}"


@dataclass(frozen=True)
class Api:
    """A Python call that must raise `error` (a FlexlockError subclass)."""

    call: Callable[[Bench], object]
    error: type[exceptions.FlexlockError]

    def outcome(self) -> str:
        return self.error.__name__


@dataclass(frozen=True)
class Elsewhere:
    """A case that needs a whole served promotion: the named test drives it, and must exist."""

    test: str  # tests/FILE.py::NAME
    error: type[exceptions.FlexlockError]

    def outcome(self) -> str:
        return self.error.__name__


@dataclass(frozen=True)
class Case:
    id: str
    given: str  # the input, as the README shows it
    says: str  # what the message says (a part of it)
    act: Cli | Api | Elsewhere


def _unreachable_mlflow(bench: Bench) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": closed_url(credentials=f"ana:{SECRET}@")}


def _unreachable_prefect(bench: Bench) -> dict[str, str]:
    return {"PREFECT_API_URL": f"{closed_url()}/api"}


def _unreachable_s3(bench: Bench) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": closed_url(), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": SECRET}


def _flow_run(bench: Bench) -> str:
    from prefect import flow

    bench.prefect()

    @flow(name="not-a-promotion")
    def finished() -> None: ...

    return str(finished(return_state=True).state_details.flow_run_id)


def _load(save_dir: str) -> object:
    from flexlock_prefect import RunLock

    return RunLock.load(save_dir)


def _move(bench: Bench, version: str, to: str) -> object:
    from flexlock_prefect.registry import move

    return move(bench.model(), version, to, by="mallory")


def _capture(bench: Bench, overrides: list[str], config: dict | None = None) -> object:
    from flexlock_prefect.capture import capture_run

    base = {"lr": 0.1, "model": {"C": 1.0}, "save_dir": str(bench.tmp / "run")}
    return capture_run(config or base, overrides=overrides)


def _rules(rules: list[str]) -> object:
    from flexlock_prefect.rules import parse_rules

    return parse_rules(rules)


def _relog(bench: Bench, save_dirs: list[str]) -> object:
    from flexlock_prefect import relog

    bench.mlflow()
    return relog(save_dirs)


CORRUPT = "flexlock: 1\nconfig: ["
REJECTION_TEST = "tests/test_promote.py::test_rejection_and_timeout_leave_the_registry_exactly_as_it_was"
FUTURE = "flexlock: 99\n"

CASES = [
    # run.locks
    Case(
        "show-missing", "`show runs/none` (no run.lock)", "no run.lock in", Cli(lambda b: ["show", b.save_dir("none")])
    ),
    Case(
        "show-corrupt",
        "`show runs/bad` (truncated YAML)",
        "is not valid YAML (truncated or corrupt?)",
        Cli(lambda b: ["show", b.save_dir("bad", CORRUPT)]),
    ),
    Case(
        "show-empty",
        "`show runs/empty` (empty run.lock)",
        "is not a run.lock: expected a mapping with a `flexlock` schema version",
        Cli(lambda b: ["show", b.save_dir("empty", "")]),
    ),
    Case(
        "show-future",
        "`show runs/next` (schema version 99)",
        "schema version 99; this flexlock-prefect reads version 1: upgrade flexlock-prefect",
        Cli(lambda b: ["show", b.save_dir("next", FUTURE)]),
    ),
    Case(
        "show-edited",
        "`show runs/edited` (config edited by hand)",
        "the recorded fingerprint does not match the recorded inputs",
        Cli(lambda b: ["show", _edited(b)]),
    ),
    Case(
        "diff-missing",
        "`diff runs/a runs/none`",
        "no run.lock in",
        Cli(lambda b: ["diff", b.recorded("a"), b.save_dir("none")]),
    ),
    Case(
        "verify-ftp",
        "`verify ftp://host/run`",
        "unsupported URL scheme 'ftp'",
        Cli(lambda b: ["verify", "ftp://host/run"]),
    ),
    Case(
        "show-s3-unreachable",
        "`show s3://bucket/run`, S3 endpoint down",
        "cannot read the run.lock of s3://bucket/run",
        Cli(lambda b: ["show", "s3://bucket/run"], _unreachable_s3),
    ),
    Case(
        "load-future",
        "`RunLock.load('runs/next')` (schema version 99)",
        "upgrade flexlock-prefect to read it",
        Api(lambda b: _load(b.save_dir("next", FUTURE)), exceptions.RunLockError),
    ),
    # relog and reconcile
    Case(
        "relog-empty-root",
        "`relog --root runs` (no run.lock below)",
        "no save_dir with a run.lock under",
        Cli(lambda b: ["relog", "--root", b.save_dir("runs")]),
    ),
    Case(
        "relog-mlflow-down",
        "`relog runs/a`, MLflow down, URI with a password",
        "is unreachable",
        Cli(lambda b: ["relog", b.recorded("a")], _unreachable_mlflow),
    ),
    Case(
        "reconcile-mlflow-down",
        "`reconcile`, MLflow down, URI with a password",
        "is unreachable",
        Cli(lambda b: ["reconcile"], _unreachable_mlflow),
    ),
    Case(
        "relog-diag-missing-file",
        "`relog --diag nope.py:body runs/a`",
        "cannot load the diag 'nope.py:body': its file failed to load",
        Cli(lambda b: ["relog", "--diag", "nope.py:body", b.recorded("a")]),
    ),
    Case(
        "relog-diag-missing-name",
        "`relog --diag flexlock_prefect.examples.diag.nobody runs/a`",
        "cannot load the diag 'flexlock_prefect.examples.diag.nobody'",
        Cli(lambda b: ["relog", "--diag", "flexlock_prefect.examples.diag.nobody", b.recorded("a")]),
    ),
    Case(
        "relog-via-event-no-api",
        "`relog --root runs --via-event`, no PREFECT_API_URL",
        "--via-event needs a Prefect API: set PREFECT_API_URL",
        Cli(lambda b: ["relog", "--root", b.save_dir("runs"), "--via-event"]),
    ),
    Case(
        "relog-bad-setting",
        "`FLEXLOCK_RELOG_WORKERS=0 relog runs/a`",
        "FLEXLOCK_RELOG_WORKERS: Input should be greater than or equal to 1",
        Cli(lambda b: ["relog", b.recorded("a")], lambda b: {"FLEXLOCK_RELOG_WORKERS": "0"}),
    ),
    Case(
        "relog-ftp",
        "`relog(['ftp://host/run'])`",
        "unsupported URL scheme 'ftp'",
        Api(lambda b: _relog(b, ["ftp://host/run"]), exceptions.StorageError),
    ),
    # code snapshots
    Case(
        "gc-corrupt-lock",
        "`gc --snapshots --root runs` (a truncated run.lock below)",
        "Fix or remove that run.lock, or give roots that leave it out",
        Cli(lambda b: ["gc", "--snapshots", "--root", b.save_dir("runs"), "--repo", _gc_repo(b)]),
    ),
    # the registry
    Case(
        "history-unknown-model",
        "`history nope`",
        "no registered model named 'nope'",
        Cli(lambda b: ["history", "nope"], needs=("mlflow",)),
    ),
    Case(
        "trace-not-a-ref",
        "`trace clf` (neither an alias nor a version)",
        "cannot read the model reference 'clf': give MODEL@ALIAS, models:/MODEL@ALIAS or MODEL VERSION",
        Cli(lambda b: ["trace", "clf"]),
    ),
    Case(
        "trace-unknown-alias",
        "`trace clf@prod` (no version in prod)",
        "has no version in prod",
        Cli(lambda b: ["trace", f"{b.model()}@prod"]),
    ),
    Case(
        "trace-unknown-version",
        "`trace clf 9`",
        "has no version 9",
        Cli(lambda b: ["trace", b.model(), "9"]),
    ),
    Case(
        "trace-mlflow-down",
        "`trace models:/clf@prod`, MLflow down, URI with a password",
        "is unreachable",
        Cli(lambda b: ["trace", "models:/clf@prod"], _unreachable_mlflow),
    ),
    Case(
        "audit-unknown-model",
        "`audit nope`",
        "no registered model named 'nope'",
        Cli(lambda b: ["audit", "nope"], needs=("mlflow",)),
    ),
    Case(
        "promote-unknown-state",
        "`promote clf 1 --to production`",
        "unknown lifecycle state 'production': use one of dev, staging, prod, archived",
        Cli(lambda b: ["promote", b.model(), "1", "--to", "production"]),
    ),
    Case(
        "promote-unknown-model",
        "`promote nope 1 --to dev`",
        "no registered model named 'nope'",
        Cli(lambda b: ["promote", "nope", "1", "--to", "dev"], needs=("mlflow",)),
    ),
    Case(
        "promote-unknown-version",
        "`promote clf 9 --to dev`",
        "has no version 9",
        Cli(lambda b: ["promote", b.model(), "9", "--to", "dev"]),
    ),
    Case(
        "promote-skipping-a-state",
        "`promote clf 1 --to prod` (version is new)",
        "is new: it may move to dev, archived, not to prod",
        Cli(lambda b: ["promote", b.model(), "1", "--to", "prod"]),
    ),
    Case(
        "promote-no-deployment",
        "`promote clf 1 --to dev`, no promote deployment served",
        "no promote deployment",
        Cli(lambda b: ["promote", b.model(), "1", "--to", "dev"], needs=("prefect",)),
    ),
    Case(
        "promote-unknown-deployment",
        "`promote clf 1 --to dev --deployment promote/nope`",
        "no deployment 'promote/nope' on this Prefect server",
        Cli(lambda b: ["promote", b.model(), "1", "--to", "dev", "--deployment", "promote/nope"], needs=("prefect",)),
    ),
    Case(
        "promote-prefect-down",
        "`promote clf 1 --to dev`, Prefect API down",
        "the Prefect API at",
        Cli(lambda b: ["promote", b.model(), "1", "--to", "dev"], _unreachable_prefect),
    ),
    Case(
        "move-illegal",
        "`move('clf', '1', 'staging')` (version is new)",
        "it may move to dev, archived, not to staging",
        Api(lambda b: _move(b, "1", "staging"), exceptions.LifecycleError),
    ),
    Case(
        "rule-misspelt-alias",
        "check `accuracy >= prd.accuracy - 0.01`",
        "compares with 'prd', which is no lifecycle alias (did you mean 'prod'?)",
        Api(lambda b: _rules(["accuracy >= prd.accuracy - 0.01"]), exceptions.LifecycleError),
    ),
    Case(
        "rule-unreadable",
        "check `accuracy => 0.9`",
        "cannot read the check 'accuracy => 0.9': write `metric >= 0.9`",
        Api(lambda b: _rules(["accuracy => 0.9"]), exceptions.LifecycleError),
    ),
    Case(
        "rule-arithmetic",
        "check `accuracy >= 0.5 - 0.1`",
        "cannot read the check 'accuracy >= 0.5 - 0.1'",
        Api(lambda b: _rules(["accuracy >= 0.5 - 0.1"]), exceptions.LifecycleError),
    ),
    # approvals
    Case(
        "approval-rejected",
        "the reviewer rejects, comment `not convinced`",
        "not convinced",
        Elsewhere(REJECTION_TEST, PromotionRejected),
    ),
    Case(
        "approval-timed-out",
        "nobody answers a promotion with `--timeout 2`",
        "no approval within 2 s",
        Elsewhere(REJECTION_TEST, PromotionRejected),
    ),
    Case(
        "approve-not-an-id",
        "`approve not-a-uuid`",
        "'not-a-uuid' is not a flow run id",
        Cli(lambda b: ["approve", "not-a-uuid"]),
    ),
    Case(
        "approve-unknown-run",
        "`approve 00000000-…` (no such flow run)",
        "no flow run 00000000-0000-4000-8000-000000000000 on this Prefect server",
        Cli(lambda b: ["approve", "00000000-0000-4000-8000-000000000000"], needs=("prefect",)),
    ),
    Case(
        "approve-finished-run",
        "`approve RUN` (a run that completed)",
        "is COMPLETED, not paused for approval",
        Cli(lambda b: ["approve", _flow_run(b)]),
    ),
    Case(
        "approve-prefect-down",
        "`approve RUN`, Prefect API down",
        "is unreachable",
        Cli(lambda b: ["approve", "00000000-0000-4000-8000-000000000000"], _unreachable_prefect),
    ),
    # configs and data
    Case(
        "override-typo",
        "override `lrr=0.2`",
        "the config has no key 'lrr' (did you mean 'lr'?)",
        Api(lambda b: _capture(b, ["lrr=0.2"]), exceptions.ConfigError),
    ),
    Case(
        "override-nested-typo",
        "override `model.CC=2`",
        "the config has no key 'model.CC' (did you mean 'model.C'",
        Api(lambda b: _capture(b, ["model.CC=2"]), exceptions.ConfigError),
    ),
    Case(
        "override-bad-syntax",
        "override `lr=[1,`",
        "cannot apply config overrides ['lr=[1,']",
        Api(lambda b: _capture(b, ["lr=[1,"]), exceptions.ConfigError),
    ),
    Case(
        "config-missing-value",
        "config with `data: ???`",
        "cannot resolve the config",
        Api(lambda b: _capture(b, [], {"data": "???", "save_dir": str(b.tmp / "r")}), exceptions.ConfigError),
    ),
    Case(
        "config-no-save-dir",
        "config without `save_dir`",
        "the config has no `save_dir`",
        Api(lambda b: _capture(b, [], {"lr": 0.1}), exceptions.ConfigError),
    ),
    Case(
        "data-missing",
        "`data=['data']` pointing at a missing path",
        "does not exist",
        Api(lambda b: _missing_data(b), exceptions.DataCaptureError),
    ),
    # sweeps
    Case(
        "sweep-no-root",
        "`sweep train --grid model.C=0.1` (no --root)",
        "sweep needs --root DIR",
        Cli(lambda b: _sweep(b, "--grid", "model.C=0.1", root=False)),
    ),
    Case(
        "sweep-bad-grid",
        "`sweep train --grid model.C`",
        "cannot read --grid 'model.C': write KEY=V1,V2",
        Cli(lambda b: _sweep(b, "--grid", "model.C")),
    ),
    Case(
        "sweep-no-space",
        "`sweep train --optuna 8` (no --space)",
        "give either --grid KEY=V1,V2 … or --random N or --optuna N with --space",
        Cli(lambda b: _sweep(b, "--optuna", "8")),
    ),
    Case(
        "sweep-bad-space",
        "`sweep train --random 2 --space model.C=normal:0:1`",
        "cannot read --space 'model.C=normal:0:1'",
        Cli(lambda b: _sweep(b, "--random", "2", "--space", "model.C=normal:0:1")),
    ),
    Case(
        "sweep-unknown-key",
        "`sweep train --grid model.CC=1`",
        "the sweep's point {'model.CC': 1} does not fit the config",
        Cli(lambda b: _sweep(b, "--grid", "model.CC=1")),
    ),
    Case(
        "sweep-overridden-key",
        "`sweep train --grid model.C=1 --override model.C=2`",
        "the override 'model.C=2' sets the swept key 'model.C'",
        Cli(lambda b: _sweep(b, "--grid", "model.C=1", "--override", "model.C=2")),
    ),
    Case(
        "sweep-missing-file",
        "`sweep nope.py:train --grid a=1`",
        "cannot load the flow 'nope.py:train': its file failed to load",
        Cli(lambda b: ["sweep", "nope.py:train", "--grid", "a=1", "--root", str(b.tmp / "r")]),
    ),
    Case(
        "sweep-not-locked",
        "`sweep examples.diag.diag --grid a=1` (not a locked_flow)",
        "diag is not a locked_flow",
        Cli(lambda b: ["sweep", "flexlock_prefect.examples.diag.diag", "--grid", "a=1", "--root", str(b.tmp / "r")]),
    ),
    Case(
        "sweep-optuna-storage-down",
        "`sweep train --optuna 8 … --optuna-storage postgresql://ana:…@host/db`, database down",
        "cannot open the Optuna study 'churn' in postgresql://ana@127.0.0.1:",
        Cli(lambda b: _sweep(b, "--optuna", "8", "--space", "model.C=uniform:0.1:1", *_optuna_down())),
    ),
    Case(
        "init-existing-file",
        "`init --main … --diag …` over an existing prefect.yaml",
        "exists: pass --force to overwrite it, or --output another path",
        Cli(lambda b: ["init", "--main", "m.py:m", "--diag", "d.py:d", "--output", _existing(b)]),
    ),
]


def _sweep(bench: Bench, *args: str, root: bool = True) -> list[str]:
    """`sweep` over the example flow, with a root in the bench unless `root` is false."""
    return [
        "sweep",
        "flexlock_prefect.examples.train.train",
        *args,
        *(["--root", str(bench.tmp / "r")] if root else []),
    ]


def _optuna_down() -> list[str]:
    storage = closed_url("postgresql", credentials=f"ana:{SECRET}@") + "/optuna"
    return ["--optuna-storage", storage, "--study-name", "churn"]


def _edited(bench: Bench) -> str:
    save_dir = bench.recorded("edited")
    lock = Path(save_dir) / "run.lock"
    lock.write_text(lock.read_text().replace("lr: 0.1", "lr: 0.2"))
    return save_dir


def _gc_repo(bench: Bench) -> str:
    """A repository with a snapshot of a deleted run, and a corrupt run.lock under `runs`."""
    repo = make_repo(bench.tmp / "repo", {"a.txt": "a\n"})
    git(repo, "update-ref", "refs/flexlock/snapshots/of-a-deleted-run", "HEAD")
    bench.save_dir("runs/bad", CORRUPT)
    return str(repo)


def _existing(bench: Bench) -> str:
    path = bench.tmp / "prefect.yaml"
    path.write_text("name: mine\n")
    return str(path)


def _missing_data(bench: Bench) -> object:
    from flexlock_prefect.capture import capture_run

    config = {"data": str(bench.tmp / "no-such-dir"), "save_dir": str(bench.tmp / "run")}
    return capture_run(config, data=["data"])


@pytest.fixture
def bench(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Bench:
    monkeypatch.chdir(tmp_path)
    return Bench(tmp_path, request)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_is_one_clear_line(case: Case, bench: Bench) -> None:
    if isinstance(case.act, Cli):
        for server in case.act.needs:
            bench.request.getfixturevalue({"mlflow": "mlflow_server", "prefect": "prefect_api"}[server])
        args = case.act.args(bench)
        env = {**os.environ, "COLUMNS": "400", **case.act.env(bench)}
        result = subprocess.run(
            [sys.executable, "-m", "flexlock_prefect", *args], capture_output=True, text=True, env=env, timeout=120
        )
        message = result.stderr
        assert result.returncode == case.act.exit, message
        assert "Traceback" not in message and message.count("\n") == 1 and message.startswith("error: "), message
    elif isinstance(case.act, Elsewhere):
        path, name = case.act.test.split("::")
        assert f"def {name}(" in (README.parent / path).read_text()
        return
    else:
        with pytest.raises(case.act.error) as raised:
            case.act.call(bench)
        message = str(raised.value)
        assert "\n" not in message
    assert case.says in message
    assert SECRET not in message + (result.stdout if isinstance(case.act, Cli) else "")


def readme_table() -> str:
    """The README's hostile-input table, rendered from `CASES`."""
    rows = ["| Case | Input | Outcome | The message says |", "| --- | --- | --- | --- |"]
    for case in CASES:
        says = case.says.replace("|", "\\|").replace("`", "")
        rows.append(f"| `{case.id}` | {case.given} | {case.act.outcome()} | {says} |")
    return "\n".join(rows)


def test_the_readme_lists_every_hostile_case() -> None:
    assert len(CASES) >= 30
    assert readme_table() in README.read_text(), "run `python -m tests.test_hostile_input` and paste its table"


if __name__ == "__main__":
    print(readme_table())
