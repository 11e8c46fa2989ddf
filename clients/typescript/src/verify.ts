/**
 * Offline verification of geiger records, as `geiger verify` does it:
 * every check of docs/DERIVATION.md section 7. The record's shape (the wire
 * types of the OpenAPI document), content-hash ID, key validity and Ed25519
 * signature, derivation name and spec limits, entropy hash and segment
 * accounting, re-derivation of the result from exactly the recorded bytes,
 * and, when the previous record is at hand, the link to it.
 *
 * No I/O and no platform APIs beyond TextEncoder, atob and btoa: it runs in
 * Node.js and in the browser (the verification page bundles it). Parse
 * records with `parseJson` so that integers beyond 2^53 stay exact.
 */

import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";

import { DERIVATION_V1, NeedMoreEntropy, derive, toHex } from "./derive.js";
import { DERIVATION_V2, deriveV2 } from "./derive-v2.js";
import { type Json, type JsonObject, JsonError, canonicalBytes, jsonEqual } from "./json.js";

ed.hashes.sha512 = sha512;

/** A signature whose Ed25519 check an async run does with WebCrypto. */
interface PendingSignature {
  publicKey: Uint8Array;
  signature: Uint8Array;
  message: Uint8Array;
}

/**
 * Set only during the synchronous part of an async run ({@link withWebCrypto}):
 * signature checks are collected here instead of done in pure TypeScript.
 * Safe as a module variable because nothing awaits while it is set.
 */
let pendingSignatures: PendingSignature[] | undefined;

/** Which check failed; the same codes as the Python library. */
export type VerifyErrorCode =
  | "malformed_record" | "bad_key_set" | "unsupported_algorithm" | "key_id_mismatch" | "unknown_key"
  | "bad_key" | "key_not_valid_at" | "bad_timestamp" | "canonical" | "id_mismatch" | "malformed_signature"
  | "bad_signature" | "unsupported_derivation" | "invalid_spec" | "entropy_not_hex"
  | "entropy_hash_mismatch" | "segment_length_mismatch" | "entropy_too_short" | "unused_entropy"
  | "result_mismatch" | "broken_link" | "request_mismatch";

/** A record failed verification; `code` names the check, `message` says it for people. */
export class VerifyError extends Error {
  override name = "VerifyError";
  constructor(readonly code: VerifyErrorCode, message: string) {
    super(message);
  }
}

/** What was checked, in order. */
export interface VerifyReport {
  kind: "chain" | "draw";
  id: string;
  checks: string[];
}

/** A key of `GET /v1/keys`. */
export interface KeyInfo {
  key_id: string;
  alg: string;
  public_key: string;
  valid_from: string;
  valid_until: string | null;
}

export const DRAW_BODY_FIELDS = [
  "type", "chain", "position", "previous", "tag", "customer", "request_id", "spec",
  "result", "issued_at", "ledger_index", "entropy", "derivation", "key_id",
] as const;
export const CHAIN_BODY_FIELDS = ["type", "customer", "tag", "created_at", "ledger_index", "key_id"] as const;
export const ENTROPY_FIELDS = ["segments", "hex", "sha256"] as const;
export const SEGMENT_FIELDS = ["device", "chunk_seq", "offset", "length"] as const;
export const SIGNATURE_FIELDS = ["alg", "key_id", "value"] as const;
export const KEY_FIELDS = ["key_id", "alg", "public_key", "valid_from", "valid_until"] as const;
export const SPEC_FIELDS: Record<string, readonly string[]> = {
  integers: ["kind", "min", "max", "count", "unique"],
  permutation: ["kind", "n"],
  selection: ["kind", "k", "n"],
  bytes: ["kind", "count"],
};

const MAX_VALUES = 10_000n;
const MAX_BYTES = 65_536n;
const MAX_SELECTION_N = (1n << 53n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const U32_MAX = (1n << 32n) - 1n;
const U64_MAX = (1n << 64n) - 1n;
const ID_RE = /^(ch|dr)_[a-z2-7]{40}$/;
const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$/;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

// ---- shape -----------------------------------------------------------------

const malformed = (where: string, why: string) => new VerifyError("malformed_record", `\`${where}\` ${why}`);

function obj(value: Json | undefined, where: string, fields: readonly string[], optional: readonly string[] = []): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw malformed(where, "is not an object");
  for (const name of fields) {
    if (!(name in value) && !optional.includes(name)) throw malformed(`${where}.${name}`, "is missing");
  }
  for (const name of Object.keys(value)) {
    if (!fields.includes(name)) throw malformed(`${where}.${name}`, "is not a field of this record");
  }
  return value;
}

function int(value: Json | undefined, where: string, lo: bigint, hi: bigint): bigint {
  const ok = typeof value === "bigint" || (typeof value === "number" && Number.isInteger(value));
  const v = ok ? BigInt(value as number | bigint) : undefined;
  if (v === undefined || v < lo || v > hi) throw malformed(where, `must be an integer in [${lo}, ${hi}]`);
  return v;
}

function str(value: Json | undefined, where: string): string {
  if (typeof value !== "string") throw malformed(where, "must be a string");
  return value;
}

function recordId(value: Json | undefined, where: string): string {
  if (typeof value !== "string" || !ID_RE.test(value)) {
    throw malformed(where, "is not a record ID (ch_ or dr_ and 40 base32 characters)");
  }
  return value;
}

function checkSpecShape(spec: Json | undefined, where: string): JsonObject {
  const kind = typeof spec === "object" && spec !== null && !Array.isArray(spec) ? spec.kind : undefined;
  if (typeof kind !== "string" || !(kind in SPEC_FIELDS)) {
    throw malformed(`${where}.kind`, "is not integers, permutation, selection or bytes");
  }
  const s = obj(spec, where, SPEC_FIELDS[kind]!, kind === "integers" ? ["unique"] : []);
  if (kind === "integers") {
    int(s.min, `${where}.min`, I64_MIN, I64_MAX);
    int(s.max, `${where}.max`, I64_MIN, I64_MAX);
    int(s.count, `${where}.count`, 0n, U32_MAX);
    if ("unique" in s && typeof s.unique !== "boolean") throw malformed(`${where}.unique`, "must be true or false");
  } else if (kind === "permutation") {
    int(s.n, `${where}.n`, 0n, U32_MAX);
  } else if (kind === "selection") {
    int(s.k, `${where}.k`, 0n, U32_MAX);
    int(s.n, `${where}.n`, 0n, U64_MAX);
  } else {
    int(s.count, `${where}.count`, 0n, U32_MAX);
  }
  return s;
}

function checkDrawShape(draw: Json | undefined): JsonObject {
  const d = obj(draw, "draw", ["id", ...DRAW_BODY_FIELDS]);
  if (d.type !== "draw") throw malformed("draw.type", 'must be "draw"');
  recordId(d.id, "draw.id");
  recordId(d.chain, "draw.chain");
  recordId(d.previous, "draw.previous");
  int(d.position, "draw.position", 0n, U64_MAX);
  int(d.ledger_index, "draw.ledger_index", 0n, U64_MAX);
  for (const name of ["tag", "customer", "issued_at", "derivation", "key_id"]) str(d[name], `draw.${name}`);
  if (d.request_id !== null) str(d.request_id, "draw.request_id");
  checkSpecShape(d.spec, "draw.spec");
  const result = d.result;
  if (typeof result === "object" && result !== null && !Array.isArray(result) && "values" in result) {
    obj(result, "draw.result", ["values"]);
    if (!Array.isArray(result.values)) throw malformed("draw.result.values", "must be a list");
    result.values.forEach((v, n) => int(v, `draw.result.values[${n}]`, I64_MIN, I64_MAX));
  } else if (typeof result === "object" && result !== null && !Array.isArray(result) && "hex" in result) {
    obj(result, "draw.result", ["hex"]);
    str(result.hex, "draw.result.hex");
  } else {
    throw malformed("draw.result", 'must be {"values": [...]} or {"hex": "..."}');
  }
  const entropy = obj(d.entropy, "draw.entropy", ENTROPY_FIELDS);
  str(entropy.hex, "draw.entropy.hex");
  str(entropy.sha256, "draw.entropy.sha256");
  if (!Array.isArray(entropy.segments)) throw malformed("draw.entropy.segments", "must be a list");
  entropy.segments.forEach((seg, n) => {
    const where = `draw.entropy.segments[${n}]`;
    const s = obj(seg, where, SEGMENT_FIELDS);
    str(s.device, `${where}.device`);
    int(s.chunk_seq, `${where}.chunk_seq`, 0n, U64_MAX);
    int(s.offset, `${where}.offset`, 0n, U32_MAX);
    int(s.length, `${where}.length`, 0n, U32_MAX);
  });
  return d;
}

function checkSignatureShape(sig: Json | undefined): JsonObject {
  const s = obj(sig, "signature", SIGNATURE_FIELDS);
  for (const name of SIGNATURE_FIELDS) str(s[name], `signature.${name}`);
  return s;
}

// ---- pieces ----------------------------------------------------------------

const B32 = "abcdefghijklmnopqrstuvwxyz234567";

function base32Lower(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

/** `ch_`/`dr_` and the first 25 bytes of SHA-256 of the canonical body, base32. */
export function computeRecordId(kind: "chain" | "draw", canonicalBody: Uint8Array): string {
  return (kind === "chain" ? "ch_" : "dr_") + base32Lower(sha256(canonicalBody).subarray(0, 25));
}

/** `k_` and the first 8 bytes of SHA-256 of the public key, hex. */
export function keyIdOf(publicKey: Uint8Array): string {
  return "k_" + toHex(sha256(publicKey).subarray(0, 8));
}

/** Standard padded base64 in its one canonical form, of exactly `length` bytes. */
function strictBase64(text: string, length: number): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return undefined;
  let raw: string;
  try {
    raw = atob(text);
  } catch {
    return undefined;
  }
  if (raw.length !== length || btoa(raw) !== text) return undefined;
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function fromHex(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  const out = new Uint8Array(text.length / 2);
  for (let n = 0; n < out.length; n++) out[n] = parseInt(text.slice(2 * n, 2 * n + 2), 16);
  return out;
}

/** RFC 3339 UTC (`...Z`) as [seconds since 1970, nanoseconds]. */
export function parseTime(text: Json | undefined): [number, number] {
  const m = typeof text === "string" ? TIME_RE.exec(text) : null;
  if (!m) throw new VerifyError("bad_timestamp", `timestamp \`${String(text)}\` is not RFC 3339`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    throw new VerifyError("bad_timestamp", `timestamp \`${text as string}\` is not RFC 3339`);
  }
  const seconds = Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
  return [seconds, Number((m[7] ?? "").padEnd(9, "0"))];
}

const before = (a: [number, number], b: [number, number]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

function findKey(keys: Json, keyId: string): JsonObject | undefined {
  const list = typeof keys === "object" && keys !== null && !Array.isArray(keys) ? keys.keys : undefined;
  if (!Array.isArray(list)) throw new VerifyError("bad_key_set", "the key set is not `GET /v1/keys` JSON");
  for (const key of list) {
    if (typeof key === "object" && key !== null && !Array.isArray(key) && key.key_id === keyId) return key;
  }
  return undefined;
}

function checkSignature(keys: Json, sig: JsonObject, recordKeyId: string, signedAt: string, message: Uint8Array, report: VerifyReport): void {
  if (sig.alg !== "ed25519") throw new VerifyError("unsupported_algorithm", `signature algorithm \`${String(sig.alg)}\` is not ed25519`);
  if (sig.key_id !== recordKeyId) {
    throw new VerifyError("key_id_mismatch", `the signature names key ${String(sig.key_id)} but the record names key ${recordKeyId}`);
  }
  const key = findKey(keys, recordKeyId);
  if (!key) throw new VerifyError("unknown_key", `key ${recordKeyId} is not in the key set`);
  const badKey = (reason: string) => new VerifyError("bad_key", `key ${recordKeyId} is malformed: ${reason}`);
  try {
    obj(key, "key", KEY_FIELDS, ["valid_until"]);
  } catch (e) {
    throw badKey((e as Error).message);
  }
  const raw = typeof key.public_key === "string" ? strictBase64(key.public_key, 32) : undefined;
  if (!raw) throw badKey("public_key is not 32 bytes of base64");
  try {
    ed.Point.fromBytes(raw, false);
  } catch {
    throw badKey("not an Ed25519 point");
  }
  if (keyIdOf(raw) !== key.key_id) throw badKey("key_id does not match the public key");
  const at = parseTime(signedAt);
  const from = parseTime(key.valid_from);
  const until = key.valid_until === undefined || key.valid_until === null ? undefined : parseTime(key.valid_until);
  if (before(at, from) || (until !== undefined && !before(at, until))) {
    throw new VerifyError("key_not_valid_at", `key ${recordKeyId} was not valid at ${signedAt}`);
  }
  report.checks.push(`key ${recordKeyId} is known and was valid at ${signedAt}`);

  const signature = strictBase64(String(sig.value), 64);
  if (!signature) throw new VerifyError("malformed_signature", "the signature is malformed");
  let s = 0n;
  for (let n = 63; n >= 32; n--) s = (s << 8n) | BigInt(signature[n]!);
  // As the Rust verifier's verify_strict: S < L, R a point, and neither the
  // key nor R of small order (WebCrypto's Ed25519 checks only the first).
  let strict = s < L;
  try {
    strict &&= !ed.Point.fromBytes(raw, false).isSmallOrder() && !ed.Point.fromBytes(signature.subarray(0, 32), false).isSmallOrder();
  } catch {
    strict = false;
  }
  let valid = false;
  if (strict && pendingSignatures) {
    pendingSignatures.push({ publicKey: raw, signature, message });
    valid = true; // checked by withWebCrypto before any report is returned
  } else if (strict) {
    try {
      valid = ed.verify(signature, message, raw, { zip215: false });
    } catch {
      valid = false;
    }
  }
  if (!valid) throw new VerifyError("bad_signature", "the signature does not match the record");
  report.checks.push("Ed25519 signature over the canonical record is valid");
}

function canonical(body: JsonObject): Uint8Array {
  try {
    return canonicalBytes(body);
  } catch (e) {
    if (e instanceof JsonError) throw new VerifyError("canonical", `the record cannot be canonicalised: ${e.message}`);
    throw e;
  }
}

function checkId(kind: "chain" | "draw", claimed: string, body: Uint8Array, report: VerifyReport): void {
  const actual = computeRecordId(kind, body);
  if (actual !== claimed) throw new VerifyError("id_mismatch", `the ID is ${claimed} but the record hashes to ${actual}`);
  report.checks.push(`ID ${claimed} is the hash of the record`);
}

const without = (o: JsonObject, name: string): JsonObject => {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(o)) if (k !== name) out[k] = v;
  return out;
};

/** The hard limits of docs/DERIVATION.md section 5. */
export function checkSpec(spec: JsonObject): void {
  const bad = (msg: string) => new VerifyError("invalid_spec", `the spec breaks a limit: ${msg}`);
  const b = (v: Json | undefined) => BigInt(v as number | bigint);
  switch (spec.kind) {
    case "integers": {
      const [min, max, count] = [b(spec.min), b(spec.max), b(spec.count)];
      if (count < 1n || count > MAX_VALUES) throw bad(`\`count\` must be between 1 and ${MAX_VALUES}, got ${count}`);
      if (min > max) throw bad(`\`min\` (${min}) must not be greater than \`max\` (${max})`);
      const span = max - min + 1n;
      if (spec.unique === true && count > span) {
        throw bad(`\`unique\` needs at least \`count\` (${count}) values in [min, max], which holds only ${span}`);
      }
      return;
    }
    case "permutation": {
      const n = b(spec.n);
      if (n < 1n || n > MAX_VALUES) throw bad(`\`n\` must be between 1 and ${MAX_VALUES}, got ${n}`);
      return;
    }
    case "selection": {
      const [k, n] = [b(spec.k), b(spec.n)];
      if (n < 1n || n > MAX_SELECTION_N) throw bad(`\`n\` must be between 1 and ${MAX_SELECTION_N}, got ${n}`);
      if (k < 1n || k > MAX_VALUES) throw bad(`\`k\` must be between 1 and ${MAX_VALUES}, got ${k}`);
      if (k > n) throw bad(`\`k\` (${k}) must not be greater than \`n\` (${n})`);
      return;
    }
    default: {
      const count = b(spec.count);
      if (count < 1n || count > MAX_BYTES) throw bad(`\`count\` must be between 1 and ${MAX_BYTES}, got ${count}`);
    }
  }
}

// ---- records ---------------------------------------------------------------

/** Verifies a chain's genesis (the 201 body of `POST /v1/chains`): shape, ID, signature. */
export function verifyChain(chain: Json, keys: Json): VerifyReport {
  const c = obj(chain, "record", ["id", "chain", "signature"]);
  const record = obj(c.chain, "chain", ["id", ...CHAIN_BODY_FIELDS]);
  if (record.type !== "chain") throw malformed("chain.type", 'must be "chain"');
  const id = recordId(c.id, "id");
  recordId(record.id, "chain.id");
  for (const name of ["customer", "tag", "created_at", "key_id"]) str(record[name], `chain.${name}`);
  int(record.ledger_index, "chain.ledger_index", 0n, U64_MAX);
  const sig = checkSignatureShape(c.signature);
  const report: VerifyReport = { kind: "chain", id, checks: [] };
  if (id !== record.id) throw new VerifyError("id_mismatch", `the ID is ${id} but the record hashes to ${String(record.id)}`);
  const message = canonical(without(record, "id"));
  checkId("chain", id, message, report);
  checkSignature(keys, sig, record.key_id as string, record.created_at as string, message, report);
  return report;
}

/**
 * Verifies a draw (a 201 body of `POST /v1/draws`, or a lookup's
 * `response`). `previous`, when given, is the record the draw names as
 * `previous`: a chain's 201 body or a draw's.
 */
export function verifyDraw(response: Json, keys: Json, previous?: Json): VerifyReport {
  const r = obj(response, "record", ["draw", "signature"]);
  const draw = checkDrawShape(r.draw);
  const sig = checkSignatureShape(r.signature);
  const report: VerifyReport = { kind: "draw", id: draw.id as string, checks: [] };

  const message = canonical(without(draw, "id"));
  checkId("draw", draw.id as string, message, report);
  checkSignature(keys, sig, draw.key_id as string, draw.issued_at as string, message, report);

  // Every version ever issued keeps verifying; the record names its own.
  const derivations: Record<string, typeof derive> = { [DERIVATION_V1]: derive, [DERIVATION_V2]: deriveV2 };
  const derivation = typeof draw.derivation === "string" && Object.hasOwn(derivations, draw.derivation)
    ? draw.derivation
    : undefined;
  if (derivation === undefined) {
    throw new VerifyError("unsupported_derivation", `derivation \`${String(draw.derivation)}\` is not supported by this verifier`);
  }
  const spec = draw.spec as JsonObject;
  checkSpec(spec);

  const ent = draw.entropy as JsonObject;
  const entropy = fromHex(ent.hex as string);
  if (!entropy) throw new VerifyError("entropy_not_hex", "the entropy is not valid hex");
  const actual = toHex(sha256(entropy));
  if (actual !== ent.sha256) {
    throw new VerifyError("entropy_hash_mismatch", `the entropy hashes to ${actual}, the record says ${String(ent.sha256)}`);
  }
  const segments = ent.segments as JsonObject[];
  const covered = segments.reduce((sum, seg) => sum + BigInt(seg.length as number), 0n);
  if (covered !== BigInt(entropy.length)) {
    throw new VerifyError("segment_length_mismatch",
      `the entropy segments cover ${covered} bytes but ${entropy.length} bytes are recorded`);
  }
  report.checks.push(`${entropy.length} entropy bytes from ${segments.length} segment(s) match their SHA-256`);

  let derived;
  try {
    derived = derivations[derivation]!(spec, entropy);
  } catch (e) {
    if (e instanceof NeedMoreEntropy) {
      throw new VerifyError("entropy_too_short", "the recorded entropy is too short to derive the result");
    }
    throw e;
  }
  if (derived.consumed !== entropy.length) {
    throw new VerifyError("unused_entropy",
      `the recorded entropy has ${entropy.length - derived.consumed} bytes the derivation did not use`);
  }
  if (!jsonEqual(derived.result, draw.result as Json)) {
    throw new VerifyError("result_mismatch", "re-deriving the result from the recorded entropy gives a different result");
  }
  report.checks.push(`${derivation} re-derives the same ${String(spec.kind)} result from the recorded entropy`);

  checkChainPosition(draw, previous, report);
  return report;
}

function checkChainPosition(draw: JsonObject, previous: Json | undefined, report: VerifyReport): void {
  const broken = (why: string) => new VerifyError("broken_link", `the link to \`previous\` is broken: ${why}`);
  const chain = draw.chain as string;
  const prev = draw.previous as string;
  const position = BigInt(draw.position as number | bigint);
  if (!chain.startsWith("ch_")) throw broken(`\`chain\` ${chain} is not a chain ID`);
  if (position === 1n) {
    if (prev !== chain) throw broken("position 1 must follow the chain's genesis");
  } else if (position === 0n) {
    throw broken("positions start at 1");
  } else if (prev.startsWith("ch_")) {
    throw broken("only position 1 follows the genesis");
  }
  if (previous === undefined || previous === null) return;
  const p = previous as JsonObject;
  let prevId: string, prevChain: string, prevCustomer: Json | undefined, prevPosition: bigint;
  if ("chain" in p && !("draw" in p)) {
    prevId = p.id as string;
    prevChain = prevId;
    prevCustomer = (p.chain as JsonObject).customer;
    prevPosition = 0n;
  } else {
    const body = p.draw as JsonObject;
    prevId = body.id as string;
    prevChain = body.chain as string;
    prevCustomer = body.customer;
    prevPosition = BigInt(body.position as number | bigint);
  }
  if (prev !== prevId) throw broken(`\`previous\` is ${prev} but the given record is ${prevId}`);
  if (chain !== prevChain || draw.customer !== prevCustomer) throw broken("`previous` belongs to another chain or customer");
  if (position !== prevPosition + 1n) throw broken(`position ${position} does not follow position ${prevPosition}`);
  report.checks.push(`follows ${prevId} at position ${position} of chain ${chain}`);
}

const normalSpec = (spec: Json | undefined): Json | undefined =>
  typeof spec === "object" && spec !== null && !Array.isArray(spec) && spec.kind === "integers" && !("unique" in spec)
    ? { ...spec, unique: false }
    : spec;

/** Verifies `GET /v1/draws/{id}` output: the draw, and that the recorded request is the one it answers. */
export function verifyLookup(lookup: Json, keys: Json, previous?: Json): VerifyReport {
  const l = obj(lookup, "lookup", ["request", "response"]);
  const request = obj(l.request, "request", ["previous", "tag", "spec", "request_id"], ["request_id"]);
  recordId(request.previous, "request.previous");
  str(request.tag, "request.tag");
  checkSpecShape(request.spec, "request.spec");
  const report = verifyDraw(l.response as Json, keys, previous);
  const draw = (l.response as JsonObject).draw as JsonObject;
  if (request.previous !== draw.previous || request.tag !== draw.tag
    || !jsonEqual(normalSpec(request.spec)!, normalSpec(draw.spec)!)
    || (request.request_id ?? null) !== draw.request_id) {
    throw new VerifyError("request_mismatch", "the recorded request differs from the signed draw");
  }
  report.checks.push("the recorded request matches the signed draw");
  return report;
}

/** Verifies what `geiger verify` accepts: a draw lookup, a draw's 201 body, or a chain's. */
export function verifyRecord(record: Json, keys: Json, previous?: Json): VerifyReport {
  const r = typeof record === "object" && record !== null && !Array.isArray(record) ? record : undefined;
  if (r && "response" in r) return verifyLookup(r, keys, previous);
  let prev = previous;
  if (typeof prev === "object" && prev !== null && !Array.isArray(prev) && "response" in prev) prev = prev.response;
  if (r && "draw" in r) return verifyDraw(r, keys, prev);
  if (r && "chain" in r) return verifyChain(r, keys);
  throw new VerifyError("malformed_record", "input is neither a draw lookup, a draw nor a chain");
}

// ---- faster, with WebCrypto --------------------------------------------------

let webCryptoEd25519: Promise<boolean> | undefined;

/** Whether this platform's WebCrypto does Ed25519 (Node.js 20, current browsers). */
function hasWebCryptoEd25519(): Promise<boolean> {
  webCryptoEd25519 ??= (async () => {
    try {
      const subtle = globalThis.crypto?.subtle;
      if (!subtle) return false;
      const publicKey = ed.getPublicKey(new Uint8Array(32).fill(1));
      const message = new Uint8Array([1, 2, 3]);
      const signature = ed.sign(message, new Uint8Array(32).fill(1));
      const key = await subtle.importKey("raw", publicKey as BufferSource, { name: "Ed25519" }, false, ["verify"]);
      const good = await subtle.verify("Ed25519", key, signature as BufferSource, message as BufferSource);
      const bad = await subtle.verify("Ed25519", key, signature as BufferSource, new Uint8Array([1, 2, 4]));
      return good && !bad;
    } catch {
      return false;
    }
  })();
  return webCryptoEd25519;
}

/**
 * Runs a synchronous verification with its Ed25519 checks done by WebCrypto
 * (about 15 times faster than pure TypeScript), or as it is where WebCrypto
 * has no Ed25519. Errors keep their precedence: a bad signature is reported
 * before any check that comes after it, as in the synchronous run.
 */
async function withWebCrypto<T>(run: () => T): Promise<T> {
  if (!(await hasWebCryptoEd25519())) return run();
  const pending: PendingSignature[] = [];
  let result: T | undefined;
  let failure: unknown;
  pendingSignatures = pending;
  try {
    result = run();
  } catch (e) {
    failure = e;
  } finally {
    pendingSignatures = undefined;
  }
  for (const p of pending) {
    let valid = false;
    try {
      const subtle = globalThis.crypto.subtle;
      const key = await subtle.importKey("raw", p.publicKey as BufferSource, { name: "Ed25519" }, false, ["verify"]);
      valid = await subtle.verify("Ed25519", key, p.signature as BufferSource, p.message as BufferSource);
    } catch {
      valid = false;
    }
    if (!valid) throw new VerifyError("bad_signature", "the signature does not match the record");
  }
  if (failure !== undefined) throw failure;
  return result as T;
}

/** {@link verifyRecord}, with Ed25519 by WebCrypto where the platform has it. */
export const verifyRecordAsync = (record: Json, keys: Json, previous?: Json): Promise<VerifyReport> =>
  withWebCrypto(() => verifyRecord(record, keys, previous));
/** {@link verifyDraw}, with Ed25519 by WebCrypto where the platform has it. */
export const verifyDrawAsync = (response: Json, keys: Json, previous?: Json): Promise<VerifyReport> =>
  withWebCrypto(() => verifyDraw(response, keys, previous));
/** {@link verifyChain}, with Ed25519 by WebCrypto where the platform has it. */
export const verifyChainAsync = (chain: Json, keys: Json): Promise<VerifyReport> =>
  withWebCrypto(() => verifyChain(chain, keys));
/** {@link verifyLookup}, with Ed25519 by WebCrypto where the platform has it. */
export const verifyLookupAsync = (lookup: Json, keys: Json, previous?: Json): Promise<VerifyReport> =>
  withWebCrypto(() => verifyLookup(lookup, keys, previous));
