"""Example main flow: train a scikit-learn classifier and leave a self-describing run directory.

The dataset (breast cancer, 569 samples) ships with scikit-learn as a CSV file, so nothing is
downloaded or written: the default `input_data` is that file, inside the installed scikit-learn,
and the run record hashes it like any user data (`prepare_example_data` copies it elsewhere, e.g.
to S3 or a test's directory).

It records the code of flexlock-prefect's git checkout when it runs from one, and no code state
when installed from a wheel (there is no repository to record).

Run it with `python -m flexlock_prefect.examples.train [overrides…]`, e.g. `… model.C=0.5`
(`python flows/train.py …` in a checkout).
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from flexlock_prefect import locked_flow, storage

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when this is a checkout
CODE_REPOS = {"code": str(CHECKOUT)} if (CHECKOUT / ".git").exists() else {}


def _bundled_dataset() -> Path:
    """scikit-learn's own copy of the dataset: a header line, then 30 features and the target per row.

    Found without importing scikit-learn, which costs about a second.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return Path("breast_cancer.csv")  # scikit-learn missing: the flow says so when it runs
    return Path(spec.submodule_search_locations[0], "datasets", "data", "breast_cancer.csv")


EXAMPLE_DATA = _bundled_dataset()


@dataclass
class ModelConfig:
    C: float = 1.0
    max_iter: int = 500


@dataclass
class TrainConfig:
    project: str = "flexlock-demo"
    model_name: str = "breast-cancer-classifier"
    model: ModelConfig = field(default_factory=ModelConfig)
    test_size: float = 0.25
    seed: int = 0
    input_data: str = str(EXAMPLE_DATA)
    save_dir: str = "flexlock-demo/runs/train-${now:%Y%m%d-%H%M%S-%f}"


def prepare_example_data(path: str | Path) -> Path:
    """A copy of the bundled dataset at `path` (once; later calls keep it)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE_DATA, path)
    return path


@locked_flow(config=TrainConfig, data=["input_data"], repos=CODE_REPOS, log_prints=True)
def train(cfg) -> None:
    """Fit a scaled logistic regression; write model.pkl, metrics.json and roc.png to save_dir.

    Data and save_dir may be local paths or `s3://` URLs: both go through `flexlock_prefect.storage`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import RocCurveDisplay, accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = np.loadtxt(io.BytesIO(storage.read_bytes(storage.canonical_url(cfg.input_data))), delimiter=",", skiprows=1)
    features, target = table[:, :-1], table[:, -1].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=cfg.test_size, random_state=cfg.seed, stratify=target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.model.C, max_iter=cfg.model.max_iter))
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_test)[:, 1]
    predictions = (scores >= 0.5).astype(int)
    metrics = {
        "accuracy": accuracy_score(y_test, predictions),
        "f1": f1_score(y_test, predictions),
        "roc_auc": roc_auc_score(y_test, scores),
    }

    save_dir = storage.canonical_url(cfg.save_dir)
    plot = io.BytesIO()
    RocCurveDisplay.from_predictions(y_test, scores, name=cfg.model_name)
    plt.savefig(plot, format="png", dpi=80)
    plt.close("all")
    for name, content in (
        ("model.pkl", pickle.dumps(model)),
        ("metrics.json", (json.dumps(metrics, indent=2) + "\n").encode()),
        ("roc.png", plot.getvalue()),
    ):
        storage.write_atomic(storage.join(save_dir, name), content)
    print(f"accuracy {metrics['accuracy']:.3f}, roc_auc {metrics['roc_auc']:.3f}")


if __name__ == "__main__":
    print(train(overrides=sys.argv[1:]))
