"""Two pipelines side by side in one user module, as a user writes them: `train_a` with a diag
in the decorator form, `train_b` with a diag in the call form under another name."""

from __future__ import annotations

import json

import mlflow

from flexlock_prefect import diag_flow, locked_flow, storage

CONFIG = {"lr": 0.1, "save_dir": "???"}


def _write_metrics(save_dir: str, value: float) -> None:
    storage.write_atomic(storage.join(save_dir, "metrics.json"), json.dumps({"score": value}).encode())


@locked_flow(config=CONFIG)
def train_a(cfg) -> None:
    _write_metrics(cfg.save_dir, 0.5)


@locked_flow(config=CONFIG)
def train_b(cfg) -> None:
    _write_metrics(cfg.save_dir, 0.7)


@diag_flow(experiment="pipeline-a")
def diag_a(save_dir: str, run) -> None:
    with open(f"{save_dir}/metrics.json") as handle:  # a local save_dir arrives as a plain path
        mlflow.log_metric("score_a", json.load(handle)["score"])


def log_b(save_dir: str, run) -> None:
    mlflow.log_metric("score_b", json.loads(storage.read_text(storage.join(save_dir, "metrics.json")))["score"])


diag_for_b = diag_flow(log_b, experiment="pipeline-b", name="diag-b")
