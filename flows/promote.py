"""The approval-gated promotion flow, for the `promote` deployment (run by hand or from the CLI).

See `flexlock_prefect.promote`: automatic checks, an evidence report, a reviewer's decision
through Prefect's pause/resume, then the move through the registry aliases.
"""

from flexlock_prefect.promote import promote

__all__ = ["promote"]
