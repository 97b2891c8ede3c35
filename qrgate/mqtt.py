"""One way to build a paho-mqtt 2.x client for this project (MQTT v5, TLS, credentials)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from qrgate.config import MqttSettings, resolve

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps a subscriber's queue this long while it is away


def make_client(
    client_id: str,
    settings: MqttSettings,
    base: Path,
    *,
    persistent: bool,
    will: tuple[str, bytes] | None = None,
) -> tuple[mqtt.Client, Properties]:
    """Return a configured client and the CONNECT properties to pass to connect().

    ``persistent`` asks the broker to keep the session (subscriptions and queued QoS 1
    messages) while the client is away; ``will`` is (topic, payload) published retained
    by the broker when the client vanishes.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password(base))
    if settings.tls:
        ca = str(resolve(base, settings.ca_file)) if settings.ca_file else None
        client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    # Keep many messages in flight: acks, not PUBACKs, decide what is delivered.
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
    return client, props


def connect_async(client: mqtt.Client, settings: MqttSettings, props: Properties, *, persistent: bool) -> None:
    """Start connecting in the background; paho retries with back-off until it succeeds."""
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive,
        clean_start=not persistent,
        properties=props,
    )
    client.loop_start()
