"""A sweep's study on the record side: its search space, its trials and their keys.

Pure: no Prefect, no MLflow, nothing written. `plan_study` captures each trial's inputs the way
the locked flow will (`capture` is the flow's own capture) and derives the keys from them:

- `trial_key_hash` (64 hex) is the trial's run fingerprint (`lock.compute_fingerprint`): the
  trial's resolved config (the base config with the trial's values) without save_dir, the
  working-tree hash of each repo, `algorithm:digest` of each data input and the lockfile
  digests. The search space is no part of it: a trial keeps its key, its save_dir
  `<root>/trial-<first 16 hex of its key>` and its result when the space grows, and its
  run.lock's `fingerprint` is its key.
- `study_key_hash` (64 hex) is SHA-256 of the canonical JSON (`lock.canonical_json`) of
  `{"base": BASE, "space": SPACE}`, both recorded in sweep.lock. BASE is what the fingerprint
  hashes (`lock.fingerprint_inputs`: config, repos, data, lockfiles) for the *base point*, the
  point of the space whose canonical JSON sorts first, less the swept keys in `config` and the
  swept data inputs in `data`. SPACE is `Space.canonical()`: a grid's values and a list of points
  are deduplicated and sorted by canonical JSON, so the order of keys and values changes no key;
  random draws are `{distributions, n, seed}`. The sweep root is in neither key, nor is
  anything machine-specific beyond what the fingerprint itself keeps (config values as written).

Both keys hash redacted values (a secret is `<redacted>` in run.lock and sweep.lock alike).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from flexlock_prefect import storage
from flexlock_prefect.exceptions import ConfigError, SweepError
from flexlock_prefect.lock import RunLock, canonical_json, fingerprint_inputs, save_dir_name
from flexlock_prefect.redact import Redactor

logger = logging.getLogger(__name__)

KINDS = {"uniform": 2, "loguniform": 2, "int": 2, "choice": 1}
"""Distribution kind → number of arguments: `(low, high)`, or one list of options for `choice`."""
TRIAL_PREFIX = "trial-"

CaptureInputs = Callable[[Mapping[str, Any]], RunLock]
"""The partial config of one trial (its values and save_dir, nested) → its unsaved record."""


@dataclass(frozen=True)
class Distribution:
    """One key's distribution for random draws: `("loguniform", 1e-4, 1e-1)`, `("int", 2, 8)`
    (both ends included), `("uniform", 0, 1)` or `("choice", ["relu", "tanh"])`."""

    kind: str
    args: tuple[Any, ...]

    @classmethod
    def parse(cls, key: str, spec: Sequence[Any]) -> Distribution:
        listed = isinstance(spec, Sequence) and not isinstance(spec, str) and spec
        if not listed or spec[0] not in KINDS or len(spec) != KINDS[spec[0]] + 1:
            raise SweepError(
                f"the distribution of {key!r} is {spec!r}: write (uniform|loguniform|int, low, high) "
                "or (choice, [options])"
            )
        kind, *args = spec
        if kind == "choice":
            if isinstance(args[0], str) or not isinstance(args[0], Sequence) or not args[0]:
                raise SweepError(f"the choice of {key!r} needs a non-empty list of options")
            return cls(kind, (tuple(args[0]),))
        low, high = args
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in args)
        if not numbers or low > high or (kind == "int" and not all(isinstance(v, int) for v in args)):
            raise SweepError(f"the {kind} distribution of {key!r} needs numbers low <= high, got {low!r}, {high!r}")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"the loguniform distribution of {key!r} needs low > 0, got {low!r}")
        return cls(kind, (low, high))

    def draw(self, u: float) -> Any:
        """The value at `u` in [0, 1). Floats keep 10 significant digits, so that a draw reads
        well and does not hang on a platform's last bit of `exp`."""
        if self.kind == "choice":
            options = self.args[0]
            return options[min(int(u * len(options)), len(options) - 1)]
        low, high = self.args
        if self.kind == "int":
            return min(low + int(u * (high - low + 1)), high)
        if self.kind == "loguniform":
            low, high = math.log(low), math.log(high)
        value = low + (high - low) * u
        return float(f"{math.exp(value) if self.kind == 'loguniform' else value:.10g}")

    def canonical(self) -> list[Any]:
        return [self.kind, list(self.args[0])] if self.kind == "choice" else [self.kind, *self.args]


@dataclass(frozen=True)
class Space:
    """The points a sweep runs: a grid, an explicit list of points, or seeded random draws.

    Build one with `Space.of(grid=…)`, `Space.of(points=…)`, `Space.of(distributions=…, n=…, seed=…)`
    or, for points a sampler asks for, `Space.of(distributions=…, asked_by="optuna")`.
    A point maps dotted config keys to values, e.g. `{"model.C": 0.1, "seed": 0}`.
    """

    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    listed: tuple[dict[str, Any], ...] = ()
    distributions: tuple[tuple[str, Distribution], ...] = ()
    n: int = 0
    seed: int = 0
    asked_by: str = ""

    @classmethod
    def of(
        cls,
        grid: Mapping[str, Sequence[Any]] | None = None,
        points: Sequence[Mapping[str, Any]] | None = None,
        distributions: Mapping[str, Sequence[Any]] | None = None,
        n: int | None = None,
        seed: int = 0,
        asked_by: str | None = None,
    ) -> Space:
        """Exactly one of `grid`, `points` or `distributions` (with `n`, the number of draws, or
        `asked_by`, the sampler that asks for each point)."""
        if sum(given is not None for given in (grid, points, distributions)) != 1:
            raise SweepError("give exactly one search space: a grid, a list of points, or distributions with n")
        named = [*(grid or {}), *(distributions or {}), *(k for p in points or () if isinstance(p, Mapping) for k in p)]
        if not all(isinstance(key, str) for key in named):
            raise SweepError(f"the swept keys must be dotted config keys, got {named!r}")
        if grid is not None:
            for key, values in grid.items():
                if isinstance(values, str) or not isinstance(values, Sequence) or not values:
                    raise SweepError(f"the grid values of {key!r} must be a non-empty list, got {values!r}")
            space = cls(grid=tuple((key, tuple(values)) for key, values in grid.items()))
        elif points is not None:
            if not points or not all(isinstance(p, Mapping) and p for p in points):
                raise SweepError("points must be a non-empty list of non-empty mappings of config keys to values")
            space = cls(listed=tuple(dict(p) for p in points))
        else:
            if not distributions or (not asked_by and (n is None or n < 1)):
                raise SweepError("random draws need distributions and n >= 1, the number of draws")
            parsed = tuple((key, Distribution.parse(key, spec)) for key, spec in sorted(distributions.items()))
            drawn = {"asked_by": asked_by} if asked_by else {"n": n, "seed": seed}
            space = cls(distributions=parsed, **drawn)
        if asked_by and not distributions:
            raise SweepError(f"points asked of {asked_by} need distributions, not a grid or a list of points")
        space._check_keys()
        return space

    @property
    def keys(self) -> tuple[str, ...]:
        """The swept config keys, sorted."""
        if self.grid:
            return tuple(sorted(key for key, _ in self.grid))
        if self.listed:
            return tuple(sorted({key for point in self.listed for key in point}))
        return tuple(key for key, _ in self.distributions)

    def points(self) -> list[dict[str, Any]]:
        """Every point, in the order given (a grid: the product, last key fastest)."""
        if self.grid:
            names = [key for key, _ in self.grid]
            return [dict(zip(names, values, strict=True)) for values in itertools.product(*(v for _, v in self.grid))]
        if self.listed:
            return [dict(point) for point in self.listed]
        if self.asked:
            raise SweepError(f"the points of this space are asked of {self.asked_by} one by one")
        rng = random.Random(self.seed)  # only `random()`: Python keeps its sequence per seed across versions
        return [{key: dist.draw(rng.random()) for key, dist in self.distributions} for _ in range(self.n)]

    def canonical(self) -> dict[str, Any]:
        """The space as hashed in the study key (before redaction): order-free for grids and lists."""
        if self.grid:
            return {"grid": {key: _sorted_unique(values) for key, values in self.grid}}
        if self.listed:
            return {"points": _sorted_unique(self.listed)}
        if self.asked:  # the sampler, its seed and its number of trials name no point: not part of the key
            return {"distributions": {k: d.canonical() for k, d in self.distributions}, "asked_by": self.asked_by}
        return {"distributions": {k: d.canonical() for k, d in self.distributions}, "n": self.n, "seed": self.seed}

    @property
    def asked(self) -> bool:
        """The points come from a sampler (`asked_by`), one at a time, not from the space itself."""
        return bool(self.asked_by)

    def base_point(self) -> dict[str, Any]:
        """A point of the space known before any is asked: each distribution's low end (a
        choice's first option); the study key's base is captured there."""
        return {key: dist.args[0][0] if dist.kind == "choice" else dist.args[0] for key, dist in self.distributions}

    def _check_keys(self) -> None:
        for key in self.keys:
            if not key or key.startswith("+") or key.split(".")[0] == "save_dir":
                raise SweepError(f"cannot sweep {key!r}: give existing config keys; the sweep names each save_dir")
            if any(other.startswith(f"{key}.") for other in self.keys):
                raise SweepError(f"the swept keys {key!r} and the keys below it overlap: sweep one or the other")


@dataclass(frozen=True)
class Trial:
    """One planned trial: its key, its point (dotted keys, as given), the point as recorded
    (`values`: secrets redacted) and its save_dir."""

    key: str
    point: dict[str, Any]
    values: dict[str, Any]
    save_dir: str

    @property
    def name(self) -> str:
        """`trial-<16 hex>`: its save_dir's name, and its flow run's."""
        return save_dir_name(self.save_dir)


@dataclass(frozen=True)
class Study:
    """The planned sweep: keys, the inputs of the study key, and the trials in the space's order."""

    key: str
    base: dict[str, Any]
    space: dict[str, Any]
    trials: tuple[Trial, ...]


def trial_partial(values: Mapping[str, Any], save_dir: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The flow's `config` parameter of a trial: the base partial config with the trial's values
    and save_dir merged in (a local save_dir as a plain path, as the flow's code expects).

    Example:
        >>> trial_partial({"model.C": 0.1}, "file:///runs/trial-ab", {"model": {"max_iter": 9}})
        {'model': {'max_iter': 9, 'C': 0.1}, 'save_dir': '/runs/trial-ab'}
    """
    merged: dict[str, Any] = _deep_copy(base or {})
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    local = storage.local_path(save_dir)
    merged["save_dir"] = local.as_posix() if local else save_dir
    return merged


@dataclass(frozen=True)
class TrialPlanner:
    """Captures a point's inputs as the locked flow will (writing nothing) and keys its trial."""

    root: str
    capture: CaptureInputs
    base_config: Mapping[str, Any]
    redactor: Redactor

    @classmethod
    def of(cls, root: str, capture: CaptureInputs, base_config: Mapping[str, Any] | None = None) -> TrialPlanner:
        return cls(storage.canonical_url(root), capture, base_config or {}, Redactor.from_settings())

    def record(self, point: Mapping[str, Any]) -> RunLock:
        """The unsaved record of the point's run (its save_dir a placeholder: the fingerprint leaves it out)."""
        placeholder = storage.join(self.root, f"{TRIAL_PREFIX}planned")
        try:
            return self.capture(trial_partial(point, placeholder, self.base_config))
        except ConfigError as exc:  # its message blames "the partial config": the point is what set it
            shown = self.redactor.redact(dict(point))
            raise ConfigError(f"the sweep's point {shown} does not fit the config: {exc}") from exc

    def trial(self, point: Mapping[str, Any], record: RunLock | None = None) -> Trial:
        """The trial of `point`: keyed by the fingerprint of its record (captured unless given)."""
        key = (record or self.record(point)).fingerprint
        values = self.redactor.redact(dict(point))
        return Trial(key, dict(point), values, storage.join(self.root, f"{TRIAL_PREFIX}{key[:16]}"))


def plan_study(space: Space, planner: TrialPlanner) -> Study:
    """Capture each point's inputs as `planner` does (writing nothing) and key the study and its trials.

    Points whose inputs are identical (`1` and `1.0` for a float key) are one trial: the first. A
    space asked of a sampler (`Space.asked`) has no trials yet: its base is captured at
    `Space.base_point()`.
    """
    trials: dict[str, Trial] = {}
    records: dict[str, RunLock] = {}
    for point in [] if space.asked else space.points():
        record = planner.record(point)
        if record.fingerprint in trials:
            logger.warning("the point %s has the inputs of %s: one trial", point, trials[record.fingerprint].values)
            continue
        trials[record.fingerprint] = planner.trial(point, record)
        records[canonical_json(point).decode()] = record
    first = records[min(records)] if records else planner.record(space.base_point())
    study_base = base_inputs(first, space.keys)
    study_space = planner.redactor.redact(space.canonical())
    return Study(study_key(study_base, study_space), study_base, study_space, tuple(trials.values()))


def check_overrides(space: Space, overrides: Sequence[str]) -> None:
    """Refuse a base override of a swept key: overrides apply after the trial's values, so every
    trial would get the override's value."""
    for override in overrides:
        key = override.removeprefix("+").split("=", 1)[0]
        clash = next((s for s in space.keys if s == key or s.startswith(f"{key}.") or key.startswith(f"{s}.")), None)
        if clash:
            raise SweepError(f"the override {override!r} sets the swept key {clash!r}: drop it from the overrides")


def base_inputs(lock: RunLock, swept: Sequence[str]) -> dict[str, Any]:
    """The fingerprint inputs of `lock` less the swept config keys and the swept data inputs."""
    inputs = fingerprint_inputs(lock.config, lock.repos, lock.data, lock.env)
    for key in swept:
        *parents, leaf = key.split(".")
        node = inputs["config"]
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
        inputs["data"].pop(key, None)
    return inputs


def study_key(base: Mapping[str, Any], space: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `{"base": base, "space": space}` (see the module docstring)."""
    return hashlib.sha256(canonical_json({"base": base, "space": space})).hexdigest()


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """`model.C=0.1,1,10` → `("model.C", [0.1, 1, 10])`, each value read as an override's would be.

    Example:
        >>> parse_grid_option("act=relu,tanh")
        ('act', ['relu', 'tanh'])
    """
    key, sep, values = text.partition("=")
    if not sep or not key or not values or "" in values.split(","):
        raise SweepError(f"cannot read --grid {text!r}: write KEY=V1,V2,… (the Python API takes values with commas)")
    return key, [_override_value(value) for value in values.split(",")]


def parse_distribution_option(text: str) -> tuple[str, list[Any]]:
    """`lr=loguniform:1e-4:1e-1`, `depth=int:2:8` or `act=choice:relu,tanh` → `(key, spec)`.

    Example:
        >>> parse_distribution_option("lr=loguniform:1e-4:0.1")
        ('lr', ['loguniform', 0.0001, 0.1])
    """
    key, _, spec = text.partition("=")
    kind, _, args = spec.partition(":")
    if kind == "choice" and key and args:
        return key, [kind, [_override_value(value) for value in args.split(",")]]
    bounds = args.split(":")
    if not key or kind not in KINDS or kind == "choice" or len(bounds) != 2:
        raise SweepError(
            f"cannot read --space {text!r}: write KEY=uniform:LOW:HIGH, KEY=loguniform:LOW:HIGH, "
            "KEY=int:LOW:HIGH or KEY=choice:A,B,…"
        )
    return key, [kind, *(_override_value(bound) for bound in bounds)]


def _override_value(text: str) -> Any:
    """A value as an override reads it: `0.1` and `1e-4` are floats, `relu` a string, `null` None."""
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]


def _sorted_unique(values: Sequence[Any]) -> list[Any]:
    unique = {canonical_json(value): value for value in values}
    return [unique[text] for text in sorted(unique)]


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
