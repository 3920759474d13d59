"""★ Every MLflow name flexlock-prefect writes or searches on (DESIGN.md §5, §6), in one place.

Users' searches, dashboards and automations filter on these exact names: change one only
through an issue that asks for it.
"""

from __future__ import annotations

# Run tags of every run diag creates.
LOGICAL_RUN_ID = "flexlock.logical_run_id"
"""The save_dir's canonical URL, as it is (for people; searches use the key below)."""
LOGICAL_RUN_KEY = "flexlock.logical_run_key"
"""16 hex of sha256(logical_run_id): what searches filter on, since MLflow filter strings cannot
escape a save_dir that holds both kinds of quote."""
STATUS = "flexlock.status"
ACTIVE = "active"
DEPRECATED = "deprecated"
SUPERSEDES = "flexlock.supersedes_run_id"
SUPERSEDED_BY = "flexlock.superseded_by_run_id"
CHAIN_TAGS = (STATUS, SUPERSEDES, SUPERSEDED_BY)
"""The tags that link the runs of one logical run; reconcile rewrites only these (and the first
line of the run's description, `mlflow.note.content`, which says the status to a person)."""
FINGERPRINT = "flexlock.fingerprint"
LOCK_DIGEST = "flexlock.lock_digest"
"""The digest of the logged run.lock: what `verify` and promotion check the record against."""
DIAG_VERSION = "flexlock.diag_version"
"""Names the diag code that logged the run; a relog with the same lock digest and diag code is skipped."""
LONG_PARAM_PREFIX = "flexlock.long_param."
"""`flexlock.long_param.<param>`: where the full value of a param logged as its digest is."""
SEED_TAG_KEYS = ("project", "env", "model_name", "data_name", "debug", "lifecycle_intent")
"""Config keys copied to run tags of the same name."""

# Sweeps (DESIGN.md §9): a parent run per sweep root, its trials' runs as its children.
STUDY_KEY_HASH = "flexlock.study_key_hash"
"""On a sweep's parent and on its trials' runs: the study key of sweep.lock."""
TRIAL_KEY_HASH = "flexlock.trial_key_hash"
"""On a trial's runs: its key (its run fingerprint)."""
SWEEP = "flexlock.sweep"
"""`true` on a sweep's parent run."""
SWEEP_SPACE = "flexlock.sweep.space"
"""On the parent: the search space as canonical JSON (also in its sweep.lock artifact)."""
SWEEP_ROOT_KEY = "flexlock.sweep_root_key"
"""On a trial's runs: the logical run key of its sweep root, what the parent's adoption searches on."""
BEST_TRIAL_KEY_HASH = "flexlock.best_trial_key_hash"
"""On the parent: the key of the best completed trial by the sweep's metric and mode."""

# Dataset inputs.
INPUT_DIGEST = "flexlock.digest"
"""Input tag with the full `algorithm:digest` (a dataset digest holds 36 characters at most)."""

# Registered model versions (and their MLflow 3 LoggedModels). A version belongs to a logical run
# and a model content (DESIGN.md §6): it carries LOGICAL_RUN_KEY and LOCK_DIGEST too.
MODEL_DIGEST = "flexlock.model_digest"
"""`sha256:<hex>` of the model file's bytes in the save_dir: a relog with the same bytes reuses the version."""
LIFECYCLE = "flexlock.lifecycle"
HISTORY = "flexlock.lifecycle_history"
APPROVED_BY = "flexlock.approved_by"
APPROVED_AT = "flexlock.approved_at"

# MLflow's own system tags that flexlock fills in.
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
"""MLflow's UI nests a run under the run this names: a trial's run under its sweep's active parent."""
MLFLOW_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_SOURCE_NAME = "mlflow.source.name"
MLFLOW_NOTE = "mlflow.note.content"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_GIT_BRANCH = "mlflow.source.git.branch"
MLFLOW_GIT_REPO_URL = "mlflow.source.git.repoURL"
MLFLOW_DATA_CONTEXT = "mlflow.data.context"
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
CLASSIC_RUNS_VIEW = "custom_model_development"
"""The experiment kind that MLflow's UI opens in its runs view (without it: the GenAI view)."""


def is_user_tag(key: str) -> bool:
    """Neither flexlock's nor MLflow's: a tag a person or their body set, carried over by relogs."""
    return not key.startswith(("flexlock.", "mlflow."))
