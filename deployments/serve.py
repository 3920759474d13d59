"""Serve the example pipeline from one process: `python deployments/serve.py`.

The same deployments, schedules and triggers as `deployments/prefect.yaml` (both come from
`flexlock_prefect.serving.example_pipeline`), for local use without a work pool. Needs a Prefect
API (`PREFECT_API_URL`), such as the one `flexlock-prefect serve` starts.
"""

from flexlock_prefect.serving import serve_examples

if __name__ == "__main__":
    serve_examples()
