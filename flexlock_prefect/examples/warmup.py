"""Importing this module does, once, the work the example flows would otherwise do in every run.

`flexlock-prefect serve` preloads it into the fork server its flow runs start from
(`flexlock_prefect.warm`), so each diag and main run begins with it done. Measured on the
served example (2 cores, Python 3.11, MLflow 3.17), a diag's first model log in a fresh process
spends about 1.3 s importing skops (MLflow's default safe format for scikit-learn models
computes its trusted types at import), 0.9 s mapping installed packages to modules (MLflow
checks the pinned requirements against the environment), 1 s importing the SQLAlchemy tracking
store and 0.5 s importing IPython (MLflow's run context looks for a notebook). Here they happen
once, in the fork server.

It saves a throwaway model with `mlflow.sklearn.save_model` (MLflow's public API) instead of
calling into MLflow's internals, with the requirements the example diag pins. It resolves no
run context (MLflow would cache the fork server's, without the git state of the runs). It never
lets a failure escape: a preload that raised would stop the serving, while a warm-up that failed
only leaves the runs as slow as before (the failure is logged).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile

logger = logging.getLogger(__name__)


def warm_up() -> None:
    """Import what the example flows use and save one tiny model, in a temporary directory."""
    import matplotlib
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    import flexlock_prefect.examples.train  # noqa: F401 - the flows' own modules
    from flexlock_prefect.examples.diag import model_requirements

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - the train flow's plots
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - a local tracking store
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    with contextlib.suppress(ImportError):
        import IPython  # noqa: F401 - MLflow's run context imports it to look for a notebook
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with tempfile.TemporaryDirectory(prefix="flexlock-warmup-") as directory:
        mlflow.sklearn.save_model(model, f"{directory}/model", pip_requirements=model_requirements())


try:
    warm_up()
except Exception as exc:  # noqa: BLE001 - see the module docstring: slower runs, never failed ones
    logger.warning("warm-up of the example flows failed, their runs start cold: %s", exc)
