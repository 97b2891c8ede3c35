// What the phone keeps in IndexedDB, shared by the page and the service worker:
//   devices   one per venue this browser is enrolled at: station id, the non-extractable
//             signing key and presence key (CryptoKey objects), the server's keys, the
//             pushed config, the next sequence number and the clock offset;
//   outbox    every signed record, by [station, seq]: its exact canonical text (sent as
//             is, never signed again), state "pending", "stored" or "refused", and what
//             the list shows (masked name, direction, card kind, time, made offline);
//   presence  the last check-in of each person, by [station, keyed hash of the person].
// No name or id is kept in the clear: the record holds the person sealed to the server.

const DB_NAME = "qrgate-phone";
const KEEP_DELIVERED = 50; // stored records kept for the "recent scans" list

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function finished(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

export function openStore() {
  const request = indexedDB.open(DB_NAME, 1);
  request.onupgradeneeded = () => {
    const db = request.result;
    db.createObjectStore("devices", { keyPath: "venueId" });
    const outbox = db.createObjectStore("outbox", { keyPath: ["stationId", "seq"] });
    // By state: what waits, in sequence order, without reading a week of records.
    outbox.createIndex("state", ["stationId", "state"]);
    db.createObjectStore("presence", { keyPath: ["stationId", "hash"] });
  };
  return done(request);
}

export async function getDevice(db, venueId) {
  return done(db.transaction("devices").objectStore("devices").get(venueId));
}

export async function allDevices(db) {
  return done(db.transaction("devices").objectStore("devices").getAll());
}

export async function putDevice(db, device) {
  const tx = db.transaction("devices", "readwrite");
  tx.objectStore("devices").put(device);
  return finished(tx);
}

// Change some fields of a device record (read and written in one transaction).
export async function updateDevice(db, venueId, fields) {
  const tx = db.transaction("devices", "readwrite");
  const store = tx.objectStore("devices");
  const device = await done(store.get(venueId));
  if (device) store.put({ ...device, ...fields });
  await finished(tx);
  return device ? { ...device, ...fields } : null;
}

// The next sequence number of a device, taken for good: a number is never used twice,
// even by two tabs at once; one lost with a closed tab is a gap, which the protocol allows.
export async function takeSeq(db, venueId) {
  const tx = db.transaction("devices", "readwrite");
  const store = tx.objectStore("devices");
  const device = await done(store.get(venueId));
  const seq = device.nextSeq;
  store.put({ ...device, nextSeq: seq + 1 });
  await finished(tx);
  return seq;
}

// Keep a signed record (and the person's new presence) in one transaction: only once it
// is complete may the page show green.
export async function keepRecord(db, entry, presence) {
  const tx = db.transaction(["outbox", "presence"], "readwrite");
  tx.objectStore("outbox").put(entry);
  if (presence) tx.objectStore("presence").put(presence);
  return finished(tx);
}

export async function getPresence(db, stationId, hash) {
  return done(db.transaction("presence").objectStore("presence").get([stationId, hash]));
}

// Walk a cursor: ``visit(cursor)`` for each entry until it returns false or the entries end.
function walk(request, visit) {
  return new Promise((resolve, reject) => {
    request.onerror = () => reject(request.error);
    request.onsuccess = () => {
      const cursor = request.result;
      if (!cursor || !visit(cursor)) return resolve();
      cursor.continue();
    };
  });
}

const ofStation = (stationId) => IDBKeyRange.bound([stationId, 0], [stationId, Number.MAX_SAFE_INTEGER]);

// Every record kept for a station (tests and inspection; the page reads by index).
export async function outboxOf(db, stationId) {
  return done(db.transaction("outbox").objectStore("outbox").getAll(ofStation(stationId)));
}

export async function pendingOf(db, stationId, limit) {
  const index = db.transaction("outbox").objectStore("outbox").index("state");
  return done(index.getAll(IDBKeyRange.only([stationId, "pending"]), limit));
}

export async function countPending(db, stationId) {
  const index = db.transaction("outbox").objectStore("outbox").index("state");
  return done(index.count(IDBKeyRange.only([stationId, "pending"])));
}

// The newest ``count`` check-ins, newest first, for the list on the page.
export async function recentOf(db, stationId, count) {
  const found = [];
  await walk(db.transaction("outbox").objectStore("outbox").openCursor(ofStation(stationId), "prev"), (cursor) => {
    if (found.length >= count) return false;
    if (cursor.value.type === "checkin") found.push(cursor.value);
    return true;
  });
  return found;
}

// Apply the server's ack: stored first (a seq both stored and refused is stored), then
// refused; stored records beyond the newest KEEP_DELIVERED are forgotten.
export async function applyAck(db, stationId, ack) {
  const tx = db.transaction("outbox", "readwrite");
  const store = tx.objectStore("outbox");
  const stored = new Set(ack.stored || []);
  const marks = [...stored].map((seq) => [seq, "stored", ""]);
  for (const [seq, why] of Object.entries(ack.refused || {})) {
    if (!stored.has(Number(seq))) marks.push([Number(seq), "refused", why]);
  }
  for (const [seq, state, reason] of marks) {
    const entry = await done(store.get([stationId, seq]));
    if (entry && entry.state === "pending") store.put({ ...entry, state, reason });
  }
  const index = store.index("state");
  let extra = (await done(index.count(IDBKeyRange.only([stationId, "stored"])))) - KEEP_DELIVERED;
  if (extra > 0) {
    await walk(index.openCursor(IDBKeyRange.only([stationId, "stored"])), (cursor) => {
      cursor.delete();
      extra -= 1;
      return extra > 0;
    });
  }
  return finished(tx);
}
