// The station's payload rules (edge/payloads.py, qrgate/personal_pass.py, qrgate/masking.py,
// qrgate/persons.py), ported for the phone scanner. The Python code is the rule of record:
// tests/test_phone_payloads.py runs every sample through both and requires the same person or
// the same refusal code. The page needs them to refuse junk at the gate, to verify a pass's
// signature offline, to mask the name it shows and to seal the same person fields a station
// seals; the server opens and checks those fields as it does a station's.

export const MAX_PAYLOAD_CHARS = 1024;
export const MAX_PAYLOAD_BYTES = 2048;
const PASS_PREFIX = "QG1.";
const MAX_PASS_CHARS = 1024;
const MAX_PID_CHARS = 64;
const EARLIEST_YEAR = 1900;

export class PayloadRefused extends Error {
  constructor(reason, detail) {
    super(`${reason}: ${detail}`);
    this.reason = reason;
    this.detail = detail;
  }
}

// Python's str.strip() and str.split() whitespace (str.isspace), which is not JavaScript's \s.
const WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP = new RegExp(`^[${WS}]+|[${WS}]+$`, "g");
const RSTRIP = new RegExp(`[${WS}]+$`);
const SPLIT = new RegExp(`[${WS}]+`);
const strip = (s) => s.replace(STRIP, "");
const rstrip = (s) => s.replace(RSTRIP, "");
const words = (s) => s.split(SPLIT).filter((w) => w !== "");
const codePoints = (s) => Array.from(s).length;

const CCCD_ID = /^[0-9]{12}$/;
const CMND_ID = /^[0-9]{9,12}$/;
const DMY_COMPACT = /^([0-9]{2})([0-9]{2})([0-9]{4})$/;
const DMY_SLASHED = /^([0-9]{2})\/([0-9]{2})\/([0-9]{4})$/;
const YEAR = /^[0-9]{4}$/;
const BHYT_CODE = /^(?:[A-Z]{2}[0-9]{13}|[0-9]{10})$/;
const HEX = /^(?:[0-9A-Fa-f]{2})+$/;
const NATIONAL_DATE_SHAPE = /^[0-9*]{4}-[0-9*]{2}-[0-9*]{2}$/;
const NATIONAL_DATE = /^([0-9]{4})-([0-9]{2}|\*\*)-([0-9]{2}|\*\*)$/;
const NATIONAL_ID = /^[0-9A-Z*]{6,20}$/;
const SEX_CCCD = { "nam": "M", "nữ": "F", "nu": "F" };
const SEX_BHYT = { "1": "M", "2": "F" };
const BIRTH = /^[0-9]{4}(-([0-9]{2}|\*\*)-([0-9]{2}|\*\*))?$/;
const ISO_DATE = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;
const B64URL = /^[A-Za-z0-9_-]*$/;
const HIDDEN = /[\p{Cc}\p{Cf}]/gu;

function cleanName(value) {
  return words(value.replace(HIDDEN, "")).join(" ").normalize("NFC");
}

function requireName(value, where) {
  const name = cleanName(value);
  if (!name) throw new PayloadRefused("bad_field", `${where}: name is empty`);
  return name;
}

const pad = (n, width) => String(n).padStart(width, "0");

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const leap = (y) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

// A date as Python's date.isoformat() writes it, or a refusal when it is not a real date.
function realDate(year, month, day, where) {
  const ok = year >= 1 && year <= 9999 && month >= 1 && month <= 12 && day >= 1
    && day <= (month === 2 && leap(year) ? 29 : DAYS_IN_MONTH[month - 1]);
  if (!ok) throw new PayloadRefused("bad_field", `${where}: not a real date`);
  return `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}`;
}

function checkBirthYear(year, today, where) {
  const latest = today ? Number(today.slice(0, 4)) : 9999;
  if (!(year >= EARLIEST_YEAR && year <= latest)) {
    throw new PayloadRefused("bad_field", `${where}: birth year out of range`);
  }
}

function checkBirthDate(born, today, where) {
  checkBirthYear(Number(born.slice(0, 4)), today, where);
  if (today && born > today) throw new PayloadRefused("bad_field", `${where}: birth date is in the future`);
}

function dmy(value, pattern, where) {
  const match = pattern.exec(strip(value));
  if (!match) throw new PayloadRefused("bad_field", `${where}: date is not in the expected form`);
  const [day, month, year] = match.slice(1).map(Number);
  if (year < EARLIEST_YEAR) throw new PayloadRefused("bad_field", `${where}: year out of range`);
  return realDate(year, month, day, where);
}

function checkText(value, where) {
  if (value.includes("\ufffd")) {
    throw new PayloadRefused("bad_encoding", `${where}: holds U+FFFD (text was mis-decoded)`);
  }
  for (const char of value) {
    if (/\p{Cs}/u.test(char)) throw new PayloadRefused("bad_encoding", `${where}: holds a lone surrogate`);
    if (/\p{Cc}/u.test(char)) {
      const code = char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      throw new PayloadRefused("control_chars", `${where}: holds control character U+${code}`);
    }
  }
  return value;
}

function fromHex(value, where) {
  value = strip(value);
  if (!HEX.test(value)) throw new PayloadRefused("bad_encoding", `${where}: not an even run of hex digits`);
  const bytes = new Uint8Array(value.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(value.slice(2 * i, 2 * i + 2), 16);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new PayloadRefused("bad_encoding", `${where}: hex is not UTF-8`);
  }
  return checkText(text, where);
}

function optionalHex(fields, index, where) {
  if (index >= fields.length || ["", "-"].includes(strip(fields[index]))) return "";
  return fromHex(fields[index], where);
}

function optionalDmy(fields, index, where) {
  if (index >= fields.length || ["", "-"].includes(strip(fields[index]))) return "";
  return dmy(fields[index], DMY_SLASHED, where);
}

function parseCccd(fields, today) {
  if (fields.length < 6 || fields.length > 11) {
    throw new PayloadRefused("bad_field", `cccd: ${fields.length} fields, need 6 to 11`);
  }
  const oldId = strip(fields[1]);
  if (oldId && !CMND_ID.test(oldId)) {
    throw new PayloadRefused("bad_field", "cccd field 1: old id must be empty or 9-12 digits");
  }
  const name = requireName(fields[2], "cccd field 2");
  const born = dmy(fields[3], DMY_COMPACT, "cccd field 3 (birth)");
  checkBirthDate(born, today, "cccd field 3 (birth)");
  const sex = SEX_CCCD[strip(fields[4]).normalize("NFC").toLowerCase()];
  if (!sex) throw new PayloadRefused("bad_field", "cccd field 4: sex must be Nam or Nữ");
  if (fields.length > 6 && strip(fields[6])) {
    const issued = dmy(fields[6], DMY_COMPACT, "cccd field 6 (issued)");
    if (today && issued > today) throw new PayloadRefused("bad_field", "cccd field 6: issue date is in the future");
  }
  return { kind: "cccd", id: strip(fields[0]), name, birth: born, sex };
}

function bhytBirth(value, today) {
  value = strip(value);
  const where = "bhyt field 2 (birth)";
  if (YEAR.test(value)) {
    checkBirthYear(Number(value), today, where);
    return value;
  }
  const born = dmy(value, DMY_SLASHED, where);
  checkBirthDate(born, today, where);
  return born;
}

function parseBhyt(fields, today) {
  // The last field is "$" (or ends with it); drop the marker, keep the positions.
  const last = fields[fields.length - 1];
  fields = strip(last) === "$" ? fields.slice(0, -1) : [...fields.slice(0, -1), rstrip(last).slice(0, -1)];
  if (fields.length < 4) {
    throw new PayloadRefused("bad_field", `bhyt: ${fields.length} fields before '$', need 4 or more`);
  }
  const name = requireName(fromHex(fields[1], "bhyt field 1 (name)"), "bhyt field 1");
  const birth = bhytBirth(fields[2], today);
  const sex = SEX_BHYT[strip(fields[3])];
  if (!sex) throw new PayloadRefused("bad_field", "bhyt field 3: sex must be 1 or 2");
  optionalHex(fields, 4, "bhyt field 4 (address)");
  const validFrom = optionalDmy(fields, 6, "bhyt field 6 (valid from)");
  const validTo = optionalDmy(fields, 7, "bhyt field 7 (valid to)");
  if (validFrom && validTo && validTo < validFrom) {
    throw new PayloadRefused("bad_field", "bhyt fields 6-7: cover ends before it starts");
  }
  optionalDmy(fields, 8, "bhyt field 8 (issued)");
  optionalHex(fields, 10, "bhyt field 10 (guardian)");
  if (fields.length >= 16) optionalHex(fields, 15, "bhyt field 15 (office)");
  return { kind: "bhyt", id: strip(fields[0]), name, birth, sex };
}

function parseNational(fields, today) {
  if (fields.length < 4 || fields.length > 6) {
    throw new PayloadRefused("bad_field", `national: ${fields.length} fields, need 4 to 6`);
  }
  const id = strip(fields[0]);
  if (!NATIONAL_ID.test(id) || id.replaceAll("*", "").length < 3) {
    throw new PayloadRefused("bad_field", "national field 0: id must be 6-20 digits, capitals or '*'");
  }
  const name = requireName(fields[1], "national field 1");
  const where = "national field 2 (birth)";
  const match = NATIONAL_DATE.exec(strip(fields[2]));
  if (!match) throw new PayloadRefused("bad_field", `${where}: must be YYYY-MM-DD, day/month may be '**'`);
  const [, yearText, monthText, dayText] = match;
  const year = Number(yearText);
  checkBirthYear(year, today, where);
  if (monthText !== "**" && !(Number(monthText) >= 1 && Number(monthText) <= 12)) {
    throw new PayloadRefused("bad_field", `${where}: month out of range`);
  }
  if (dayText !== "**") {
    if (monthText === "**") {
      if (!(Number(dayText) >= 1 && Number(dayText) <= 31)) {
        throw new PayloadRefused("bad_field", `${where}: day out of range`);
      }
    } else {
      checkBirthDate(realDate(year, Number(monthText), Number(dayText), where), today, where);
    }
  }
  if (!["0", "1"].includes(strip(fields[3]))) {
    throw new PayloadRefused("bad_field", "national field 3: type must be 0 or 1");
  }
  return { kind: "national", id, name, birth: match[0], sex: "" };
}

function b64urlEncode(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

// Strict base64url without padding, and the only spelling of its bytes.
function b64urlDecode(part) {
  if (!B64URL.test(part) || part.length % 4 === 1) throw new Error("not unpadded base64url");
  const binary = atob(part.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (part.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64urlEncode(bytes) !== part) throw new Error("non-canonical base64url");
  return bytes;
}

const hasHidden = (value) => /[\p{Cc}\p{Cf}\p{Cs}]/u.test(value);

function claimDate(claims, key) {
  const value = claims[key];
  if (typeof value !== "string" || !ISO_DATE.test(value)) {
    throw new PayloadRefused("bad_field", `pass claim '${key}' is not YYYY-MM-DD`);
  }
  return realDate(Number(value.slice(0, 4)), Number(value.slice(5, 7)), Number(value.slice(8)),
    `pass claim '${key}'`);
}

// A QG1 pass's claims when its signature verifies with one of ``passKeys`` (key id -> CryptoKey).
async function verifyPass(text, passKeys, today) {
  if (codePoints(text) > MAX_PASS_CHARS) throw new PayloadRefused("too_long", `pass over ${MAX_PASS_CHARS} characters`);
  const parts = text.slice(PASS_PREFIX.length).split(".");
  if (parts.length !== 2) throw new PayloadRefused("bad_field", "pass must be QG1.<claims>.<signature>");
  const [claimsPart, signaturePart] = parts;
  let claims;
  try {
    claims = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(b64urlDecode(claimsPart)));
  } catch {
    throw new PayloadRefused("bad_field", "pass claims are not base64url JSON");
  }
  if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
    throw new PayloadRefused("bad_field", "pass claims are not a JSON object");
  }
  const issuer = claims.iss;
  if (typeof issuer !== "string" || !/^[0-9a-f]{8}$/.test(issuer)) {
    throw new PayloadRefused("bad_field", "pass claim 'iss' is not an 8-hex key id");
  }
  const key = passKeys.get(issuer);
  if (!key) throw new PayloadRefused("unknown_issuer", `no key for issuer ${issuer}`);
  let good = false;
  try {
    const signature = b64urlDecode(signaturePart);
    good = await crypto.subtle.verify({ name: "Ed25519" }, key, signature,
      new TextEncoder().encode(PASS_PREFIX + claimsPart));
  } catch {
    good = false;
  }
  if (!good) throw new PayloadRefused("bad_signature", `pass not signed by issuer ${issuer}`);
  const pid = claims.pid;
  if (typeof pid !== "string" || codePoints(pid) < 1 || codePoints(pid) > MAX_PID_CHARS || hasHidden(pid)) {
    throw new PayloadRefused("bad_field", `pass claim 'pid' must be 1-${MAX_PID_CHARS} printable characters`);
  }
  if (typeof claims.n !== "string" || !strip(claims.n)) {
    throw new PayloadRefused("bad_field", "pass claim 'n' must be a non-empty name");
  }
  const birth = claims.b === undefined ? "" : claims.b;
  if (typeof birth !== "string" || (birth && !BIRTH.test(birth))) {
    throw new PayloadRefused("bad_field", "pass claim 'b' must be YYYY or YYYY-MM-DD");
  }
  const issued = claimDate(claims, "iat");
  const expires = claimDate(claims, "exp");
  if (expires < issued) throw new PayloadRefused("bad_field", "pass expires before it was issued");
  if (today) {
    if (today < issued) throw new PayloadRefused("not_yet_valid", `pass valid from ${issued}`);
    if (today > expires) throw new PayloadRefused("expired", `pass expired on ${expires}`);
  }
  return { kind: "pass", id: pid, name: requireName(claims.n, "pass claim n"), birth, sex: "" };
}

function recognise(text) {
  const fields = text.split("|");
  if (fields.length >= 3 && NATIONAL_DATE_SHAPE.test(strip(fields[2]))) return parseNational;
  const first = strip(fields[0]);
  if (CCCD_ID.test(first) && fields.length > 1) return parseCccd;
  if (BHYT_CODE.test(first) && rstrip(text).endsWith("$")) return parseBhyt;
  return null;
}

// The person a decoded code holds, as {kind, id, name, birth, sex}, or a PayloadRefused.
// ``today`` is the venue's date as YYYY-MM-DD, or null when the phone's clock is not trusted
// (then a pass's dates and birth dates in the future are not checked, as on a station).
export async function parsePayload(text, { passKeys = new Map(), today = null } = {}) {
  if (codePoints(text) > MAX_PAYLOAD_CHARS) {
    throw new PayloadRefused("too_long", `${codePoints(text)} characters, limit ${MAX_PAYLOAD_CHARS}`);
  }
  if (new TextEncoder().encode(text).length > MAX_PAYLOAD_BYTES) {
    throw new PayloadRefused("too_long", `over ${MAX_PAYLOAD_BYTES} UTF-8 bytes`);
  }
  text = (text.startsWith("\ufeff") ? text.slice(1) : text).replace(/[\r\n\0]+$/, "");
  if (!strip(text)) throw new PayloadRefused("empty", "no text");
  if (text.includes("\ufffd") || /\p{Cs}/u.test(text)) {
    throw new PayloadRefused("bad_encoding", "payload: U+FFFD or lone surrogate (mis-decoded)");
  }
  if (text.startsWith(PASS_PREFIX)) {
    checkText(text, "payload");
    return verifyPass(text, passKeys, today);
  }
  const parser = recognise(text);
  if (!parser) throw new PayloadRefused("unknown_format", "not CCCD, BHYT, national QR or QG1 pass");
  checkText(text, "payload");
  return parser(text.split("|"), today);
}

// Issuer key id -> CryptoKey for the pass keys the server gave (base64 raw Ed25519 keys).
export async function importPassKeys(texts) {
  const keys = new Map();
  for (const text of texts) {
    const raw = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
    const id = Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
    keys.set(id, await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]));
  }
  return keys;
}

function maskWord(word) {
  const letters = [];
  for (const char of word) {
    if (letters.length && /\p{Mn}/u.test(char)) letters[letters.length - 1] += char;
    else letters.push(char);
  }
  return letters[0] + "*".repeat(letters.length - 1);
}

// "Nguyễn Văn Lâm" -> "Nguyễn V** L**" (qrgate.masking.mask_person_name).
export function maskPersonName(name) {
  const parts = words(name.normalize("NFC"));
  if (!parts.length) return "";
  if (parts.length === 1) return maskWord(parts[0]);
  return [parts[0], ...parts.slice(1).map(maskWord)].join(" ");
}

// The stable text naming a person, whatever card they showed (qrgate.persons.person_key).
export function personKey({ kind, id, name, birth }) {
  if (kind === "bhyt" && /^[0-9]{10}$/.test(id.slice(-10))) return "bhxh:" + id.slice(-10);
  if (kind === "national") {
    if (/^[0-9]{12}$/.test(id)) return "cccd:" + id;
    return `national:${id}|${words(name).join(" ").normalize("NFC").toUpperCase()}|${birth}`;
  }
  return `${kind}:${id}`;
}
