"""One exception tree for the whole project; each class is also a built-in."""


class QrgateError(Exception):
    """Base of every error this project raises on purpose."""


class UserError(QrgateError, ValueError):
    """Something the person at the keyboard can fix: bad argument, bad config value."""


class ConfigError(UserError):
    """A configuration file is missing, unreadable or holds a value out of range.

    The message always names the file, the section and the key.
    """


class DriverError(QrgateError, OSError):
    """A hardware or OS resource failed; the message names the device path or address."""


class DriverUnavailable(QrgateError, ImportError):
    """A driver's library is not installed on this machine (e.g. picamera2 off the Pi).

    Not a DriverError: OSError and ImportError cannot share a subclass in CPython.
    """


class RecordError(QrgateError, ValueError):
    """A record or MQTT message failed validation; ``reason`` is a closed code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
