"""Sending one-time codes by SMS: a small port, and a development sender that keeps them.

A real deployment plugs in its carrier's gateway by adding a class with ``send`` and
registering it in ``SENDERS``; the server only ever calls ``send(phone, text)``.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import unicodedata
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


# What a name in a message may keep: letters (with their marks), digits, spaces and a
# little punctuation. No ":", "/", "@", quotes or brackets: nothing to build a link or to
# close the quotes the name is shown in.
_KEPT_PUNCTUATION = frozenset(" -,.'&()#+!?")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})  # dots a phone may read as one
# A token a phone would turn into a link (a host name: "evil.vn", "EVIL.COM", "www"), or
# a phone number to call (seven digits or more, spaced or not).
_LINK_LIKE = re.compile(r"(?i)^www$|[^\W_]\.[a-z]{2,}|^(?:https?|ftp|zalo|tel|sms)$")
_LONG_NUMBER = re.compile(r"\d(?:[ .-]?\d){6,}")
QUOTED_NAME_MAX = 40


def quoted_name(text: str, limit: int = QUOTED_NAME_MAX) -> str:
    """A name people typed (a venue's), made fit for a text message the system sends:
    at most ``limit`` characters, no control or invisible characters, no link, host
    name or phone number, between «». An SMS from the service is trusted by whoever
    gets it; what an account typed must not read as the service's own words."""
    text = unicodedata.normalize("NFKC", str(text or "")).translate(_DOTS)
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        kept.append(ch if category[0] in "LMN" or ch in _KEPT_PUNCTUATION else " ")
    text = _LONG_NUMBER.sub(" … ", "".join(kept))
    words = ["…" if _LINK_LIKE.search(word) else word for word in text.split()]
    text = " ".join(w for i, w in enumerate(words) if not (w == "…" and i and words[i - 1] == "…"))
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return f"«{text}»"


SENDERS = {"dev": DevSmsSender}


def create_sender(name: str) -> SmsSender:
    """The sender registered under ``name`` (config ``[auth] sms_sender``)."""
    try:
        return SENDERS[name]()
    except KeyError:
        raise ConfigError(f"unknown SMS sender {name!r}; known: {', '.join(sorted(SENDERS))}") from None
