"""Keeping secrets out of everything flexlock-prefect records: config values and URLs.

Why here and not in one capture module: the same rules protect run.lock (config, git remotes,
data URIs) and, later, MLflow tags and logged tracking URIs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from flexlock_prefect.settings import FlexlockSettings

REDACTED = "<redacted>"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> str:
    """`dbPassword` and `DB-PASSWORD` both become `_db_password_`, for whole-word matching."""
    snake = _CAMEL_BOUNDARY.sub("_", key).lower()
    return f"_{_NON_ALNUM.sub('_', snake).strip('_')}_"


class Redactor:
    """Decides which config keys and values are secret, and replaces them with `<redacted>`.

    Example:
        >>> r = Redactor(key_words=["token"], value_patterns=[])
        >>> r.redact({"hf_token": "abc", "tokenizer": "bert"})
        {'hf_token': '<redacted>', 'tokenizer': 'bert'}
    """

    def __init__(self, key_words: Iterable[str], value_patterns: Iterable[str]) -> None:
        self._key_words = tuple(_words(w) for w in key_words)
        self._value_patterns = tuple(re.compile(p, re.IGNORECASE) for p in value_patterns)

    @classmethod
    def from_settings(cls, settings: FlexlockSettings | None = None) -> Redactor:
        from flexlock_prefect.settings import get_settings

        settings = settings or get_settings()
        return _cached_redactor(tuple(settings.secret_key_words), tuple(settings.secret_value_patterns))

    def is_secret_key(self, key: object) -> bool:
        words = _words(str(key))
        return any(w in words for w in self._key_words)

    def is_secret_value(self, value: object) -> bool:
        return isinstance(value, str) and any(p.search(value) for p in self._value_patterns)

    def redact(self, data: Any) -> Any:
        """A copy of `data` (nested dicts and lists) with secret keys and values replaced."""
        if isinstance(data, Mapping):
            return {k: REDACTED if self.is_secret_key(k) and v is not None else self.redact(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact(v) for v in data]
        return REDACTED if self.is_secret_value(data) else data

    def redact_overrides(self, overrides: Iterable[str]) -> list[str]:
        """Dotlist overrides (`db.password=x`) with secret keys or values redacted."""
        redacted = []
        for override in overrides:
            key, sep, value = override.partition("=")
            secret = any(self.is_secret_key(part) for part in key.split(".")) or self.is_secret_value(value)
            redacted.append(f"{key}{sep}{REDACTED}" if sep and secret else override)
        return redacted

    def secret_values(self, data: Any) -> set[str]:
        """The string values held under secret keys, to scrub from free text such as error messages."""
        found: set[str] = set()
        if isinstance(data, Mapping):
            for key, value in data.items():
                if self.is_secret_key(key) and isinstance(value, str | int) and len(str(value)) >= 4:
                    found.add(str(value))
                else:
                    found |= self.secret_values(value)
        elif isinstance(data, list | tuple):
            for value in data:
                found |= self.secret_values(value)
        return found

    def scrub(self, text: str, known_secrets: Iterable[str] = ()) -> str:
        """Free text with credential-looking spans and the given secret values replaced."""
        for secret in sorted(known_secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        for pattern in self._value_patterns:
            text = pattern.sub(REDACTED, text)
        return text


@lru_cache(maxsize=8)
def _cached_redactor(key_words: tuple[str, ...], value_patterns: tuple[str, ...]) -> Redactor:
    return Redactor(key_words, value_patterns)


def strip_url_credentials(url: str) -> str:
    """The URL without its user information, for recording remotes and endpoints.

    HTTP(S) URLs lose the whole user part, since tokens are often passed as the user name
    (`https://<token>@github.com/...`). Other schemes (`ssh://git@host/...`) keep the user name,
    which is not a secret there, and lose only a password. scp-like git remotes
    (`git@github.com:org/repo.git`) carry no password and are returned as they are.

    Example:
        >>> strip_url_credentials("https://user:hunter2@example.com/repo.git")
        'https://example.com/repo.git'
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    keep_user = parts.scheme not in {"http", "https"}
    netloc = f"{user}@{host}" if keep_user and user else host
    return urlunsplit(parts._replace(netloc=netloc))
