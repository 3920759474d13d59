"""The MLflow side: how run records appear in MLflow, logical-run supersession, relog and
reconcile, the default diag body, the registry lifecycle and its audit.

It knows MLflow and never Prefect: wherever work must be serialised across processes, the lock
is passed in (`serialize=`, see `locking.py`), and the Prefect side passes its global
concurrency limits. The modules:

- `tags`: every contract tag name (DESIGN.md §5, §6);
- `client`: the checked client (health check, bounded retries), batching;
- `errors`: what an MLflow error means, for runs and the registry, without credentials;
- `record`: a run.lock as params, tags, dataset inputs and the run.lock artifact;
- `supersede`: one relog as a new run that supersedes the active one, `mlflowlink`, chain repair;
- `relog`: relogging many save_dirs, skipping unchanged ones, and `reconcile`;
- `outcomes`: what those batches report per item, failures included;
- `outputs`: the default diag body (metrics.json and the files a person looks at);
- `registration`: one registered version per logical run and model content (`register_model`);
- `lifecycle`: what a version's lifecycle history says (its state, the alias holders, the table in
  its description);
- `model_state`: what a registered model is now (its aliases, its versions' tags), read for the
  moves, the audit and the trace, with the registry's error meanings;
- `registry`: the lifecycle of registered versions over aliases;
- `audit`: whether aliases, lifecycle tags and approvals agree with the histories, and repair.
"""

from __future__ import annotations

from flexlock_prefect.tracking.outcomes import ReconcileOutcome, RelogOutcome
from flexlock_prefect.tracking.relog import reconcile, relog
from flexlock_prefect.tracking.supersede import Repair, mlflowlink

__all__ = ["ReconcileOutcome", "RelogOutcome", "Repair", "mlflowlink", "reconcile", "relog"]
