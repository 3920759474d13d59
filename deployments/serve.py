"""Serve the project's deployments from one process: `python deployments/serve.py`.

The same deployments, schedules and triggers as `deployments/prefect.yaml` (both come from
`flexlock_prefect.serving`), for local use without a work pool. Needs a Prefect API
(`PREFECT_API_URL`), such as the one `flexlock-prefect serve` starts.
"""

from pathlib import Path

from flexlock_prefect.serving import serve_project

if __name__ == "__main__":
    serve_project(Path(__file__).resolve().parents[1])
