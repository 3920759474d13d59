"""Entrypoint of the project's example diag flow (`flexlock_prefect.examples.diag`).

`python flows/diag.py SAVE_DIR` logs one save_dir to MLflow.
"""

import sys

from flexlock_prefect.examples.diag import diag

__all__ = ["diag"]

if __name__ == "__main__":
    print(diag(save_dir=sys.argv[1]))
