/**
 * `geiger-verify verify --chunks`, run as a process as a user runs it, on a
 * draw re-sealed so that its two entropy segments come from two chunks
 * signed by the published test device key (secret 07 x 32,
 * protocol/tests/provenance_vectors.json): the chunks read from a
 * directory of `{device}-{seq}.json` bodies or served by a local HTTP
 * server started here, which can also answer 409, 404 or 503, or serve a
 * tampered chunk.
 */

import * as ed from "@noble/ed25519";
import { sha256 } from "@noble/hashes/sha2.js";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { type Json, type JsonObject, canonicalString, chunkStatement, deviceIdOf } from "../src/index.js";
import { REPO, ResealKey, loadBundle, setPath } from "./helpers.js";

const CLI = resolve(REPO, "clients/typescript/dist/src/cli.js");
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

const deviceSecret = new Uint8Array(32).fill(7);
const devicePublic = ed.getPublicKey(deviceSecret);
const device = deviceIdOf(devicePublic);

/** A chunk body as `GET /v1/chunks/{device}/{seq}` answers it, signed by the test device. */
function signedChunk(seq: number, data: Uint8Array, exhaustedAt: string): JsonObject {
  const digest = sha256(data);
  const timestamp = 1795000000123n;
  const signature = ed.sign(chunkStatement(device, BigInt(seq), digest, timestamp), deviceSecret);
  return {
    device, seq, public_key: b64(devicePublic), timestamp_ms: timestamp, length: data.length,
    sha256: hex(digest), signature: b64(signature), hex: hex(data), exhausted_at: exhaustedAt,
  };
}

// The draw: a committed one with at least 8 bytes of entropy, its segments
// replaced by bytes 54.. of chunk 3 and bytes 0.. of chunk 4, re-sealed.
const original = (loadBundle().lookups as JsonObject[])
  .map((l) => l.response as JsonObject)
  .find((r) => String(((r.draw as JsonObject).entropy as JsonObject).hex).length >= 16)!;
const entropy = bytes(String(((original.draw as JsonObject).entropy as JsonObject).hex));
const first = 5;
const segments = [
  { chunk_seq: 3, device, length: first, offset: 54 },
  { chunk_seq: 4, device, length: entropy.length - first, offset: 0 },
];
const key = new ResealKey();
const draw = key.sealDraw(setPath(original, ["draw", "entropy", "segments"], segments));
const issuedAt = String((draw.draw as JsonObject).issued_at);
const keys: JsonObject = {
  ...key.keySet(),
  devices: [{ device, alg: "ed25519", public_key: b64(devicePublic), valid_from: "2000-01-01T00:00:00.000Z", valid_until: null }],
};
const filler = (n: number, from: number) => Uint8Array.from({ length: n }, (_, i) => (from + 31 * i) & 0xff);
const chunk3Bytes = new Uint8Array([...filler(54, 1), ...entropy.subarray(0, first)]);
const chunk4Bytes = new Uint8Array([...entropy.subarray(first), ...filler(40, 2)]);
const chunk3 = signedChunk(3, chunk3Bytes, issuedAt);
const chunk4 = signedChunk(4, chunk4Bytes, issuedAt);

const at1 = `segment 1 (${device} chunk 3, bytes 54..${54 + first})`;
const at2 = `segment 2 (${device} chunk 4, bytes 0..${entropy.length - first})`;

const dir = mkdtempSync(join(tmpdir(), "geiger-ts-chunks-"));
const write = (name: string, value: Json) => {
  const path = join(dir, name);
  writeFileSync(path, canonicalString(value));
  return path;
};
const drawFile = write("draw.json", draw);
const keysFile = write("keys.json", keys);

/** What the local server answers, by path: status and body. */
const answers = new Map<string, [number, string]>();
const chunkPath = (seq: number) => `/v1/chunks/${device}/${seq}`;
const serve = (seq: number, chunk: JsonObject) => answers.set(chunkPath(seq), [200, canonicalString(chunk)]);
const notExhausted = (seq: number) => answers.set(chunkPath(seq), [409, canonicalString({
  error: { code: "chunk_not_exhausted", message: `chunk ${seq} of ${device} still has unused bytes` },
})]);
let server: http.Server;
let url = "";

before(async () => {
  server = http.createServer((req, res) => {
    const [status, body] = answers.get(req.url ?? "") ?? [404, canonicalString({ error: { code: "not_found", message: "no such chunk" } })];
    res.writeHead(status, { "content-type": "application/json" }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The CLI as a separate process (not execFileSync: the server above runs on this process's event loop). */
function run(...args: string[]): Promise<{ code: number | null; lines: string[]; stderr: string }> {
  return runCommand(process.execPath, [CLI, "verify", ...args]);
}

function runCommand(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; lines: string[]; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(command, args, env ? { env: { ...process.env, ...env } } : {});
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => done({ code, lines: stdout.trimEnd().split("\n"), stderr }));
  });
}

function resetServer(): void {
  answers.clear();
  answers.set("/v1/keys", [200, canonicalString(keys)]);
  serve(3, chunk3);
  serve(4, chunk4);
}

test("a draw whose chunks are saved in a directory verifies each segment's provenance", async () => {
  const chunks = join(dir, "chunks");
  mkdirSync(chunks);
  writeFileSync(join(chunks, `${device}-3.json`), canonicalString(chunk3));
  writeFileSync(join(chunks, `${device}-4.json`), canonicalString(chunk4));
  const out = await run(drawFile, "--keys", keysFile, "--chunks", chunks);
  assert.equal(out.code, 0, out.lines.join("\n") + out.stderr);
  assert.deepEqual(out.lines.slice(-3), [
    `ok   ${at1}: the device signed the chunk and the draw's bytes are its slice`,
    `ok   ${at2}: the device signed the chunk and the draw's bytes are its slice`,
    "VERIFIED",
  ]);
  assert.ok(out.lines.slice(0, -3).every((l) => l.startsWith("ok   ")));
});

test("a chunk missing from the directory fails its segment as not_found", async () => {
  const chunks = join(dir, "only-3");
  mkdirSync(chunks);
  writeFileSync(join(chunks, `${device}-3.json`), canonicalString(chunk3));
  const out = await run(drawFile, "--keys", keysFile, "--chunks", chunks);
  assert.equal(out.code, 1);
  assert.deepEqual(out.lines.slice(-2), [`FAILED ${at2}: not_found`, "FAILED provenance of 1 segment(s)"]);
});

test("a draw whose chunks the cluster serves verifies, keys and chunks fetched over HTTP", async () => {
  resetServer();
  const out = await run(drawFile, "--keys", `${url}/v1/keys`, "--chunks", `${url}/`);
  assert.equal(out.code, 0, out.lines.join("\n") + out.stderr);
  assert.deepEqual(out.lines.slice(-3), [
    `ok   ${at1}: the device signed the chunk and the draw's bytes are its slice`,
    `ok   ${at2}: the device signed the chunk and the draw's bytes are its slice`,
    "VERIFIED",
  ]);
});

test("a chunk not exhausted yet (409) leaves its segment not yet checkable, and the draw verified", async () => {
  resetServer();
  notExhausted(4);
  const out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 0, out.lines.join("\n") + out.stderr);
  assert.deepEqual(out.lines.slice(-3), [
    `ok   ${at1}: the device signed the chunk and the draw's bytes are its slice`,
    `pending ${at2}: the chunk is not exhausted yet; check again later`,
    "VERIFIED (provenance pending for 1 segment(s))",
  ]);
});

test("one changed byte of a chunk fails its segment and exits 1, whether its hash was kept or it was re-signed", async () => {
  const changed = chunk3Bytes.slice();
  changed[55]! ^= 0x01; // inside the draw's slice
  resetServer();
  serve(3, { ...chunk3, hex: hex(changed) });
  let out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 1);
  assert.deepEqual(out.lines.slice(-3), [
    `FAILED ${at1}: hash_mismatch`,
    `ok   ${at2}: the device signed the chunk and the draw's bytes are its slice`,
    "FAILED provenance of 1 segment(s)",
  ]);
  // Bytes the device really signed, but not those the draw recorded.
  serve(3, signedChunk(3, changed, issuedAt));
  out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 1);
  assert.equal(out.lines.at(-3), `FAILED ${at1}: entropy_mismatch`);
  // A signature by the device, but over another statement.
  serve(3, { ...chunk3, signature: b64(ed.sign(new Uint8Array(80), deviceSecret)) });
  out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 1);
  assert.equal(out.lines.at(-3), `FAILED ${at1}: bad_signature`);
});

test("a chunk the cluster does not publish (404) fails its segment as not_found", async () => {
  resetServer();
  answers.delete(chunkPath(4));
  const out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 1);
  assert.deepEqual(out.lines.slice(-2), [`FAILED ${at2}: not_found`, "FAILED provenance of 1 segment(s)"]);
});

test("an answer that says nothing about the chunk (503, or a 409 of another code) is unreadable input: exit 2", async () => {
  resetServer();
  answers.set(chunkPath(4), [503, canonicalString({ error: { code: "unavailable", message: "no leader" } })]);
  let out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 2);
  assert.match(out.stderr, /^Error: .*\/v1\/chunks\/dev_[0-9a-f]{32}\/4 answered 503/);
  answers.set(chunkPath(4), [409, canonicalString({ error: { code: "conflict", message: "?" } })]);
  out = await run(drawFile, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 2);
});

test("a draw that fails its own checks fails before any chunk is fetched", async () => {
  resetServer();
  const tampered = write("tampered.json", setPath(draw, ["draw", "tag"], "another tag"));
  const out = await run(tampered, "--keys", keysFile, "--chunks", url);
  assert.equal(out.code, 1);
  assert.match(out.lines.at(-1)!, /^FAILED /);
  assert.ok(!out.lines.some((l) => l.includes("segment 1")));
});

test("--chunks without a source is a usage error", async () => {
  const out = await run(drawFile, "--keys", keysFile, "--chunks");
  assert.equal(out.code, 2);
  assert.match(out.stderr, /^usage: geiger-verify verify FILE --keys FILE_OR_URL \[--previous FILE\] \[--chunks URL_OR_DIR\]/);
});

const PYTHON_SRC = resolve(REPO, "clients/python/src");
const python = spawnSync("python3", ["-c", "import cryptography"], { env: { ...process.env, PYTHONPATH: PYTHON_SRC } }).status === 0;

test("the Python CLI prints the same lines and exits with the same code in each case", { skip: python ? false : "no python3 with cryptography" }, async () => {
  const cases: [string, () => void][] = [
    ["all published", () => undefined],
    ["409", () => notExhausted(4)],
    ["404", () => answers.delete(chunkPath(4))],
    ["hash kept", () => serve(3, { ...chunk3, hex: hex(chunk3Bytes.map((b, i) => (i === 56 ? b ^ 0x80 : b))) })],
    ["another statement", () => serve(4, { ...chunk4, timestamp_ms: 1 })],
  ];
  for (const [name, setUp] of cases) {
    resetServer();
    setUp();
    const ts = await run(drawFile, "--keys", keysFile, "--chunks", url);
    const py = await runCommand("python3", ["-m", "geiger_client", "verify", drawFile, "--keys", keysFile, "--chunks", url], { PYTHONPATH: PYTHON_SRC });
    assert.deepEqual([ts.code, ts.lines], [py.code, py.lines], `${name}: ${py.stderr}`);
  }
});
