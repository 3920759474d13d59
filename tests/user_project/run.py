"""Run one main flow by hand: `python run.py train_a save_dir=/somewhere/a [lr=0.2 ...]`.

The last line printed is JSON: the save_dir, and where flexlock_prefect was imported from.
"""

import json
import sys

import pipelines

import flexlock_prefect

if __name__ == "__main__":
    save_dir = getattr(pipelines, sys.argv[1])(overrides=sys.argv[2:])
    print(json.dumps({"save_dir": save_dir, "flexlock_prefect": flexlock_prefect.__file__}))
