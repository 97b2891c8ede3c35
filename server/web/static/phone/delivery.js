// Delivering a phone's signed records, from the page or from the service worker: pending
// records in sequence order, 100 at a time, as the body of a station's MQTT records message
// ({"records":[...]}, each record the exact text signed), to the phone's records endpoint.
// The answer is the bridge's ack, applied as a station applies it. A Web Lock per device
// keeps the page and the service worker from sending the same batch at once (the server
// would store it once anyway).

import { allDevices, applyAck, pendingOf, updateDevice } from "./store.js";

const BATCH = 100;

export function recordsUrl(stationId) {
  return `/api/phone/devices/${encodeURIComponent(stationId)}/records`;
}

// The server's clock minus this phone's: the server read it halfway between asking and answer.
export function clockOffset(serverMs, sentAt, answeredAt) {
  return Math.round(serverMs - (sentAt + answeredAt) / 2);
}

// The offset from an answer's X-Qrgate-Time-Ms (null: none).
export function offsetFrom(response, sentAt, answeredAt) {
  const server = Number(response.headers.get("x-qrgate-time-ms"));
  return Number.isFinite(server) && server > 0 ? clockOffset(server, sentAt, answeredAt) : null;
}

// Send what is pending for one device. Returns {sent, stopped}: ``stopped`` is "no_role",
// "retired" or "unknown" when the server refuses the device, "offline" when it could not be
// reached, "" otherwise; ``offset`` the clock offset learnt, if any.
export async function deliver(db, device) {
  const run = async () => {
    let sent = 0;
    let offset = null;
    for (;;) {
      const pending = await pendingOf(db, device.stationId, BATCH);
      if (!pending.length) return { sent, stopped: "", offset };
      const body = '{"records":[' + pending.map((e) => e.body).join(",") + "]}";
      let response;
      const sentAt = Date.now();
      try {
        response = await fetch(recordsUrl(device.stationId), {
          method: "POST", body, headers: { "content-type": "application/json" }, credentials: "omit", cache: "no-store",
        });
      } catch {
        return { sent, stopped: "offline", offset };
      }
      offset = offsetFrom(response, sentAt, Date.now()) ?? offset;
      if (response.status === 403 || response.status === 404) {
        let reason = "unknown";
        try {
          reason = (await response.json()).detail || reason;
        } catch {
          // not JSON: keep "unknown"
        }
        await updateDevice(db, device.venueId, { blocked: reason });
        return { sent, stopped: reason, offset };
      }
      if (!response.ok) return { sent, stopped: "offline", offset };
      const ack = await response.json();
      await applyAck(db, device.stationId, ack);
      if (device.blocked) await updateDevice(db, device.venueId, { blocked: "" });
      const acked = new Set([...(ack.stored || []), ...Object.keys(ack.refused || {}).map(Number)]);
      sent += pending.filter((e) => acked.has(e.seq)).length;
      // Nothing of this batch acked (the server could not check it): try again later, not now.
      if (!pending.some((e) => acked.has(e.seq))) return { sent, stopped: "", offset };
    }
  };
  if (self.navigator && self.navigator.locks) {
    return self.navigator.locks.request(`qrgate-outbox-${device.stationId}`, run);
  }
  return run();
}

// Every device of this browser: the service worker's job when the network comes back.
export async function deliverAll(db) {
  let failed = false;
  for (const device of await allDevices(db)) {
    const result = await deliver(db, device);
    failed = failed || result.stopped === "offline";
  }
  if (failed) throw new Error("the server could not be reached");
}
