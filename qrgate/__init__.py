"""QR gate: shared pieces of the station and the server (protocol, errors, CLI base)."""

__version__ = "0.1.0"
