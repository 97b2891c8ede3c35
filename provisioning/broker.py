"""The project's Mosquitto configuration: TLS, accounts bound to client ids, per-account ACLs, and a runner.

``BrokerFiles.create()`` writes a complete broker setup into one folder: a CA and a
server certificate, ``mosquitto.conf`` (TLS only, anonymous refused) and the accounts,
which Mosquitto's dynamic-security plugin keeps in ``dynamic-security.json``. The demo,
the tests and a real deployment use the same files.

The accounts (docs/security.md, "The broker"):

- a station logs in with its station id as user name, and only under the client id
  ``station-<id>`` (``station_client_id``, what edge/queue/publisher.py uses): the plugin
  refuses its password with any other client id. Its own role lets it publish its
  records and status, and subscribe to and read its acks and config; any other
  subscription, a ``$share/...`` one included, is refused;
- the server, ``qrgate-server``: one account for the bridge workers and the web process,
  which connect at the same time under several client ids (``qrgate-bridge``,
  ``qrgate-bridge-N``, ``qrgate-config-<pid>``), so it is bound to none; as every station
  is bound to its own id, no station can take one of these. It may subscribe to anything
  under the stations' topics, shared or not, and is handed only records and status; it
  publishes acks and config;
- ``qrgate-admin``: may only use the plugin's control topic. Its password is
  ``admin.password`` in the folder: whoever may read the folder may change accounts, as
  whoever could write the password file could before.

While Mosquitto runs, the plugin holds the accounts in memory and rewrites
dynamic-security.json after each change, never reading it again; so a change is sent as
a command on ``$CONTROL/dynamic-security/v1``, and takes effect at once: deleting an
account closes its open connections. While Mosquitto is stopped, the change is written
into the file, which it reads when it starts.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import getpass
import glob
import hashlib
import json
import ipaddress
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qrgate import protocol
from qrgate.updates import RELEASES_TOPIC
from qrgate.errors import DriverError, UserError

logger = logging.getLogger(__name__)

SERVER_USER = "qrgate-server"
ADMIN_USER = "qrgate-admin"
RESERVED_PREFIX = "qrgate-"  # user names of the server's own accounts, never a station's
ACCOUNTS_FILE = "dynamic-security.json"
ADMIN_PASSWORD_FILE = "admin.password"
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
CONTROL_TIMEOUT_S = 20.0
# The plugin's own password hash: PBKDF2-HMAC-SHA512 with a 12-byte salt, 101 rounds
# (plugins/dynamic-security/auth.c, PW_DEFAULT_ITERATIONS); the passwords are 192 random
# bits, so the round count is no defence to tune.
PW_SALT_BYTES = 12
PW_ITERATIONS = 101
# Deleting what is already gone is no failure: a retirement cut short is run again.
_ALREADY_GONE = {("deleteClient", "Client not found"), ("deleteRole", "Role not found")}
_ANY_ADDRESS = ("0.0.0.0", "::")


def station_client_id(station_id: str) -> str:
    """The one client id a station's account may connect with."""
    return f"station-{station_id}"


def is_reserved_username(name: str) -> bool:
    """User names kept for the server's own accounts (``qrgate-...``): never a station id."""
    return name.startswith(RESERVED_PREFIX)


def _allow(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


# Mosquitto checks a SUBSCRIBE against the plugin with the whole filter, "$share/<group>/"
# included (src/handle_subscribe.c; the ACL file let every subscription through,
# src/security_default.c), and every PUBLISH it hands over against publishClientReceive
# by its real topic. Only unsubscribing is allowed by default: an account does what its
# role lists and nothing else.
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}

SERVER_ROLE = {
    "rolename": SERVER_USER,
    "textdescription": "bridge workers and the web process: read records and status, write acks and config",
    "acls": [
        # Any subscription under the stations' topics and any shared one (the bridges'
        # group, server/ingest/bridge.py); what either delivers is limited to records and
        # status by the two lines after.
        _allow("subscribePattern", f"{protocol.TOPIC_ROOT}/#"),
        _allow("subscribePattern", "$share/+/#"),
        _allow("publishClientReceive", protocol.records_topic("+")),
        _allow("publishClientReceive", protocol.status_topic("+")),
        _allow("publishClientSend", protocol.acks_topic("+")),
        _allow("publishClientSend", protocol.config_topic("+")),
        _allow("publishClientSend", RELEASES_TOPIC),  # the release notice (qrgate-release publish)
    ],
}

ADMIN_ROLE = {
    "rolename": ADMIN_USER,
    "textdescription": "qrgate-provision and the server adding and deleting accounts",
    "acls": [
        _allow("publishClientSend", CONTROL_TOPIC),
        _allow("subscribeLiteral", CONTROL_RESPONSE_TOPIC),
        _allow("publishClientReceive", CONTROL_RESPONSE_TOPIC),
    ],
}


def station_role(station_id: str) -> dict:
    """A station's own role: its topics by name (the plugin of Mosquitto 2.0 has no %u)."""
    return {
        "rolename": station_client_id(station_id),
        "textdescription": f"station {station_id}",
        "acls": [
            _allow("publishClientSend", protocol.records_topic(station_id)),
            _allow("publishClientSend", protocol.status_topic(station_id)),  # its last will too
            _allow("subscribeLiteral", protocol.acks_topic(station_id)),
            _allow("subscribeLiteral", protocol.config_topic(station_id)),
            _allow("publishClientReceive", protocol.acks_topic(station_id)),
            _allow("publishClientReceive", protocol.config_topic(station_id)),
            _allow("subscribeLiteral", RELEASES_TOPIC),  # the release notice, the same for all
            _allow("publishClientReceive", RELEASES_TOPIC),
        ],
    }


def _account_commands(username: str, password: str) -> list[dict]:
    """The plugin's commands that (re)create an account from scratch, with its role.

    Deleting first makes a re-run replace the account; the broker closes whatever was
    connected with the old one.
    """
    if username == SERVER_USER:
        role, clientid = SERVER_ROLE, None
    else:
        if is_reserved_username(username) or not protocol.STATION_ID_RE.match(username):
            raise UserError(f"{username!r} cannot be a station's broker account: a station id is 3-63 characters "
                            f"of a-z, 0-9 and '-', not starting with '{RESERVED_PREFIX}'")
        role, clientid = station_role(username), station_client_id(username)
    client = {"command": "createClient", "username": username, "password": password,
              "roles": [{"rolename": role["rolename"]}]}
    if clientid:
        client["clientid"] = clientid
    return [
        {"command": "deleteClient", "username": username},
        {"command": "deleteRole", "rolename": role["rolename"]},
        {"command": "createRole", **role},
        client,
    ]


def _removal_commands(username: str) -> list[dict]:
    commands = [{"command": "deleteClient", "username": username}]
    if username != SERVER_USER:
        commands.append({"command": "deleteRole", "rolename": station_client_id(username)})
    return commands


def _stored_client(username: str, password: str, roles: list[dict], clientid: str | None = None) -> dict:
    """A client as the plugin stores it in its file: the password only as its hash."""
    salt = secrets.token_bytes(PW_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PW_ITERATIONS)
    entry = {"username": username, "password": base64.b64encode(digest).decode("ascii"),
             "salt": base64.b64encode(salt).decode("ascii"), "iterations": PW_ITERATIONS, "roles": roles}
    if clientid:
        entry["clientid"] = clientid
    return entry


def _apply_to_file(accounts: dict, commands: list[dict]) -> None:
    """Do to the plugin's file what the plugin does for these commands while it runs."""
    clients, roles = accounts.setdefault("clients", []), accounts.setdefault("roles", [])
    for command in commands:
        kind = command["command"]
        if kind == "deleteClient":
            clients[:] = [c for c in clients if c.get("username") != command["username"]]
        elif kind == "deleteRole":
            roles[:] = [r for r in roles if r.get("rolename") != command["rolename"]]
            for c in clients:
                c["roles"] = [r for r in c.get("roles", []) if r.get("rolename") != command["rolename"]]
        elif kind == "createRole":
            roles.append({k: v for k, v in command.items() if k != "command"})
        elif kind == "createClient":
            clients.append(_stored_client(command["username"], command["password"], command["roles"],
                                          command.get("clientid")))
        else:
            raise ValueError(f"no offline form of the plugin's command {kind!r}")


def _migrated_password_file(passwd: Path, accounts: dict) -> list[str]:
    """Move the accounts of a folder made before the plugin into ``accounts``.

    mosquitto_passwd (2.0) stores ``user:$7$<rounds>$<salt>$<hash>``, PBKDF2-HMAC-SHA512
    with a 12-byte salt: the very hash the plugin stores, so every station keeps its
    password. Returns the user names moved.
    """
    try:
        lines = passwd.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    moved = []
    for line in lines:
        user, colon, stored = line.strip().partition(":")
        parts = stored.split("$")
        try:
            if not colon or len(parts) != 5 or parts[1] != "7":
                raise ValueError("not a PBKDF2-SHA512 ($7$) entry")
            salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
            if len(salt) != PW_SALT_BYTES or len(digest) != 64 or int(parts[2]) < 1:
                raise ValueError("salt or hash of the wrong length")
            if user != SERVER_USER and (user == ADMIN_USER or not protocol.STATION_ID_RE.match(user)):
                raise ValueError("neither the server nor a station id")
        except ValueError as exc:
            if line.strip():
                logger.warning("%s: not moving the account of line %r (%s): re-enrol it", passwd, user, exc)
            continue
        if user == SERVER_USER:
            roles, clientid = [{"rolename": SERVER_USER}], None
        else:
            accounts["roles"].append(station_role(user))
            roles, clientid = [{"rolename": station_client_id(user)}], station_client_id(user)
        entry = {"username": user, "password": parts[4], "salt": parts[3], "iterations": int(parts[2]),
                 "roles": roles}
        if clientid:
            entry["clientid"] = clientid
        accounts["clients"].append(entry)
        moved.append(user)
    return moved


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DriverError("mosquitto not found (apt install mosquitto)")


def find_dynsec_plugin() -> str:
    """Mosquitto's dynamic-security plugin; Debian's mosquitto package has it in /usr/lib/<arch>/."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    candidates = [f"/usr/lib/{arch}/{DYNSEC_PLUGIN}"] if arch else []
    candidates += sorted(glob.glob(f"/usr/lib/*/{DYNSEC_PLUGIN}")) + [f"/usr/lib/{DYNSEC_PLUGIN}",
                                                                      f"/usr/local/lib/{DYNSEC_PLUGIN}"]
    for candidate in candidates:
        if os.access(candidate, os.R_OK):
            return candidate
    raise DriverError(f"Mosquitto's dynamic-security plugin ({DYNSEC_PLUGIN}) is not in /usr/lib/{arch or '<arch>'}/ "
                      "or /usr/local/lib: apt install mosquitto (version 2 ships it)")


CONF_TEMPLATE = """\
# Generated by qrgate-provision: TLS only, no anonymous access; accounts, the client id
# each station must use, and every account's ACL are kept by the dynamic-security plugin
# in {accounts}.
per_listener_settings false
allow_anonymous false
plugin {plugin}
plugin_opt_config_file {accounts}
{user_line}
pid_file {pid}
persistence true
persistence_location {data}/
autosave_interval 60
# A batch of records is at most 256 KiB; anything larger is refused by the broker.
max_packet_size {max_packet}
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true

listener {port} {host}
protocol mqtt
cafile {ca}
certfile {cert}
keyfile {key}
tls_version tlsv1.2
"""


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read, atomically; a file replaced keeps its owner
    (root editing the broker's folder while Mosquitto, running as qrgate, must read it)."""
    try:
        before = path.stat()
    except FileNotFoundError:
        before = None
    tmp = path.with_name(path.name + ".qrgate-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if before is not None and os.geteuid() == 0:
        os.chown(tmp, before.st_uid, before.st_gid)
    os.replace(tmp, path)


def _make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qrgate broker CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        directory / "ca.key",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return cert, key


def _make_server_cert(directory: Path, ca: x509.Certificate, ca_key, hostnames: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        directory / "server.key",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@dataclass(frozen=True)
class BrokerFiles:
    """A folder holding everything one Mosquitto instance of this project needs."""

    directory: Path
    host: str
    port: int
    listen: str = ""  # the address Mosquitto listens on (its listener line); "" = ``host``

    @property
    def conf(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def accounts(self) -> Path:
        """The dynamic-security plugin's file: accounts, their client ids and roles."""
        return self.directory / ACCOUNTS_FILE

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def control_host(self) -> str:
        """Where this machine reaches the broker to change accounts: the loopback address
        (in the certificate) when it listens on every address, else the clients' name."""
        return "127.0.0.1" if self.listen in _ANY_ADDRESS else self.host

    @classmethod
    def create(cls, directory: str | Path, *, port: int, host: str = "127.0.0.1", listen: str | None = None,
               hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> BrokerFiles:
        """Write (or refresh) the broker folder. An existing CA is kept, so stations keep
        trusting it, and so are the accounts; a folder from before the plugin (a
        ``passwd`` file) has its accounts moved into the plugin's file, passwords kept.

        ``host`` is the name clients connect to (it is put in the certificate too);
        ``listen`` the address Mosquitto listens on (default: ``host``; 0.0.0.0 for all).
        """
        if host not in hostnames:
            hostnames = (host, *hostnames)
        plugin = find_dynsec_plugin()
        d = Path(directory).resolve()
        d.mkdir(parents=True, exist_ok=True)
        (d / "data").mkdir(exist_ok=True)
        if (d / "ca.crt").exists() and (d / "ca.key").exists():
            ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
            ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
        else:
            ca, ca_key = _make_ca(d)
        if not (d / "server.crt").exists():
            _make_server_cert(d, ca, ca_key, list(hostnames))
        if not (d / ACCOUNTS_FILE).exists():
            _first_accounts(d)
        # Mosquitto started as root switches to the user named here; keep the user who
        # owns these files so it can still read the key and write the accounts.
        user = getpass.getuser()
        conf = CONF_TEMPLATE.format(
            plugin=plugin, accounts=d / ACCOUNTS_FILE, data=d / "data", port=port, host=listen or host,
            ca=d / "ca.crt", cert=d / "server.crt", key=d / "server.key",
            max_packet=protocol.MAX_MESSAGE_BYTES + 4096,
            user_line=f"user {user}",
            pid=d / "mosquitto.pid",
        )
        (d / "mosquitto.conf").write_text(conf, encoding="utf-8")
        (d / "broker.json").write_text(json.dumps({"host": host, "port": port}) + "\n", encoding="utf-8")
        return cls(d, host, port, listen or host)

    @classmethod
    def open(cls, directory: str | Path) -> BrokerFiles:
        d = Path(directory).resolve()
        try:
            text = (d / "mosquitto.conf").read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{d}: no broker configuration ({exc.strerror}); run qrgate-provision broker first") from None
        listener = next((line.split() for line in text.splitlines() if line.startswith("listener ")), None)
        if listener is None or len(listener) != 3:
            raise UserError(f"{d / 'mosquitto.conf'}: no listener line")
        try:
            facts = json.loads((d / "broker.json").read_text(encoding="utf-8"))
            return cls(d, str(facts["host"]), int(facts["port"]), listener[2])
        except (OSError, ValueError, KeyError):
            return cls(d, listener[2], int(listener[1]), listener[2])

    def add_user(self, username: str, password: str | None = None) -> str:
        """Add or replace a broker account; returns the password (generated if None).

        ``SERVER_USER`` is the server's account; any other name is a station id, whose
        account may connect only as ``station_client_id(username)``. Replacing an account
        closes the connections of the old one.
        """
        password = password or secrets.token_urlsafe(24)
        self._change(_account_commands(username, password))
        return password

    def add_users(self, usernames: list[str]) -> dict[str, str]:
        """Add many station accounts in one change (generated passwords, returned by name):
        one round of commands to a running broker, one write of a stopped one's file.
        ``add_user`` once each would rewrite the whole file per account (the plugin does
        so after every change): quadratic at thousands of stations."""
        passwords = {name: secrets.token_urlsafe(24) for name in usernames}
        commands: list[dict] = []
        for name, password in passwords.items():
            commands += _account_commands(name, password)
        if commands:
            self._change(commands)
        return passwords

    def remove_user(self, username: str) -> None:
        """Delete a broker account (a retired station); its open connections are closed
        at once and it cannot log in again. Deleting an account that is gone does nothing."""
        self._change(_removal_commands(username))

    def reload(self) -> bool:
        """Whether a broker runs for this folder. Account changes need no reload any more:
        a running broker has them at once (kept for callers written for the password file)."""
        return self.running()

    def running(self) -> bool:
        """Whether the Mosquitto of this folder runs: its pid file names a live mosquitto."""
        try:
            pid = int((self.directory / "mosquitto.pid").read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return False  # no pid file (a clean stop removes it), or no such process
        name, _, rest = stat.partition("(")[2].rpartition(")")
        return name == "mosquitto" and rest.split()[:1] != ["Z"]  # a pid file left by a kill, reused

    def _change(self, commands: list[dict]) -> None:
        # Written into the file only when certainly stopped: a running plugin would
        # neither see the change nor keep it (it rewrites the file from memory).
        if self.running() or self._listening():
            self._control(commands)
            return
        with self._locked():
            accounts = self._read_accounts()
            _apply_to_file(accounts, commands)
            _write_private(self.accounts, json.dumps(accounts, indent=2).encode("utf-8"))
        if self.running():
            # Started while the file was written: it may have read the file before.
            self._control(commands)

    def _listening(self) -> bool:
        """Something answers on the broker's port (a broker whose pid file this process
        cannot read, say)."""
        try:
            with socket.create_connection((self.control_host, self.port), timeout=2):
                return True
        except OSError:
            return False

    @contextlib.contextmanager
    def _locked(self):
        """One writer of the accounts file at a time (the folder itself is the lock, so
        root and the broker's user share it)."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_accounts(self) -> dict:
        try:
            accounts = json.loads(self.accounts.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"{self.accounts}: cannot read the broker's accounts ({exc.strerror}); "
                            "run qrgate-provision broker for this folder") from None
        except ValueError as exc:
            raise UserError(f"{self.accounts}: not the dynamic-security plugin's JSON ({exc})") from None
        if not isinstance(accounts, dict):
            raise UserError(f"{self.accounts}: not the dynamic-security plugin's JSON (not an object)")
        return accounts

    def _control(self, commands: list[dict], timeout: float = CONTROL_TIMEOUT_S) -> None:
        """Send the plugin ``commands`` as qrgate-admin and check its answer to each."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        where = f"{self.control_host}:{self.port}"
        try:
            password = (self.directory / ADMIN_PASSWORD_FILE).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DriverError(f"{self.directory / ADMIN_PASSWORD_FILE}: {exc.strerror}: accounts of a running "
                              "broker are changed with its administrator's password") from None
        # Answers go to every subscriber of the response topic: ours carry this mark.
        mark = secrets.token_hex(8)
        request = json.dumps({"commands": [{**c, "correlationData": mark} for c in commands]})
        answers: queue.Queue = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{ADMIN_USER}-{mark}", protocol=mqtt.MQTTv5)
        client.username_pw_set(ADMIN_USER, password)
        client.tls_set(ca_certs=str(self.ca_cert), cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)

        def on_connect(c, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                answers.put(DriverError(f"the broker at {where} refused {ADMIN_USER}: {reason_code}"))
            else:
                c.subscribe(CONTROL_RESPONSE_TOPIC, qos=0)

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            if reason_codes[0].is_failure:
                answers.put(DriverError(f"the broker at {where} refused {ADMIN_USER} its answers: {reason_codes[0]}"))
            else:
                c.publish(CONTROL_TOPIC, request, qos=1)

        def on_message(c, userdata, message):
            try:
                responses = json.loads(message.payload)["responses"]
                ours = [r for r in responses if r.get("correlationData") == mark]
            except (ValueError, KeyError, TypeError, AttributeError):
                return
            if ours:
                answers.put(ours)

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.connect(self.control_host, self.port, keepalive=30, clean_start=True)
                break
            except ConnectionRefusedError as exc:
                # A broker just started writes its pid file a moment before it listens.
                if time.monotonic() > deadline or not self.running():
                    raise DriverError(f"cannot reach the broker at {where}: {exc.strerror}") from None
                time.sleep(0.1)
            except OSError as exc:
                raise DriverError(f"cannot reach the broker at {where}: {exc}") from None
        client.loop_start()
        try:
            answer = answers.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue.Empty:
            raise DriverError(f"the broker at {where} did not answer an account change within {timeout:.0f} s") from None
        finally:
            client.disconnect()
            client.loop_stop()
        if isinstance(answer, Exception):
            raise answer
        for response in answer:
            error = response.get("error")
            if error and (response.get("command"), error) not in _ALREADY_GONE:
                raise DriverError(f"the broker at {where} refused {response.get('command')}: {error}")
        if len(answer) != len(commands):
            raise DriverError(f"the broker at {where} answered {len(answer)} of {len(commands)} account commands")


def _first_accounts(d: Path) -> None:
    """The plugin's file of a new folder: the two fixed roles, the administrator, and the
    accounts of an older folder's password file (which is then set aside)."""
    admin_password = secrets.token_urlsafe(24)
    accounts = {"defaultACLAccess": dict(DEFAULT_ACL_ACCESS), "clients": [], "groups": [],
                "roles": [SERVER_ROLE, ADMIN_ROLE]}
    accounts["clients"].append(_stored_client(ADMIN_USER, admin_password, [{"rolename": ADMIN_USER}]))
    moved = _migrated_password_file(d / "passwd", accounts)
    _write_private(d / ADMIN_PASSWORD_FILE, (admin_password + "\n").encode("ascii"))
    _write_private(d / ACCOUNTS_FILE, json.dumps(accounts, indent=2).encode("utf-8"))
    if (d / "passwd").exists():
        (d / "passwd").replace(d / "passwd.before-dynamic-security")
        (d / "acl").unlink(missing_ok=True)  # generated text, now in the roles
        logger.warning("%s: moved %d account(s) from the password file into %s; restart the broker",
                       d, len(moved), ACCOUNTS_FILE)

class BrokerProcess:
    """A Mosquitto started with a BrokerFiles config; for the demo and the tests."""

    def __init__(self, files: BrokerFiles, log_path: Path | None = None):
        self.files = files
        self.log_path = log_path or files.directory / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.files.conf)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Return once the TLS listener completes a handshake; raise if it never does."""
        ctx = ssl.create_default_context(cafile=str(self.files.ca_cert))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise DriverError(
                    f"mosquitto exited with status {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection((self.files.host, self.files.port), timeout=1) as raw:
                    with ctx.wrap_socket(raw, server_hostname=self.files.host):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"mosquitto did not listen on {self.files.host}:{self.files.port} within {timeout}s; see {self.log_path}"
                    ) from None
                time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline

    def reload(self) -> None:
        """Make Mosquitto re-read mosquitto.conf (SIGHUP); accounts need no reload."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, below the kernel's range for outgoing connections, so
    a client's ephemeral port cannot take it between now and the server's bind."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded machine: let the kernel choose
        s.bind((host, 0))
        return s.getsockname()[1]
