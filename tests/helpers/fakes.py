"""Small in-memory stand-ins for unit tests: an MLflow client that holds runs in a dict, and
run records built by hand (no data to hash, no git, no servers).

Why a fake client and not a mock: a mock answers whatever is asked, so a test could pass while
the code under test calls something MLflow does not have. This fake implements only the calls
the supersession repair and the batched logging make (`log_batch`, `delete_tag`,
`set_terminated`), with MLflow's own semantics for each, and fails loudly on anything else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import LifecycleStage, Metric, Param, Run, RunData, RunInfo, RunTag

from flexlock_prefect.lock import DataState, EnvState, PrefectState, RepoState, RunLock, RunResult


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _StoredRun:
    status: str
    start_time: int
    end_time: int | None
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)


class FakeMlflowClient:
    """Runs in memory; `writes` lists every call that changed something, in order.

    Example:
        >>> client = FakeMlflowClient()
        >>> client.add_run("a", status="FINISHED", end_time=now_ms(), tags={"k": "v"})
        >>> client.run("a").data.tags
        {'k': 'v'}
    """

    def __init__(self) -> None:
        self._runs: dict[str, _StoredRun] = {}
        self.writes: list[tuple[str, str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []

    def add_run(
        self,
        run_id: str,
        *,
        status: str = "FINISHED",
        start_time: int | None = None,
        end_time: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Store a run as it would be on the server (not recorded as a write)."""
        start = start_time if start_time is not None else (end_time or now_ms()) - 1000
        self._runs[run_id] = _StoredRun(status, start, end_time, dict(tags or {}))

    def run(self, run_id: str) -> Run:
        """A fresh snapshot of one run, as `MlflowClient.get_run` returns it."""
        stored = self._runs[run_id]
        info = RunInfo(
            run_id=run_id,
            experiment_id="0",
            user_id="tests",
            status=stored.status,
            start_time=stored.start_time,
            end_time=stored.end_time,
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=f"file:///nowhere/{run_id}/artifacts",
            run_name=run_id,
        )
        data = RunData(
            params=[Param(k, v) for k, v in stored.params.items()],
            tags=[RunTag(k, v) for k, v in stored.tags.items()],
        )
        return Run(info, data)

    def runs(self) -> list[Run]:
        """Fresh snapshots of every run, in the order they were added."""
        return [self.run(run_id) for run_id in self._runs]

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self._runs[run_id].tags)

    def status(self, run_id: str) -> str:
        return self._runs[run_id].status

    # The MlflowClient calls, with MlflowClient's signatures.

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        synchronous: bool | None = None,
    ) -> None:
        stored = self._runs[run_id]
        self.requests.append(("log_batch", run_id, {"params": list(params), "tags": list(tags)}))
        new_params = {p.key: p.value for p in params}
        new_tags = {t.key: t.value for t in tags}
        if metrics or params or tags:
            self.writes.append(("log_batch", run_id, {"params": new_params, "tags": new_tags}))
        stored.params |= new_params
        stored.tags |= new_tags

    def delete_tag(self, run_id: str, key: str) -> None:
        stored = self._runs[run_id]
        if key not in stored.tags:  # MLflow refuses to delete a tag that is not there
            raise KeyError(f"no tag {key!r} on run {run_id}")
        self.requests.append(("delete_tag", run_id, key))
        self.writes.append(("delete_tag", run_id, key))
        del stored.tags[key]

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        stored = self._runs[run_id]
        self.requests.append(("set_terminated", run_id, status))
        self.writes.append(("set_terminated", run_id, status or "FINISHED"))
        stored.status = status or "FINISHED"
        stored.end_time = end_time if end_time is not None else now_ms()


ENV = EnvState(python="3.11.7", platform="Linux-x86_64", packages={"numpy": "2.0.0"}, lockfiles={})


def make_lock(
    save_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    data: Mapping[str, DataState] | None = None,
    repos: Mapping[str, RepoState] | None = None,
    env: EnvState = ENV,
    prefect: PrefectState | None = None,
    result: RunResult | None = None,
) -> RunLock:
    """A run record built by hand: `config` gets the `save_dir` key, the fingerprint is computed.

    Example:
        >>> make_lock(tmp_path / "run", {"lr": 0.1}).config  # doctest: +SKIP
        {'save_dir': '/tmp/.../run', 'lr': 0.1}
    """
    full_config = {"save_dir": str(save_dir)} | dict(config or {})
    lock = RunLock.create(str(save_dir), full_config, dict(repos or {}), dict(data or {}), env, prefect)
    return lock.with_result(result) if result else lock


def data_state(digest: str, uri: str = "file:///data/points.csv", algorithm: str = "xxh3-128-tree") -> DataState:
    return DataState(uri=uri, algorithm=algorithm, digest=digest, size=10, files=1)


def repo_state(tree: str, path: str | Path = "/nowhere/code", **fields: Any) -> RepoState:
    values = {
        "commit": "c" * 40,
        "tree": tree,
        "dirty": False,
        "branch": "main",
        "remote": "https://example.invalid/code.git",
        "snapshot_ref": None,
        "path": str(path),
    } | fields
    return RepoState(**values)
