"""The installed distribution's version: the one source for `__version__` and the diag code version."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("flexlock-prefect")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
