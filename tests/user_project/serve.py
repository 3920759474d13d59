"""Serve both pipelines from one process: `python serve.py` (needs PREFECT_API_URL)."""

import prefect
from pipelines import diag_a, diag_b, train_a, train_b

from flexlock_prefect import Pipeline

if __name__ == "__main__":
    prefect.serve(*Pipeline(train_a, diag_a).to_deployments(), *Pipeline(train_b, diag_b).to_deployments())
