"""Entrypoint of the project's example main flow (`flexlock_prefect.examples.train`).

`python flows/train.py model.C=0.5` runs it with overrides.
"""

import sys

from flexlock_prefect.examples.train import train

__all__ = ["train"]

if __name__ == "__main__":
    print(train(overrides=sys.argv[1:]))
