"""The server's configuration file (server.toml), checked once at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from qrgate.config import MqttSettings, check_sections, load_section, option, read_toml, resolve
from qrgate.errors import ConfigError


@dataclass(frozen=True)
class ServerSection:
    data_dir: str = option("data")  # database and the pass-signing key live here
    # Check-ins in PostgreSQL: "postgresql://user@host/db" (docs/postgresql.md); empty keeps
    # everything in the SQLite file under data_dir.
    database: str = option("")


@dataclass(frozen=True)
class WebSection:
    host: str = option("127.0.0.1")
    port: int = option(8080, min=1, max=65535)
    enabled: bool = option(True)
    timezone: str = option("Asia/Ho_Chi_Minh")  # times on pages are shown in this zone
    # The address printed in posters' QR codes (e.g. "https://qr.example.vn"); empty:
    # the address the browser used, which is only right when that is the public one.
    public_url: str = option("")
    # The old three-level areas file used before the 2025 map; empty: the bundled legacy sample.
    areas_file: str = option("")
    # Anonymous visitors see the latest masked check-ins of every venue at / and
    # /api/checkins. Keep false in production; true suits a single-venue demo.
    public_feed: bool = option(False)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: addresses or
    # networks ("127.0.0.1", "10.0.0.0/24"). Empty: no such header is believed, and every
    # per-address limit and audit entry uses the connecting address (docs/security.md).
    trusted_proxies: tuple[str, ...] = option(())


@dataclass(frozen=True)
class AuthSection:
    sms_sender: str = option("dev", choices=("dev",))  # "dev": codes go to the log and /operator/sms
    code_ttl_s: int = option(300, min=60, max=900)
    session_hours: int = option(12, min=1, max=24 * 30)
    cookie_secure: bool = option(False)  # true behind HTTPS: cookies never travel in clear text


@dataclass(frozen=True)
class BrokerSection:
    """The broker as stations see it, and its files (for enrolment and retirement)."""

    files_dir: str = option("")  # the folder `qrgate-provision broker` wrote; "" = no enrolment
    public_host: str = option("")  # host name stations connect to; "" = [mqtt] host
    public_port: int = option(0, min=0, max=65535)  # 0 = [mqtt] port


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ReportsSection:
    """When the weekly report of every venue is made (in [web] timezone)."""

    enabled: bool = option(True)
    weekday: str = option("fri", choices=WEEKDAYS)  # Bac Kan: reports are due every Friday before 16:00
    hour: int = option(15, min=0, max=23)
    minute: int = option(0, min=0, max=59)


@dataclass(frozen=True)
class RetentionSection:
    """Check-ins older than ``days`` days are deleted once a day at ``hour``.

    30 days unless the deployment writes another number: keeping personal data longer is
    a decision to take and write down (docs/security.md), not a default. 0 keeps
    check-ins for ever.
    """

    days: int = option(30, min=0, max=3650)
    hour: int = option(3, min=0, max=23)


MAIL_SECURITY = ("starttls", "tls", "none")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class MailSection:
    """The SMTP server the weekly reports are e-mailed through (docs/reports.md, "E-mail").

    An empty ``host`` sends no e-mail: the reports are still made and kept on the server.
    ``security``: "starttls" (port 587, the usual submission port), "tls" (implicit TLS,
    port 465) or "none", which only a relay on this machine may use (localhost). The
    server's certificate is always checked, against ``ca_file`` when it is set.
    """

    host: str = option("")
    port: int = option(587, min=1, max=65535)
    security: str = option("starttls", choices=MAIL_SECURITY)
    user: str = option("")  # empty: no login
    password_file: str = option("")  # a file holding only the password (0600), beside server.toml
    from_address: str = option("")  # e.g. "QR gate <baocao@example.vn>"
    ca_file: str = option("")  # PEM CA bundle for the SMTP server's certificate; empty: the system's
    timeout_s: int = option(30, min=5, max=300)
    # How long a message that cannot be delivered is retried before it is marked failed
    # (the report stays on the server either way).
    retry_hours: int = option(72, min=1, max=24 * 14)

    @property
    def enabled(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class IngestSection:
    """Which record times the bridge stores: outside this window a record is refused
    (reason ``bad_time``), so no stored time can be one a page cannot show."""

    # A date (UTC): no time before it is stored, synchronised or corrected. A check-in of
    # an unsynchronised clock not yet corrected is kept at its own time from 1970 on: its
    # clock record may still come and move it (docs/protocol.md).
    earliest: str = option("2020-01-01")
    # How far ahead of the server's clock a time may be (a station's clock runs fast).
    max_ahead_s: int = option(86400, min=60, max=30 * 86400)


@dataclass(frozen=True)
class ServerConfig:
    path: Path
    server: ServerSection
    web: WebSection
    mqtt: MqttSettings
    auth: AuthSection = AuthSection()
    broker: BrokerSection = BrokerSection()
    reports: ReportsSection = ReportsSection()
    retention: RetentionSection = RetentionSection()
    ingest: IngestSection = IngestSection()
    mail: MailSection = MailSection()

    @property
    def broker_dir(self) -> Path | None:
        return resolve(self.base, self.broker.files_dir) if self.broker.files_dir else None

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def data_dir(self) -> Path:
        return resolve(self.base, self.server.data_dir)

    @property
    def database(self) -> Path:
        return self.data_dir / "qrgate.sqlite3"

    @property
    def pass_key_file(self) -> Path:
        return self.data_dir / "pass-signing.key"

    @property
    def sealing_key_file(self) -> Path:
        """X25519 key that opens the personal fields stations seal (record-sealing.key)."""
        return self.data_dir / "record-sealing.key"


def _checked_server(section: ServerSection, path) -> ServerSection:
    url = section.database
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError(f"{path}: section [server]: option 'database' must be postgresql://..., sqlite:///path"
                          " or empty")
    return section


def load_server_config(path: str | Path) -> ServerConfig:
    path = Path(path).resolve()
    data = read_toml(path)
    check_sections(data, ("server", "web", "mqtt", "broker", "auth", "reports", "retention", "ingest", "mail"),
                   path)
    web = _checked_web(load_section(data, "web", WebSection, path), path)
    try:
        ZoneInfo(web.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: section [web]: option 'timezone' is not a known time zone: {web.timezone!r}") from None
    return ServerConfig(
        path=path,
        server=_checked_server(load_section(data, "server", ServerSection, path), path),
        web=web,
        mqtt=load_section(data, "mqtt", MqttSettings, path),
        broker=load_section(data, "broker", BrokerSection, path),
        auth=load_section(data, "auth", AuthSection, path),
        reports=load_section(data, "reports", ReportsSection, path),
        retention=load_section(data, "retention", RetentionSection, path),
        ingest=_checked_ingest(load_section(data, "ingest", IngestSection, path), path),
        mail=_checked_mail(load_section(data, "mail", MailSection, path), path),
    )


def _checked_web(section: WebSection, path) -> WebSection:
    import ipaddress

    for entry in section.trusted_proxies:
        try:
            if not isinstance(entry, str):
                raise TypeError(entry)
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: section [web]: option 'trusted_proxies' must list IP addresses or networks"
                              f" such as \"127.0.0.1\" or \"10.0.0.0/24\", got {entry!r}") from None
    return section


def _checked_ingest(section: IngestSection, path) -> IngestSection:
    import datetime as dt

    try:
        dt.date.fromisoformat(section.earliest)
    except ValueError:
        raise ConfigError(f"{path}: section [ingest]: option 'earliest' must be a date YYYY-MM-DD, "
                          f"got {section.earliest!r}") from None
    return section


def _checked_mail(section: MailSection, path) -> MailSection:
    """[mail] as a whole: what each option alone cannot say."""
    from email.headerregistry import Address
    from email.utils import parseaddr

    where = f"{path}: section [mail]"
    if not section.host:
        return section
    name, address = parseaddr(section.from_address)
    try:
        valid = bool(address) and bool(Address(addr_spec=address).domain)
    except (ValueError, IndexError):
        valid = False
    if not valid:
        raise ConfigError(f"{where}: option 'from_address' must be an e-mail address such as"
                          f" \"QR gate <baocao@example.vn>\", got {section.from_address!r}")
    if section.security == "none" and section.host not in _LOCAL_HOSTS:
        raise ConfigError(f"{where}: option 'security' may be \"none\" only for a relay on this machine"
                          f" (host localhost or 127.0.0.1); {section.host!r} needs \"starttls\" or \"tls\"")
    if section.password_file and not section.user:
        raise ConfigError(f"{where}: option 'password_file' needs 'user' (the account it is the password of)")
    for option_name in ("password_file", "ca_file"):
        value = getattr(section, option_name)
        if value and not resolve(Path(path).parent, value).is_file():
            raise ConfigError(f"{where}: option {option_name!r}: no file {resolve(Path(path).parent, value)}")
    if section.password_file:
        password_path = resolve(Path(path).parent, section.password_file)
        try:
            password = password_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: option 'password_file': cannot read {password_path}: {exc}") from None
        # SMTP logins (PLAIN, LOGIN) go as ASCII with the standard library's client.
        if not password.isascii() or not section.user.isascii():
            raise ConfigError(f"{where}: the SMTP user and password must be ASCII (letters without accents,"
                              f" digits, punctuation): {password_path}")
    return section
