// The phone scanner page (/phone/venues/<id>): enrolment with the venue's one-time code, then
// each code read by the camera or a keyboard-mode scanner decided as a station decides it
// (edge/pipeline.py): parse, repeat window and direction from the person's last check-in,
// block list and anti-passback from the config the server pushes; an accepted scan is signed,
// kept in IndexedDB and only then shown green, and sent to the server when it can be.

import { Camera, Decoder } from "./camera.js";
import { clockOffset, deliver } from "./delivery.js";
import { PayloadRefused, importPassKeys, maskPersonName, parsePayload, personKey } from "./payloads.js";
import { decideCheckin, policyFrom } from "./policy.js";
import { Sealer, b64decode, hex, newBootId, newSigningKey, signRecord } from "./records.js";
import { countPending, getDevice, getPresence, keepRecord, openStore, putDevice, recentOf, takeSeq, updateDevice } from "./store.js";

const data = JSON.parse(document.getElementById("phone-data").textContent);
const W = data.words;
const $ = (id) => document.getElementById(id);
const fill = (text, values) => text.replace(/\{(\w+)\}/g, (m, k) => (k in values ? String(values[k]) : m));
const utf8 = new TextEncoder();

const HOLD_MS = 1500; // the same code still held up (edge/config.py hold_s)
const RESULT_MS = 2500; // the result screen (edge/feedback.py result_seconds)
const TRUST_CLOCK_MS = 7 * 86400 * 1000; // a clock found right this recently is trusted offline
const CLOCK_SLACK_MS = 60 * 1000;
const RECENT = 20;

const state = {
  db: null, device: null, sealer: null, passKeys: new Map(), policy: null, blockedSalt: new Uint8Array(0),
  blocked: new Set(), boot: newBootId(), measured: false, unsynced: false, reachable: navigator.onLine,
  mode: "starting", camera: null, decoder: null, last: null, queue: Promise.resolve(), delivering: false,
  deliverAgain: false, loginAgain: false, torch: false, renders: 0, audio: null, resultTimer: 0, dates: null,
  log: [],
};
window.qrgatePhone = state; // for tests and the benchmark: what the page decided (state.log), frames read

function show(id, visible) {
  $(id).hidden = !visible;
}

function say(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

// -- clock -----------------------------------------------------------------------------------

function clockNow() {
  const offset = (state.device && state.device.offsetMs) || 0;
  const mono = Math.floor(performance.now());
  return { wall: Date.now() + offset, mono, boot: state.boot };
}

function clockSynced() {
  const d = state.device;
  return state.measured || Boolean(d && d.offsetCheckedMs && Date.now() - d.offsetCheckedMs < TRUST_CLOCK_MS
    && Math.abs(d.offsetMs || 0) <= CLOCK_SLACK_MS);
}

// The venue's calendar, made once per time zone: a formatter is costly to make, and the
// scan path and every row of the list use one.
function venueDates() {
  const timeZone = state.device.timezone;
  if (!state.dates || state.dates.timeZone !== timeZone) {
    state.dates = {
      timeZone,
      day: new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }),
      time: new Intl.DateTimeFormat("en-GB", { timeZone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
    };
  }
  return state.dates;
}

function venueDay(wall) {
  return venueDates().day.format(wall);
}

function timeText(wall) {
  const parts = Object.fromEntries(venueDates().time.formatToParts(wall).map((p) => [p.type, p.value]));
  return `${parts.hour}:${parts.minute}:${parts.second} ${parts.day}/${parts.month}/${parts.year}`;
}

// The server's clock was read (offset: server minus phone): records are stamped with it from
// now on, and a boot that made unsynchronised check-ins gets a clock record so the server
// corrects them (docs/protocol.md, "clock").
async function noteOffset(offset) {
  if (offset === null || offset === undefined || !state.device) return;
  state.measured = true;
  state.device = await updateDevice(state.db, state.device.venueId, { offsetMs: offset, offsetCheckedMs: Date.now() });
  if (state.unsynced) {
    state.unsynced = false;
    const now = clockNow();
    const seq = await takeSeq(state.db, state.device.venueId);
    const body = await signRecord({ v: 1, type: "clock", st: state.device.stationId, seq, ts: now.wall, mono: now.mono,
      boot: now.boot, sync: true, base: now.wall - now.mono }, state.device.signKey);
    await keepRecord(state.db, { stationId: state.device.stationId, seq, body, type: "clock", state: "pending",
      madeMs: now.wall });
  }
}

// -- feedback --------------------------------------------------------------------------------

// Beeps as the station's buzzer gives them (edge/drivers/indicators_gpio.py PATTERNS).
const BEEPS = {
  accepted: [1760, 0.08, 0, 1], accepted_offline: [1760, 0.08, 0, 1], already_counted: [880, 0.04, 0.08, 2],
  refused: [440, 0.12, 0.08, 3], fault: [440, 1.0, 0, 1],
};
const VIBRATION = { accepted: [80], accepted_offline: [80], already_counted: [40, 80, 40], refused: [120, 80, 120, 80, 120],
  fault: [600] };

function wakeAudio() {
  try {
    state.audio = state.audio || new AudioContext();
    if (state.audio.state === "suspended") state.audio.resume();
  } catch {
    state.audio = null;
  }
}

function beep(result) {
  const [hz, on, off, count] = BEEPS[result];
  if (state.audio) {
    let at = state.audio.currentTime;
    for (let i = 0; i < count; i++) {
      const osc = state.audio.createOscillator();
      osc.frequency.value = hz;
      osc.connect(state.audio.destination);
      osc.start(at);
      osc.stop(at + on);
      at += on + off;
    }
  }
  if (navigator.vibrate) navigator.vibrate(VIBRATION[result]);
}

function headlineOf(outcome) {
  if (outcome.result === "accepted" || outcome.result === "accepted_offline") {
    return W[`headline.${outcome.direction}`] || W["headline.counted"];
  }
  return W[`headline.${outcome.result}`];
}

function lineOf(outcome) {
  if (outcome.result === "refused") return W[`refusal.${outcome.reason}`] || W.refusal_generic;
  if (outcome.result === "fault") return W.fault_generic;
  return outcome.masked || "";
}

function showOutcome(outcome) {
  const screen = $("result");
  screen.className = `result result-${outcome.result}`;
  screen.dataset.result = outcome.result;
  screen.dataset.reason = outcome.reason || "";
  $("result-headline").textContent = headlineOf(outcome);
  $("result-line").textContent = lineOf(outcome);
  say("result-note", outcome.result === "accepted_offline" ? W["state.offline"] : "");
  screen.hidden = false;
  beep(outcome.result);
  clearTimeout(state.resultTimer);
  state.resultTimer = setTimeout(() => { screen.hidden = true; }, RESULT_MS);
}

// -- status and the list of recent scans ---------------------------------------------------

async function render() {
  const device = state.device;
  if (!device) return;
  // Read first, then change the page in one go: a render started later may have finished first.
  const turn = ++state.renders;
  const pending = await countPending(state.db, device.stationId);
  const scans = await recentOf(state.db, device.stationId, RECENT);
  if (turn !== state.renders) return;
  const online = navigator.onLine && state.reachable;
  $("device-label").textContent = fill(W.device, { number: device.number });
  $("mode-label").textContent = state.policy ? W[`mode.${state.policy.mode}`] : "";
  $("net").textContent = online ? W.online : W.offline;
  $("net").className = online ? "net online" : "net offline";
  $("backlog").textContent = fill(W.backlog, { count: pending });
  $("backlog").dataset.count = pending;
  say("notice", device.blocked === "no_role" ? W.no_role : device.blocked === "retired" ? W.retired
    : state.loginAgain ? W.login_again : "");
  const items = scans.map((e) => {
    const item = document.createElement("li");
    item.dataset.seq = e.seq;
    const shown = e.state !== "pending" ? e.state : e.offline ? "offline" : "waiting";
    item.dataset.state = shown;
    for (const [cls, text] of [["when", timeText(e.madeMs)], ["dir", W[`dir.${e.dir}`]], ["name", e.masked],
      ["card", W[`card.${e.kind}`]], ["state", W[`state.${shown === "stored" ? "sent" : shown}`]]]) {
      const cell = document.createElement("span");
      cell.className = cls;
      cell.textContent = text;
      item.append(cell);
    }
    return item;
  });
  $("recent-list").replaceChildren(...items);
  show("recent-none", scans.length === 0);
}

// -- deciding a code -------------------------------------------------------------------------

async function hmacHex(key, text) {
  return hex(await crypto.subtle.sign("HMAC", key, utf8.encode(text)));
}

async function isBlocked(key) {
  if (!state.blocked.size) return false;
  const salted = new Uint8Array([...state.blockedSalt, ...utf8.encode(key)]);
  return state.blocked.has(hex(await crypto.subtle.digest("SHA-256", salted)));
}

async function decide(text) {
  const device = state.device;
  if (device.blocked === "retired") return { result: "fault", reason: "retired" };
  const now = clockNow();
  const synced = clockSynced();
  let person;
  try {
    person = await parsePayload(text, { passKeys: state.passKeys, today: synced ? venueDay(now.wall) : null });
  } catch (error) {
    if (error instanceof PayloadRefused) return { result: "refused", reason: error.reason };
    throw error;
  }
  const key = personKey(person);
  const hash = await hmacHex(device.presenceKey, key);
  const last = await getPresence(state.db, device.stationId, hash);
  const verdict = decideCheckin(last, now, state.policy, await isBlocked(key));
  const masked = maskPersonName(person.name);
  if (verdict.code === "blocked" || verdict.code === "passback") {
    return { result: "refused", reason: verdict.code, kind: person.kind };
  }
  if (!verdict.accepted) return { result: "already_counted", direction: verdict.direction, masked, kind: person.kind };
  const offline = !(navigator.onLine && state.reachable);
  try {
    const seq = await takeSeq(state.db, device.venueId);
    const body = await signRecord({
      v: 1, type: "checkin", st: device.stationId, seq, ts: now.wall, mono: now.mono, boot: now.boot, sync: synced,
      dir: verdict.direction, kind: person.kind,
      sealed: state.sealer.seal({ id: person.id, name: person.name, birth: person.birth, sex: person.sex }),
    }, device.signKey);
    await keepRecord(state.db,
      { stationId: device.stationId, seq, body, type: "checkin", state: "pending", madeMs: now.wall, offline, masked,
        dir: verdict.direction, kind: person.kind },
      { stationId: device.stationId, hash, dir: verdict.direction, wall: now.wall, mono: now.mono, boot: now.boot });
  } catch {
    return { result: "fault", reason: "storage" };
  }
  if (!synced) state.unsynced = true;
  setTimeout(deliverNow, 0);
  if (offline) requestBackgroundSync();
  return { result: offline ? "accepted_offline" : "accepted", direction: verdict.direction, masked, kind: person.kind };
}

function isEnrolCode(text) {
  try {
    const code = JSON.parse(text);
    return Boolean(code) && code.qrgate_enrol !== undefined;
  } catch {
    return /^[0-9a-f]{48}$/.test(text.trim());
  }
}

// One read code; the same code still held up within HOLD_MS is the same presentation.
function handleText(text) {
  const at = performance.now();
  const last = state.last;
  state.last = { text, at };
  if (last && last.text === text && at - last.at < HOLD_MS) return state.queue;
  state.queue = state.queue.then(async () => {
    if (state.mode === "enrol") {
      if (isEnrolCode(text)) await enrol(text);
      else say("enrol-message", W.not_enrol_code);
      return;
    }
    if (state.mode !== "scan" || isEnrolCode(text)) return;
    const outcome = await decide(text);
    showOutcome(outcome);
    state.log.push({ result: outcome.result, reason: outcome.reason || "", direction: outcome.direction || "",
      masked: outcome.masked || "", shownAt: performance.now() });
    await render();
  }).catch((error) => console.error("scan not decided", error));
  return state.queue;
}

// -- talking to the server -------------------------------------------------------------------

async function deliverNow() {
  if (!state.device) return;
  if (state.delivering) {
    state.deliverAgain = true; // a scan made while a batch was on its way
    return;
  }
  state.delivering = true;
  state.deliverAgain = false;
  try {
    const result = await deliver(state.db, state.device);
    state.reachable = result.stopped !== "offline";
    state.device = await getDevice(state.db, state.device.venueId);
    const unsynced = state.unsynced;
    await noteOffset(result.offset);
    state.deliverAgain = state.deliverAgain || (unsynced && !state.unsynced); // the clock record just made
  } finally {
    state.delivering = false;
    await render();
  }
  if (state.deliverAgain && state.reachable) await deliverNow();
}

async function refreshConfig() {
  const device = state.device;
  if (!device) return;
  const sentAt = Date.now();
  let response;
  try {
    const pending = await countPending(state.db, device.stationId);
    const url = data.configUrl.replace("{station}", encodeURIComponent(device.stationId)) + `?backlog=${pending}`;
    response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  } catch {
    state.reachable = false;
    return render();
  }
  state.reachable = true;
  state.loginAgain = response.status === 401;
  if (response.ok) {
    const answer = await response.json();
    state.device = await updateDevice(state.db, device.venueId, { config: answer.config });
    applyConfig(answer.config);
    await noteOffset(clockOffset(answer.server_ms, sentAt, Date.now()));
  }
  await render();
}

function requestBackgroundSync() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.ready.then((reg) => reg.sync && reg.sync.register("qrgate-outbox")).catch(() => {});
}

// -- enrolment ---------------------------------------------------------------------------------

async function enrol(codeText) {
  say("enrol-message", W.enrolling);
  let key;
  let presenceKey;
  try {
    key = await newSigningKey();
    presenceKey = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  } catch {
    return say("enrol-message", W.unsupported);
  }
  let response;
  const sentAt = Date.now();
  try {
    response = await fetch(data.enrolUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": data.csrf },
      body: JSON.stringify({ code: codeText.trim(), public_key: key.publicKey, mode: $("enrol-mode").value }),
    });
  } catch {
    return say("enrol-message", W["enrol_error.network"]);
  }
  const answer = await response.json().catch(() => ({}));
  if (response.status !== 201) {
    return say("enrol-message", W[`enrol_error.${answer.detail}`] || W["enrol_error.other"]);
  }
  const device = {
    venueId: data.venueId, stationId: answer.station_id, number: answer.number, venue: answer.venue,
    signKey: key.privateKey, publicKey: key.publicKey, presenceKey, serverKey: answer.server_key,
    passKeys: answer.pass_keys, timezone: answer.timezone, config: answer.config, nextSeq: 1,
    offsetMs: clockOffset(answer.server_ms, sentAt, Date.now()), offsetCheckedMs: Date.now(), blocked: "",
  };
  await putDevice(state.db, device);
  state.measured = true;
  stopCamera();
  await useDevice(device);
  say("scan-message", fill(W.enrolled, { device: fill(W.device, { number: device.number }) }));
}

// -- camera ------------------------------------------------------------------------------------

async function startCamera() {
  wakeAudio();
  try {
    state.decoder = state.decoder || await Decoder.create();
    state.camera = new Camera($("camera"));
    await state.camera.open();
  } catch {
    state.camera = null;
    return say(state.mode === "enrol" ? "enrol-message" : "scan-message", W.no_camera);
  }
  document.body.classList.add("camera-on");
  $("start").textContent = W.stop;
  show("torch", state.camera.hasTorch);
  state.camera.run(state.decoder, async (texts) => {
    for (const text of texts) await handleText(text);
  });
}

function stopCamera() {
  if (state.camera) state.camera.close();
  state.camera = null;
  document.body.classList.remove("camera-on");
  $("start").textContent = W.start;
  show("torch", false);
}

// -- putting it together ---------------------------------------------------------------------

function applyConfig(config) {
  state.policy = policyFrom(config);
  state.blockedSalt = b64decode(config.blocked_salt || "");
  state.blocked = new Set(config.blocked || []);
}

async function useDevice(device) {
  state.device = device;
  state.sealer = await Sealer.create(device.serverKey, device.stationId);
  state.passKeys = await importPassKeys(device.passKeys);
  applyConfig(device.config);
  state.mode = "scan";
  show("enrol", false);
  show("scanner", true);
  await render();
  refreshConfig().then(deliverNow);
}

function wire() {
  $("enrol-scan").addEventListener("click", () => (state.camera ? stopCamera() : startCamera()));
  $("enrol-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.queue = state.queue.then(() => enrol($("enrol-code").value));
  });
  $("start").addEventListener("click", () => (state.camera ? stopCamera() : startCamera()));
  $("torch").addEventListener("click", () => {
    state.torch = !state.torch;
    if (state.camera) state.camera.setTorch(state.torch).catch(() => {});
  });
  $("result").addEventListener("click", () => { $("result").hidden = true; });
  // A keyboard-mode scanner types the code, then Enter.
  let typed = "";
  let typedAt = 0;
  document.addEventListener("keydown", (event) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName)) return;
    // A second without a key ends a stray fragment (a scanner types a code in milliseconds).
    if (event.timeStamp - typedAt > 1000) typed = "";
    typedAt = event.timeStamp;
    wakeAudio();
    if (event.key === "Enter") {
      if (typed) handleText(typed);
      typed = "";
      event.preventDefault();
    } else if (Array.from(event.key).length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey) {
      typed += event.key;
      event.preventDefault();
    }
  });
  window.addEventListener("online", () => { state.reachable = true; refreshConfig().then(deliverNow); });
  window.addEventListener("offline", () => { state.reachable = false; render(); });
  setInterval(() => { if (state.device) deliverNow(); }, 10000);
  setInterval(() => { if (state.device) refreshConfig(); }, 60000); // the fleet page's heartbeat
}

async function main() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register(data.serviceWorker, { scope: data.scope, type: "module" }).catch(() => {});
    navigator.serviceWorker.ready.then((reg) => {
      const keep = [location.href, new URL(document.querySelector("link[rel=manifest]").href, location.href).href];
      if (navigator.onLine) keep.forEach((url) => reg.active.postMessage({ keep: url }));
    }).catch(() => {});
  }
  wire();
  state.db = await openStore();
  const device = await getDevice(state.db, data.venueId);
  if (device) {
    await useDevice(device);
  } else {
    state.mode = "enrol";
    show("enrol", true);
  }
  document.body.dataset.ready = state.mode;
}

main().catch((error) => {
  console.error("phone scanner did not start", error);
  say("notice", W.storage_full);
});
