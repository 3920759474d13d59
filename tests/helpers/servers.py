"""Real servers for integration tests: the library's own loopback server helpers."""

from flexlock_prefect.local import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
