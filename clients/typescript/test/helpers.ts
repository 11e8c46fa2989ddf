/** Shared test helpers: paths, the record bundle, single-field tampers, re-sealing with a test key. */

import * as ed from "@noble/ed25519";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { type Json, type JsonObject, canonicalBytes, computeRecordId, keyIdOf, parseJson } from "../src/index.js";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
export const VECTORS = resolve(REPO, "protocol/tests/vectors.json");
export const RECORDS = process.env.CLIENTS_RECORDS ?? resolve(REPO, "clients/testdata/records.json");

export const loadBundle = (path = RECORDS) => parseJson(readFileSync(path, "utf8")) as JsonObject;

export type Path = (string | number)[];
export const clone = <T extends Json>(v: T): T => parseJson(JSON.stringify(v, (_k, x: unknown) =>
  typeof x === "bigint" ? `__big__${x}` : x).replace(/"__big__(-?\d+)"/g, "$1")) as T;

export function* leaves(value: Json, path: Path = []): Generator<Path> {
  if (Array.isArray(value)) for (let n = 0; n < value.length; n++) yield* leaves(value[n]!, [...path, n]);
  else if (typeof value === "object" && value !== null) for (const k of Object.keys(value)) yield* leaves(value[k]!, [...path, k]);
  else yield path;
}

export function changed(value: Json): Json {
  if (value === null) return "x";
  if (typeof value === "boolean") return !value;
  if (typeof value === "bigint") return value === (1n << 63n) - 1n ? value - 1n : value + 1n;
  if (typeof value === "number") return value + 1;
  if (typeof value === "string") return value === "" ? "a" : value.slice(0, -1) + (value.endsWith("a") ? "b" : "a");
  throw new TypeError("not a leaf");
}

export function getPath(value: Json, path: Path): Json {
  return path.reduce<Json>((v, step) => (v as Record<string | number, Json>)[step]!, value);
}

export function setPath<T extends Json>(value: T, path: Path, next: Json | undefined): T {
  const out = clone(value);
  const parent = getPath(out, path.slice(0, -1)) as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  if (next === undefined) delete parent[last];
  else parent[last] = next;
  return out;
}

function* members(value: Json, path: Path = []): Generator<Path> {
  if (Array.isArray(value)) for (let n = 0; n < value.length; n++) yield* members(value[n]!, [...path, n]);
  else if (typeof value === "object" && value !== null) {
    for (const k of Object.keys(value)) {
      yield [...path, k];
      yield* members(value[k]!, [...path, k]);
    }
  }
}

/** Each leaf changed alone, and each object member removed alone. */
export function singleFieldTampers(record: Json): [string, Json][] {
  const out: [string, Json][] = [];
  for (const p of leaves(record)) out.push([p.join("/"), setPath(record, p, changed(getPath(record, p)))]);
  for (const p of members(record)) out.push(["-" + p.join("/"), setPath(record, p, undefined)]);
  return out;
}

const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));

/** An Ed25519 key that re-seals records, so tests can build records whose ID and signature are right. */
export class ResealKey {
  readonly secret = Uint8Array.from({ length: 32 }, (_, n) => n);
  readonly publicKey = ed.getPublicKey(this.secret);
  readonly keyId = keyIdOf(this.publicKey);

  keySet(validFrom = "2000-01-01T00:00:00.000Z", validUntil: string | null = null): JsonObject {
    return { keys: [{ key_id: this.keyId, alg: "ed25519", public_key: b64(this.publicKey), valid_from: validFrom, valid_until: validUntil }] };
  }

  sealDraw(response: JsonObject): JsonObject {
    const body: JsonObject = { ...(clone(response).draw as JsonObject), key_id: this.keyId };
    delete body.id;
    const message = canonicalBytes(body);
    return {
      draw: { ...body, id: computeRecordId("draw", message) },
      signature: { alg: "ed25519", key_id: this.keyId, value: b64(ed.sign(message, this.secret)) },
    };
  }
}
