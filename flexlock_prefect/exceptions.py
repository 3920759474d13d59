"""The errors flexlock-prefect raises: one base class, one subclass per capability.

Every message says what went wrong, where (file, key, path or URL) and how to fix it, so the
CLI can print it as one line and exit 2 without a traceback.
"""

from __future__ import annotations


class FlexlockError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingsError(FlexlockError):
    """A `FLEXLOCK_*` environment variable holds a value the setting does not accept."""


class ConfigError(FlexlockError):
    """The run configuration cannot be loaded, merged or resolved."""


class GitCaptureError(FlexlockError):
    """The state of a code repository cannot be captured."""


class DataCaptureError(FlexlockError):
    """An input data path cannot be read or hashed."""


class StorageError(FlexlockError):
    """A save_dir or file URL cannot be read or written."""


class StorageNotFound(StorageError):
    """A file or directory does not exist (as opposed to a store that cannot be reached)."""


class RunLockError(FlexlockError):
    """A run.lock is missing, corrupt, of an unknown schema version or inconsistent."""


class TrackingError(FlexlockError):
    """The MLflow tracking server is unreachable or refused a request."""


class SupersessionError(FlexlockError):
    """A logical run's supersession chain cannot be read or repaired."""


class LifecycleError(FlexlockError):
    """A registry move is illegal, or names an unknown model, version or state."""


class LockTimeout(FlexlockError):
    """A lock on a save_dir or model stayed taken for longer than `FLEXLOCK_LOCK_TIMEOUT_S`."""


class PrefectApiError(FlexlockError):
    """The Prefect API is unreachable, refused the credentials, or refused a request."""


class SweepError(FlexlockError):
    """A sweep's search space is invalid, its sweep.lock unreadable, or its trials failed."""


class TrialsFailed(SweepError):
    """A sweep ended Failed: no trial completed, or one failed with `fail_fast`; sweep.lock says why each did."""
