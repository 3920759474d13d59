"""The example behind `flexlock-prefect demo`: a small dataset, a config, and a captured run.

Everything lives under one root directory (default `./flexlock-demo`), so the demo needs no
server and leaves nothing elsewhere. The code state recorded is that of the current directory's
git repository, when there is one.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from flexlock_prefect.capture import capture_run
from flexlock_prefect.settings import get_settings

DEMO_CONFIG = {
    "project": "flexlock-demo",
    "model": {"name": "ridge", "alpha": 0.5},
    "train": {"epochs": 3, "seed": 0},
    "input_data": "data/points.csv",
    "save_dir": "runs/${now:%Y%m%d-%H%M%S-%f}",
}


def write_example(root: Path) -> Path:
    """Write the example dataset and config under `root` (idempotent); returns the config path."""
    data = root / "data" / "points.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        rows = ["x,y"] + [f"{x},{2 * x + rng.gauss(0, 0.1):.4f}" for x in range(200)]
        data.write_text("\n".join(rows) + "\n")
    config = root / "config.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(DEMO_CONFIG, sort_keys=False))
    return config


def run_demo(root: str | Path = "flexlock-demo") -> str:
    """Capture and save the record of one example run; returns its save_dir URL."""
    root = Path(root).resolve()
    config_path = write_example(root)
    settings = get_settings().model_copy(update={"git_optional": True})
    overrides = [f"input_data={root / 'data' / 'points.csv'}"]
    config = yaml.safe_load(config_path.read_text())
    config["save_dir"] = str(root / config["save_dir"])
    _, lock = capture_run(config, overrides=overrides, data=["input_data"], repos={"code": "."}, settings=settings)
    lock.save()
    return lock.logical_run_id
