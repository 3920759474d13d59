"""The software environment: interpreter, platform, installed distributions, lockfile digests."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from flexlock_prefect.capture.facet import Capture, Facet
from flexlock_prefect.lock import EnvState

LOCKFILE_PATTERNS = (
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "Pipfile.lock",
    "requirements*.txt",
    "pixi.lock",
    "environment.yml",
    "environment.yaml",
    "conda-lock.yml",
)


def capture_env(roots: Mapping[str, str | Path] | None = None) -> EnvState:
    """Python, platform and packages of this process; SHA-256 of lockfiles at each repo root.

    Lockfiles are keyed `<repo name>/<file name>` so the keys are the same on every machine.

    Example:
        >>> capture_env({"code": "."}).lockfiles  # doctest: +SKIP
        {'code/uv.lock': '3f2a...'}
    """
    return EnvState(
        python=platform.python_version(),
        platform=platform.platform(),
        packages=installed_packages(),
        lockfiles=lockfile_digests(roots or {}),
    )


def _collect(capture: Capture) -> None:
    capture.sections["env"] = capture_env({name: state.path for name, state in capture.sections["repos"].items()})


FACET = Facet("capture-environment", _collect)
"""The interpreter and packages of this process, and lockfiles at the root of each captured repo."""


def installed_packages() -> dict[str, str]:
    """Normalised distribution name (PEP 503) → version, for everything importable here.

    Reading every distribution's metadata takes ~150 ms for 200 packages, so the answer is kept
    per process and read again only when a `sys.path` directory changed (an install or an
    uninstall rewrites site-packages).
    """
    return dict(_packages(_import_path_state()))


def _import_path_state() -> tuple[tuple[str, int], ...]:
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


@lru_cache(maxsize=4)
def _packages(path_state: tuple[tuple[str, int], ...]) -> tuple[tuple[str, str], ...]:
    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    return tuple(sorted(packages.items()))


def lockfile_digests(roots: Mapping[str, str | Path]) -> dict[str, str]:
    digests = {}
    for name, root in roots.items():
        for pattern in LOCKFILE_PATTERNS:
            for path in sorted(Path(root).glob(pattern)):
                if path.is_file():
                    digests[f"{name}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(digests.items()))
