"""Serve both pipelines from one process: `python serve.py` (needs PREFECT_API_URL)."""

from pipelines import diag_a, diag_b, train_a, train_b

from flexlock_prefect import Pipeline
from flexlock_prefect.pipeline import serve_pipelines

if __name__ == "__main__":
    serve_pipelines(Pipeline(train_a, diag_a), Pipeline(train_b, diag_b))
