"""Serve pipeline A's `diag` queue warm beside the work pool's workers: `python serve_diag.py`.

Run it after `prefect deploy --all` of the prefect.yaml that `flexlock-prefect init --main
pipelines.py:train_a --diag pipelines.py:diag_a` wrote (the same pipeline: promotion included):
it takes the diag queue's deployments over from the pool, and the main runs stay on the workers.
"""

from pipelines import diag_a, train_a

from flexlock_prefect import Pipeline
from flexlock_prefect.pipeline import serve_pipelines

if __name__ == "__main__":
    serve_pipelines(Pipeline(train_a, diag_a, promote=True), queue="diag")
