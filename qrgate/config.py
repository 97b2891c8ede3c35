"""TOML configuration into frozen dataclasses, checked once at start.

Each section is a dataclass; a field's metadata may carry ``min``, ``max`` and
``choices``. Unknown keys are typos and refused; every message names the file, the
section and the key, and the allowed range.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from qrgate.errors import ConfigError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, *, min=None, max=None, choices=None, help=""):
    """A dataclass field with the checks the loader applies."""
    meta = {"min": min, "max": max, "choices": choices, "help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _accepts(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def load_section(data: dict[str, Any], section: str, cls: type[T], source: str | Path) -> T:
    """Build ``cls`` from ``data[section]`` (missing section = all defaults)."""
    raw = data.get(section, {})
    where = f"{source}: section [{section}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{where}: option {key!r} is not valid (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: option {name!r} is required")
            continue
        value = raw[name]
        hint = hints[name]
        if not _accepts(value, hint):
            raise ConfigError(f"{where}: option {name!r} must be {getattr(hint, '__name__', hint)}, got {value!r}")
        meta = f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ConfigError(f"{where}: option {name!r} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(f"{where}: option {name!r} must be at least {meta['min']}, got {value!r}")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(f"{where}: option {name!r} must be at most {meta['max']}, got {value!r}")
        if hint is float:
            value = float(value)
        if typing.get_origin(hint) is tuple:
            value = tuple(value)
        values[name] = value
    return cls(**values)


def check_sections(data: dict[str, Any], known: typing.Iterable[str], source: str | Path) -> None:
    known = list(known)
    for section in data:
        if section not in known:
            raise ConfigError(f"{source}: section [{section}] is not valid (known: {', '.join(known)})")


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker: shared by station and server configs."""

    host: str = option("127.0.0.1")
    port: int = option(8883, min=1, max=65535)
    tls: bool = option(True)
    ca_file: str = option("")  # CA bundle that signed the broker's certificate
    username: str = option("")
    password_file: str = option("")  # a file holding only the password (0600)
    keepalive: int = option(30, min=5, max=600)

    def password(self, base: Path) -> str | None:
        if not self.password_file:
            return None
        path = resolve(base, self.password_file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt password_file {path}: {exc.strerror}") from None


def resolve(base: Path, value: str) -> Path:
    """Paths in a config file are relative to the file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)
