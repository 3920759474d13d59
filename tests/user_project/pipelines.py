"""A user's project with two pipelines, as the README's "Use it in your project" has them.

Pipeline A: `train_a`, logged by `diag_a` (the decorator form) into the experiment `proj-a`.
Pipeline B: `train_b`, logged by `diag_b = diag_flow(log_b, ...)` (the call form) into `proj-b`.
Both record the state of this git repository (`repos={"code": "."}`, run from the project root).
"""

import json

import mlflow

from flexlock_prefect import diag_flow, locked_flow, storage

CONFIG = {"lr": 0.1, "input_data": "data/train.csv", "save_dir": "runs/${now:%Y%m%d-%H%M%S-%f}"}


def fit(cfg, score: float) -> None:
    rows = storage.read_text(cfg.input_data).splitlines()[1:]
    metrics = {"score": score, "rows": len(rows), "lr": cfg.lr}
    storage.write_atomic(storage.join(cfg.save_dir, "metrics.json"), json.dumps(metrics).encode())


@locked_flow(config=CONFIG, data=["input_data"], repos={"code": "."})
def train_a(cfg) -> None:
    fit(cfg, 0.5)


@locked_flow(config=CONFIG, data=["input_data"], repos={"code": "."})
def train_b(cfg) -> None:
    fit(cfg, 0.7)


@diag_flow(experiment="proj-a")
def diag_a(save_dir: str, run) -> None:
    with open(f"{save_dir}/metrics.json") as handle:  # a local save_dir arrives as a plain path
        mlflow.log_metric("score_a", json.load(handle)["score"])


def log_b(save_dir: str, run) -> None:
    mlflow.log_metric("score_b", json.loads(storage.read_text(storage.join(save_dir, "metrics.json")))["score"])


diag_b = diag_flow(log_b, experiment="proj-b", name="diag-b")
