"""Sending one-time codes by SMS: a small port, and a development sender that keeps them.

A real deployment plugs in its carrier's gateway by adding a class with ``send`` and
registering it in ``SENDERS``; the server only ever calls ``send(phone, text)``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from qrgate.errors import ConfigError

logger = logging.getLogger(__name__)


class SmsSender(Protocol):
    """Delivers one text message to one phone number (national form, ``0912486419``).

    Must not raise for a number it cannot reach: it logs and returns, so a failing
    gateway cannot tell a caller which numbers exist. Must return quickly; a slow
    gateway belongs behind a queue in the implementation.
    """

    def send(self, phone: str, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SentMessage:
    phone: str
    text: str
    sent_at: float


class DevSmsSender:
    """Development sender: writes each message to the log and keeps the last ones in
    memory for the operator's page (``/operator/sms``). Never use it in production:
    anyone who can read the log can log in as anyone."""

    def __init__(self, keep: int = 200):
        self._lock = threading.Lock()
        self._messages: collections.deque[SentMessage] = collections.deque(maxlen=keep)

    def send(self, phone: str, text: str) -> None:
        logger.warning("development SMS to %s: %s", phone, text)
        with self._lock:
            self._messages.append(SentMessage(phone, text, time.time()))

    @property
    def outbox(self) -> list[SentMessage]:
        """Messages sent so far, newest first."""
        with self._lock:
            return list(reversed(self._messages))

    def last_text_to(self, phone: str) -> str | None:
        for message in self.outbox:
            if message.phone == phone:
                return message.text
        return None


SENDERS = {"dev": DevSmsSender}


def create_sender(name: str) -> SmsSender:
    """The sender registered under ``name`` (config ``[auth] sms_sender``)."""
    try:
        return SENDERS[name]()
    except KeyError:
        raise ConfigError(f"unknown SMS sender {name!r}; known: {', '.join(sorted(SENDERS))}") from None
