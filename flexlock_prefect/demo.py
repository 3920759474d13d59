"""The example behind `flexlock-prefect demo`: the example main flow `flows/train.py:train`, run once.

Everything the demo writes lives under one root directory (default `./flexlock-demo`): the example
dataset and the run's save_dir. Prefect runs the flow against `PREFECT_API_URL` when it is set,
else against a temporary local server that Prefect starts and stops by itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from flexlock_prefect.exceptions import FlexlockError

EXAMPLE_FLOW_FILE = "flows/train.py"


def project_root() -> Path:
    """The checkout that holds `flows/` (the demo runs the example flows of the project)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / EXAMPLE_FLOW_FILE).is_file():
        raise FlexlockError(
            f"the example flows are not at {root / 'flows'}: run the demo from a checkout of "
            "flexlock-prefect installed with `pip install -e '.[examples]'`"
        )
    return root


def load_flow_module(relative_path: str = EXAMPLE_FLOW_FILE) -> ModuleType:
    """A file of the project's `flows/` as a module, e.g. `flows/train.py` with `train` and
    `prepare_example_data`."""
    module_name = "flexlock_example_" + Path(relative_path).stem
    spec = importlib.util.spec_from_file_location(module_name, project_root() / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_demo(root: str | Path = "flexlock-demo") -> str:
    """Run the example main flow once with its data and save_dir under `root`; returns the save_dir."""
    root = Path(root).resolve()
    example = load_flow_module()
    data = example.prepare_example_data(root / "data" / "breast_cancer.csv")
    return example.train(overrides=[f"input_data={data}", f"save_dir={root}/runs/train-${{now:%Y%m%d-%H%M%S-%f}}"])
