"""Redaction: secret-looking keys and credential-looking values never reach a record."""

from __future__ import annotations

import pytest

from flexlock_prefect.redact import REDACTED, Redactor, strip_url_credentials


@pytest.fixture
def redactor() -> Redactor:
    return Redactor.from_settings()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "dbPassword",
        "HF_TOKEN",
        "api_key",
        "apiKey",
        "AWS_SECRET_ACCESS_KEY",
        "credentials",
        "private_key",
        "auth",
    ],
)
def test_keys_that_name_a_secret_as_a_whole_word_are_secret(redactor: Redactor, key: str) -> None:
    assert redactor.is_secret_key(key)


@pytest.mark.parametrize("key", ["tokenizer", "max_tokens", "author", "secretary_count", "lr", "passwords_file_count"])
def test_keys_that_merely_contain_a_secret_word_are_not_secret(redactor: Redactor, key: str) -> None:
    assert not redactor.is_secret_key(key)


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://admin:hunter2@db.internal:5432/prod",
        "see https://user:pa55@example.com/x",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_" + "a" * 36,
        "-----BEGIN RSA PRIVATE KEY-----\nabc",
    ],
)
def test_values_that_look_like_credentials_are_redacted_whole(redactor: Redactor, value: str) -> None:
    assert redactor.redact({"where": value}) == {"where": REDACTED}


def test_redaction_walks_nested_mappings_and_lists_and_keeps_the_rest(redactor: Redactor) -> None:
    data = {"a": [{"token": "t"}, "https://host/path"], "b": {"secret": None, "n": 3}}
    assert redactor.redact(data) == {"a": [{"token": REDACTED}, "https://host/path"], "b": {"secret": None, "n": 3}}


def test_key_words_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXLOCK_SECRET_KEY_WORDS", '["wandb_key"]')
    assert Redactor.from_settings().is_secret_key("WANDB_KEY")
    assert not Redactor.from_settings().is_secret_key("password")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:s3cr3t@example.com/r.git", "https://example.com/r.git"),
        ("https://ghp_abcdef@github.com/o/r.git", "https://github.com/o/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://example.com/r.git", "https://example.com/r.git"),
    ],
)
def test_url_credentials_are_stripped(url: str, expected: str) -> None:
    assert strip_url_credentials(url) == expected


@pytest.mark.timeout(10)
def test_long_values_are_scanned_in_linear_time(redactor: Redactor) -> None:
    blob = "x" * 1_000_000
    assert redactor.redact({"blob": blob, "url": "a" * 100_000 + "://u:p@h"}) == {"blob": blob, "url": REDACTED}
