// Signed records in the project's own format (docs/protocol.md, qrgate/protocol.py), made in
// the browser: canonical JSON, Ed25519 over "qrgate-record-v1\n" + canonical JSON, and the
// person sealed to the server's X25519 key with HKDF-SHA256 and ChaCha20-Poly1305
// (qrgate/sealing.py). The signing key is a non-extractable WebCrypto key; the ephemeral
// sealing key lives only in this page's memory and changes with every page load.

import { chacha20poly1305 } from "./vendor/noble-ciphers/chacha.js";

const RECORD_CONTEXT = "qrgate-record-v1\n";
const SEAL_INFO = "qrgate-person-v1";
const utf8 = new TextEncoder();

export function b64encode(bytes) {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function b64decode(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// Keys sorted by code point, "," and ":" with no spaces, text as itself (JSON.stringify
// escapes exactly the characters canonical form escapes: '"', '\' and U+0000-U+001F, with
// the short forms \b \t \n \f \r and \u00xx in lower case). Records hold no fractions.
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`not a whole number a record can hold: ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  const keys = Object.keys(value).sort((a, b) => {
    const x = Array.from(a, (c) => c.codePointAt(0));
    const y = Array.from(b, (c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  });
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
}

// The record with its "sig", as the canonical text the phone keeps and sends unchanged.
export async function signRecord(record, signKey) {
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, signKey,
    utf8.encode(RECORD_CONTEXT + canonicalJson(record)));
  return canonicalJson({ ...record, sig: b64encode(signature) });
}

export async function newSigningKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicRaw = await crypto.subtle.exportKey("raw", pair.publicKey);
  return { privateKey: pair.privateKey, publicKey: b64encode(publicRaw) };
}

// Seals person fields for one station: an ephemeral X25519 key per page load.
export class Sealer {
  static async create(serverKeyText, stationId) {
    const serverRaw = b64decode(serverKeyText);
    const server = await crypto.subtle.importKey("raw", serverRaw, { name: "X25519" }, false, []);
    const ephemeral = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const ephemeralRaw = new Uint8Array(await crypto.subtle.exportKey("raw", ephemeral.publicKey));
    const shared = await crypto.subtle.deriveBits({ name: "X25519", public: server }, ephemeral.privateKey, 256);
    const hkdf = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
    const key = new Uint8Array(await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: concat(utf8.encode(SEAL_INFO), ephemeralRaw, serverRaw) },
      hkdf, 256));
    return new Sealer(ephemeralRaw, key, utf8.encode(`${SEAL_INFO}|${stationId}`));
  }

  constructor(ephemeralRaw, key, aad) {
    this.ephemeralRaw = ephemeralRaw;
    this.key = key;
    this.aad = aad;
  }

  seal(person) {
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const body = chacha20poly1305(this.key, nonce, this.aad).encrypt(utf8.encode(canonicalJson(person)));
    return b64encode(concat(this.ephemeralRaw, nonce, body));
  }
}

// A new boot id for this page load: "proc-" and 32 hex digits, as a station off Linux makes.
export function newBootId() {
  return "proc-" + hex(crypto.getRandomValues(new Uint8Array(16)));
}
