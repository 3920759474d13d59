"""Entrypoint of the registry audit (`flexlock_prefect.audit.registry_audit`), run daily by the
`registry-audit` deployment.

`python flows/registry_audit.py [MODEL …]` audits the named models (default: every model
flexlock manages) and publishes the findings as an artifact.
"""

import sys

from flexlock_prefect.audit import registry_audit

__all__ = ["registry_audit"]

if __name__ == "__main__":
    print(registry_audit(models=sys.argv[1:] or None))
