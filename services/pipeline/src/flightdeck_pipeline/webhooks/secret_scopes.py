"""Webhook secrets and the repositories each may write.

``FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS`` is comma-separated; each entry is either a
secret alone (it may write any repository, as before) or ``secret@pattern|pattern...``
where a pattern is ``owner/repository`` or ``owner/*`` (matched case-insensitively, as
GitHub matches names). A secret may therefore not contain ``@``, ``,`` or ``|``; what
cannot be read unambiguously (an empty or malformed pattern, a secret listed twice) is
refused at startup with the entry's position (never its value).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode

SETTING = "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"
_NAME = r"[A-Za-z0-9_.-]+"
REPOSITORY_PATTERN = re.compile(rf"^{_NAME}/(\*|{_NAME})$")
FULL_NAME = re.compile(rf"^{_NAME}/{_NAME}$")


class WebhookSecret(SecretStr):
    """A webhook secret and the repository patterns it may write (None: any repository)."""

    def __init__(self, secret_value: str, repositories: tuple[str, ...] | None = None) -> None:
        super().__init__(secret_value)
        self.repositories = repositories

    def may_write(self, full_name: str) -> bool:
        """Whether a delivery signed with this secret may write ``full_name``."""
        if self.repositories is None:
            return True
        if not FULL_NAME.match(full_name):
            return False
        name = full_name.casefold()
        owner = name.split("/", 1)[0]
        for pattern in self.repositories:
            pattern_owner, pattern_repository = pattern.casefold().split("/", 1)
            if pattern_repository == "*" and pattern_owner == owner:
                return True
            if pattern.casefold() == name:
                return True
        return False


def parse_webhook_secrets(value: Any) -> Any:
    """``"s1@org-a/*|org-b/x, s2"`` -> WebhookSecrets; raises ValueError on ambiguity."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, Sequence) or isinstance(value, bytes):
        return value
    secrets: list[WebhookSecret] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(value, start=1):
        secret = _entry(entry, index)
        earlier = seen.setdefault(secret.get_secret_value(), index)
        if earlier != index:
            raise ValueError(f"{SETTING}: entry {index} repeats the secret of entry {earlier}")
        secrets.append(secret)
    return secrets


def _entry(entry: Any, index: int) -> WebhookSecret:
    if isinstance(entry, WebhookSecret):
        return entry
    text = entry.get_secret_value() if isinstance(entry, SecretStr) else str(entry)
    secret, scoped, scope = text.strip().partition("@")
    secret = secret.strip()
    if not secret:
        raise ValueError(f"{SETTING}: entry {index} has no secret before '@'")
    if not scoped:
        return WebhookSecret(secret)
    patterns = tuple(part.strip() for part in scope.split("|"))
    if not patterns or not all(REPOSITORY_PATTERN.match(p) for p in patterns):
        raise ValueError(
            f"{SETTING}: in entry {index}, what follows '@' is not a '|'-separated list of "
            "owner/repository or owner/* patterns (a secret may not contain '@')"
        )
    return WebhookSecret(secret, patterns)


# The settings field: read from the environment as the comma-separated list above.
WebhookSecrets = Annotated[list[WebhookSecret], NoDecode, BeforeValidator(parse_webhook_secrets)]
