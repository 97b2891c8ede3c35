"""The broker's accounts as Mosquitto's dynamic-security plugin keeps them: the fixed
roles (the server, the administrator), each station's own role bound to its client id,
the plugin's commands that make and remove an account, the same commands applied to the
plugin's file while the broker is stopped, and the move of an older password file into
it. provisioning/broker.py sends these commands to a running broker or writes the file
(its docstring says who may do what).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from pathlib import Path

from qrgate import protocol
from qrgate.errors import UserError
from qrgate.updates import RELEASES_TOPIC

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
