/**
 * Provenance of a draw's entropy (docs/DERIVATION.md section 10): each
 * segment checked against the device-signed chunk it came from, which geiger
 * publishes at `GET /v1/chunks/{device}/{seq}` once every byte of it is used
 * (409 `chunk_not_exhausted` before).
 *
 * `checkSegment` gives "verified" or the first of the six checks of section
 * 10.4 that fails; the same outcome names as the Rust and Python libraries.
 * No I/O: `checkDrawProvenance` takes a `fetch(device, seq)` that returns the
 * chunk, `null` while it is not exhausted ("pending"), or `undefined` when
 * there is no such signed chunk ("not_found"); `chunkFromReply` turns an
 * answer of `GET /v1/chunks/...` into that, and `checkDrawProvenanceAsync`
 * takes an async `fetch` (the CLI's and the verification page's).
 */

import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";

import { toHex } from "./derive.js";
import { type Json, type JsonObject, parseJson } from "./json.js";
import { parseTime } from "./verify.js";

ed.hashes.sha512 = sha512;

export type ProvenanceOutcome =
  | "verified" | "pending" | "not_found" | "wrong_chunk" | "malformed" | "key_not_device" | "key_not_published"
  | "hash_mismatch" | "bad_signature" | "out_of_range" | "entropy_mismatch" | "revealed_before_issue";

const CHUNK_DOMAIN = new TextEncoder().encode("geiger-chunk-v1\0");
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function fromHex(hex: string): Uint8Array | undefined {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/.test(hex)) return undefined;
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function strictBase64(text: Json | undefined, length: number): Uint8Array | undefined {
  if (typeof text !== "string") return undefined;
  let raw: Uint8Array;
  try {
    raw = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
  if (raw.length !== length || btoa(String.fromCharCode(...raw)) !== text) return undefined;
  return raw;
}

const u64be = (n: bigint) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n);
  return out;
};

/** `dev_` and the hex of the first 16 bytes of SHA-256 of the key. */
export function deviceIdOf(publicKey: Uint8Array): string {
  return `dev_${toHex(sha256(publicKey).subarray(0, 16))}`;
}

/** The 80 bytes a device signs for chunk `seq`. */
export function chunkStatement(device: string, seq: bigint, digest: Uint8Array, timestampMs: bigint): Uint8Array {
  const id = fromHex(device.slice(4));
  if (!device.startsWith("dev_") || id?.length !== 16) throw new Error(`\`${device}\` is not a device ID`);
  const out = new Uint8Array(80);
  out.set(CHUNK_DOMAIN, 0);
  out.set(id, 16);
  out.set(u64be(seq), 32);
  out.set(digest, 40);
  out.set(u64be(timestampMs), 72);
  return out;
}

function verifyStrict(publicKey: Uint8Array, signature: Uint8Array, message: Uint8Array): boolean {
  let s = 0n;
  for (let n = 63; n >= 32; n--) s = (s << 8n) | BigInt(signature[n]!);
  if (s >= L) return false;
  try {
    if (ed.Point.fromBytes(publicKey, false).isSmallOrder() || ed.Point.fromBytes(signature.subarray(0, 32), false).isSmallOrder()) {
      return false;
    }
    return ed.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

const big = (v: Json | undefined) => (typeof v === "bigint" ? v : typeof v === "number" ? BigInt(v) : undefined);
const later = (a: [number, number], b: [number, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

/** One segment (its bytes `entropy`, as the draw records them) against `chunk`. */
export function checkSegment(segment: JsonObject, entropy: Uint8Array, issuedAt: string, chunk: JsonObject, keys: JsonObject): ProvenanceOutcome {
  try {
    const seq = big(chunk.seq);
    if (chunk.device !== segment.device || seq === undefined || seq !== big(segment.chunk_seq)) return "wrong_chunk";
    const key = strictBase64(chunk.public_key, 32);
    if (!key) return "malformed";
    if (deviceIdOf(key) !== chunk.device) return "key_not_device";
    const devices = Array.isArray(keys.devices) ? keys.devices : [];
    const listed = devices.some((d) => typeof d === "object" && d !== null && !Array.isArray(d)
      && d.device === chunk.device && d.public_key === chunk.public_key);
    if (!listed) return "key_not_published";
    const data = typeof chunk.hex === "string" ? fromHex(chunk.hex) : undefined;
    const length = big(chunk.length);
    const timestamp = big(chunk.timestamp_ms);
    if (!data || length === undefined || timestamp === undefined || BigInt(data.length) !== length) return "malformed";
    const digest = sha256(data);
    if (toHex(digest) !== chunk.sha256) return "hash_mismatch";
    const signature = strictBase64(chunk.signature, 64);
    if (!signature) return "malformed";
    if (!verifyStrict(key, signature, chunkStatement(chunk.device as string, seq, digest, timestamp))) return "bad_signature";
    const offset = Number(segment.offset);
    const end = offset + Number(segment.length);
    if (end > data.length) return "out_of_range";
    const slice = data.subarray(offset, end);
    if (slice.length !== entropy.length || slice.some((b, i) => b !== entropy[i])) return "entropy_mismatch";
    if (later(parseTime(issuedAt), parseTime(chunk.exhausted_at))) return "revealed_before_issue";
  } catch {
    return "malformed";
  }
  return "verified";
}

/** Each segment of a draw's 201 body (verify it first) with its outcome. */
export function checkDrawProvenance(
  response: JsonObject,
  keys: JsonObject,
  fetch: (device: string, seq: bigint) => JsonObject | null | undefined,
): [JsonObject, ProvenanceOutcome][] {
  const draw = response.draw as JsonObject;
  const entropyRecord = draw.entropy as JsonObject;
  const entropy = fromHex(String(entropyRecord.hex)) ?? new Uint8Array();
  const out: [JsonObject, ProvenanceOutcome][] = [];
  let at = 0;
  for (const segment of entropyRecord.segments as JsonObject[]) {
    const length = Number(segment.length);
    const piece = entropy.subarray(at, at + length);
    at += length;
    const chunk = fetch(String(segment.device), big(segment.chunk_seq) ?? -1n);
    if (chunk === null) out.push([segment, "pending"]);
    else if (chunk === undefined) out.push([segment, "not_found"]);
    else out.push([segment, checkSegment(segment, piece, String(draw.issued_at), chunk, keys)]);
  }
  if (at !== entropy.length) throw new Error("the segment lengths do not add up to the entropy");
  return out;
}

/** A chunk, `null` while it is not exhausted, `undefined` when there is no such signed chunk. */
export type FetchedChunk = JsonObject | null | undefined;

/** An answer that is neither a chunk, nor 409 `chunk_not_exhausted`, nor 404: nothing to judge the segment by. */
export class ChunkFetchError extends Error {
  override name = "ChunkFetchError";
}

/**
 * What an answer of `GET /v1/chunks/{device}/{seq}` says (section 10.3): the
 * chunk (200), `null` (409 `chunk_not_exhausted`), `undefined` (404); any
 * other answer throws `ChunkFetchError`, as `geiger verify` and the Python
 * CLI stop there (a 429 or a 5xx says nothing about the chunk).
 */
export function chunkFromReply(where: string, status: number, body: string): FetchedChunk {
  if (status === 200) {
    let chunk: Json;
    try {
      chunk = parseJson(body);
    } catch (e) {
      throw new ChunkFetchError(`${where} did not answer a chunk: ${(e as Error).message}`);
    }
    if (typeof chunk !== "object" || chunk === null || Array.isArray(chunk)) throw new ChunkFetchError(`${where} did not answer a chunk`);
    return chunk;
  }
  if (status === 409 && body.includes('"chunk_not_exhausted"')) return null;
  if (status === 404) return undefined;
  throw new ChunkFetchError(`${where} answered ${status}: ${body.slice(0, 200)}`);
}

/** `checkDrawProvenance` with an async `fetch`, called once per distinct chunk, one at a time. */
export async function checkDrawProvenanceAsync(
  response: JsonObject,
  keys: JsonObject,
  fetch: (device: string, seq: bigint) => Promise<FetchedChunk>,
): Promise<[JsonObject, ProvenanceOutcome][]> {
  const chunks = new Map<string, FetchedChunk>();
  const segments = ((response.draw as JsonObject).entropy as JsonObject).segments as JsonObject[];
  for (const segment of segments) {
    const device = String(segment.device);
    const seq = big(segment.chunk_seq) ?? -1n;
    const at = `${device}/${seq}`;
    if (!chunks.has(at)) chunks.set(at, await fetch(device, seq));
  }
  return checkDrawProvenance(response, keys, (device, seq) => chunks.get(`${device}/${seq}`));
}
