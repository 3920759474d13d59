"""The example pipeline's deployments: what `flexlock-prefect demo` and `serve` run.

`python -m flexlock_prefect.serving [--cold]` serves them from one process (the demo starts it so);
`deployments/prefect.yaml` declares the same for `prefect deploy` to a process work pool and is
written by `write_project_yaml` (a test checks it is up to date). Both come from
`example_pipeline()`, a `Pipeline` like any user's.
"""

from __future__ import annotations

from pathlib import Path

from flexlock_prefect.pipeline import Pipeline, write_prefect_yaml

TRAIN_CRON = "0 2 * * *"
WORK_POOL = "flexlock-process"
EXAMPLE_PRELOAD = ("flexlock_prefect.examples.warmup",)
"""Preloaded into the fork server of warm flow runs: it does once what each example run would."""
PROJECT_YAML_HEADER = """\
# The example pipeline's deployments, for a `process` work pool. From the project root:
#   prefect work-pool create flexlock-process --type process
#   prefect work-queue create diag --pool flexlock-process --priority 1
#   prefect deploy --prefect-file deployments/prefect.yaml --all
#   prefect worker start --pool flexlock-process
# Main runs go to the pool's default queue; diag, relog-all, promote and registry-audit to the
# `diag` queue, which workers serve first: a finished run is logged before another main run
# starts, instead of waiting behind a whole burst of main runs.
# Written by `python -m flexlock_prefect.serving --write-yaml deployments/prefect.yaml` from
# flexlock_prefect.serving.example_pipeline(); a test checks it is up to date.
"""


def example_pipeline() -> Pipeline:
    """The bundled example: `examples.train` nightly, `examples.diag` on its completed runs,
    promotion and the daily registry audit."""
    from flexlock_prefect.examples.diag import diag
    from flexlock_prefect.examples.train import train

    return Pipeline(main=train, diag=diag, promote=True, cron=TRAIN_CRON)


def write_project_yaml(path: str | Path, project_root: str | Path) -> Path:
    return write_prefect_yaml(
        [example_pipeline()], path, WORK_POOL, project_root, header=PROJECT_YAML_HEADER, name="flexlock-prefect"
    )


def serve_examples(queue: str | None = None, limit: int | None = None, warm: bool = True) -> None:
    """Serve the example pipeline until interrupted (Ctrl-C stops the runner and its flow runs),
    its flow runs forked from a process that imported what they use (`flexlock_prefect.warm`),
    or, with `warm=False`, each in a new interpreter that loads the code anew (`prefect.serve`).

    `queue` serves only that work queue's deployments (`serve_pipelines`: such a runner runs
    beside the pool's workers or its own replicas, so stopping it pauses no schedule). `limit`
    caps the flow runs it runs at once.
    """
    example_pipeline().serve(
        warm=warm,
        preload=EXAMPLE_PRELOAD,
        queue=queue,
        limit=limit,
        print_starting_message=True,
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write-yaml"]:
        print(write_project_yaml(sys.argv[2], Path.cwd()))
    else:
        serve_examples(warm=sys.argv[1:2] != ["--cold"])
