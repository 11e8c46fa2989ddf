/**
 * Against a real `geiger dev` node (started by clients/testdata/dev_records.py):
 * fresh records of every kind verify and agree with `geiger verify`, tampered
 * or not; the client fails over, retries a lost answer with the same
 * request_id and gets the original draw, and throws typed errors; the wire
 * fields are those of the node's OpenAPI document. Needs GEIGER_BIN or
 * target/debug/geiger; skipped without it unless GEIGER_REQUIRE_LIVE=1.
 */

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import {
  ApiError, Client, type Json, type JsonObject, PreviousAlreadyUsed, Unavailable, VerifyError, verifyRecord,
} from "../src/index.js";
import { CHAIN_BODY_FIELDS, DRAW_BODY_FIELDS, ENTROPY_FIELDS, KEY_FIELDS, SEGMENT_FIELDS, SIGNATURE_FIELDS, SPEC_FIELDS } from "../src/verify.js";
import { REPO, changed, getPath, leaves, loadBundle, setPath } from "./helpers.js";

const GEIGER = process.env.GEIGER_BIN ?? resolve(REPO, "target/debug/geiger");
const API_KEY = "gk_clients_test_key_0123456789abcdef";
const present = existsSync(GEIGER);
if (!present && process.env.GEIGER_REQUIRE_LIVE === "1") throw new Error(`GEIGER_REQUIRE_LIVE=1 but ${GEIGER} does not exist`);
const live = { skip: present ? false : `no geiger binary at ${GEIGER}` };

const dir = mkdtempSync(join(tmpdir(), "geiger-ts-live-"));
let url = "";
let pid = 0;
let dataDir = "";
let bundle: JsonObject = {};

const toText = (v: Json) => JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? `__b${x}` : x)).replace(/"__b(-?\d+)"/g, "$1");

before(() => {
  if (!present) return;
  execFileSync("python3", [resolve(REPO, "clients/testdata/dev_records.py"), "--geiger", GEIGER,
    "--out", join(dir, "bundle.json"), "--keep-running", join(dir, "node.json")], { stdio: "inherit" });
  const node = JSON.parse(readFileSync(join(dir, "node.json"), "utf8")) as { url: string; pid: number; data_dir: string };
  dataDir = node.data_dir;
  url = node.url;
  pid = node.pid;
  bundle = loadBundle(join(dir, "bundle.json"));
  writeFileSync(join(dir, "keys.json"), toText(bundle.keys!));
});

after(() => {
  if (pid) process.kill(pid, "SIGTERM");
  // The node's data goes once it has stopped; a second later is plenty for a dev node.
  if (dataDir) setTimeout(() => rmSync(dataDir, { recursive: true, force: true }), 1000);
  rmSync(dir, { recursive: true, force: true });
});

function rustVerifies(record: Json, previous?: Json): boolean {
  writeFileSync(join(dir, "record.json"), toText(record));
  const args = ["verify", join(dir, "record.json"), "--keys", join(dir, "keys.json")];
  if (previous !== undefined) {
    writeFileSync(join(dir, "previous.json"), toText(previous));
    args.push("--previous", join(dir, "previous.json"));
  }
  const out = spawnSync(GEIGER, args, { encoding: "utf8", env: { RUST_BACKTRACE: "0" } });
  assert.ok(out.status === 0 || out.status === 1, out.stdout + out.stderr);
  return out.status === 0;
}

function tsVerifies(record: Json, previous?: Json): boolean {
  try {
    verifyRecord(record, bundle.keys!, previous);
    return true;
  } catch (e) {
    if (e instanceof VerifyError) return false;
    throw e;
  }
}

test("fresh records of every kind verify here and with geiger verify", live, () => {
  const lookups = bundle.lookups as JsonObject[];
  assert.ok(tsVerifies(bundle.chain!) && rustVerifies(bundle.chain!));
  let previous: Json = bundle.chain!;
  for (const l of lookups) {
    assert.ok(tsVerifies(l, previous), "ts");
    assert.ok(rustVerifies(l, previous), "geiger verify");
    previous = l.response!;
  }
});

test("verdicts on tampered records agree with geiger verify", live, () => {
  const seen = new Set<string>();
  let compared = 0;
  for (const l of bundle.lookups as JsonObject[]) {
    const response = l.response as JsonObject;
    const kind = ((response.draw as JsonObject).spec as JsonObject).kind as string;
    if (seen.has(kind)) continue;
    seen.add(kind);
    for (const p of leaves(response)) {
      const tampered = setPath(response, p, changed(getPath(response, p)));
      assert.deepEqual([tsVerifies(tampered), rustVerifies(tampered)], [false, false], `${kind} ${p.join("/")}`);
      compared++;
    }
  }
  assert.ok(compared > 100);
});

test("the client draws every kind and reads the chain back verified", live, async () => {
  const client = new Client([url], { apiKey: API_KEY });
  const chain = await client.createChain("ts client");
  let previous = chain.id;
  const specs = (bundle.lookups as JsonObject[]).map((l) => ((l.response as JsonObject).draw as JsonObject).spec as JsonObject);
  for (const spec of specs) {
    const issued = await client.draw(previous, "ts", spec);
    assert.equal(issued.replayed, false);
    const lookup = await client.getDraw(issued.id);
    assert.equal(toText(lookup.response), toText(issued.response));
    previous = issued.id;
  }
  const positions: Json[] = [];
  for await (const d of client.iterChain(chain.id)) positions.push((d.draw as JsonObject).position!);
  assert.deepEqual(positions, specs.map((_s, n) => n + 1));
});

test("a retry with the same request_id gets the original draw; another gets previous_already_used", live, async () => {
  const client = new Client([url], { apiKey: API_KEY });
  const chain = await client.createChain("replays");
  const spec = { kind: "integers", min: 1, max: 6, count: 1 };
  const first = await client.draw(chain.id, "r", spec, "same-id-1");
  const again = await client.draw(chain.id, "r", spec, "same-id-1");
  assert.ok(again.replayed);
  assert.equal(again.raw, first.raw);
  await assert.rejects(client.draw(chain.id, "r", spec, "another-id"),
    (e: unknown) => e instanceof PreviousAlreadyUsed && e.existingId === first.id && e.status === 409);
});

test("unknown draws and bad specs are typed API errors", live, async () => {
  const client = new Client([url], { apiKey: API_KEY });
  await assert.rejects(client.getDraw("dr_" + "a".repeat(40)), (e: unknown) => e instanceof ApiError && e.status === 404 && e.code === "not_found");
  const chain = await client.createChain("bad spec");
  await assert.rejects(client.draw(chain.id, "r", { kind: "permutation", n: 0 }),
    (e: unknown) => e instanceof ApiError && e.status === 422 && e.code === "invalid_request");
});

test("the client fails over from a dead address", live, async () => {
  const dead = http.createServer();
  await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
  const deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
  await new Promise<void>((r) => dead.close(() => r()));
  const client = new Client([deadUrl, url], { apiKey: API_KEY });
  let previous = (await client.createChain("failover")).id;
  for (let n = 0; n < 4; n++) previous = (await client.draw(previous, "f", { kind: "bytes", count: 4 })).id;
  await assert.rejects(new Client([deadUrl], { deadlineMs: 500 }).keys(), Unavailable);
});

test("a lost answer is retried with the same request_id and replayed", live, async () => {
  let lose = 1;
  const seen: string[] = [];
  const proxy = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && !["host", "connection", "content-length"].includes(k)) headers[k] = v;
      const reply = await fetch(url + req.url, { method: req.method, headers, body: body.length ? body : undefined });
      const text = await reply.text();
      if (req.method === "POST" && req.url === "/v1/draws") {
        seen.push((JSON.parse(body.toString()) as { request_id: string }).request_id);
        if (lose > 0) {
          lose--;
          req.socket.destroy(); // committed upstream, answer never sent
          return;
        }
      }
      const out: Record<string, string> = {};
      reply.headers.forEach((v, k) => { if (!["transfer-encoding", "connection", "content-length"].includes(k)) out[k] = v; });
      res.writeHead(reply.status, out).end(text);
    });
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  try {
    const client = new Client([`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`], { apiKey: API_KEY });
    const chain = await client.createChain("lost answers");
    const issued = await client.draw(chain.id, "lost", { kind: "selection", k: 6, n: 49 });
    assert.ok(issued.replayed, "the second attempt is answered with the original draw");
    assert.equal(seen.length, 2);
    assert.equal(seen[0], seen[1]);
  } finally {
    proxy.closeAllConnections();
    proxy.close();
  }
});

test("geiger-verify --chunks prints what geiger verify --chunks prints for a fresh draw", live, async () => {
  const client = new Client([url], { apiKey: API_KEY });
  const chain = await client.createChain("provenance");
  // More than a chunk (4,096 bytes by default): at least two segments, the first one's chunk used up.
  const issued = await client.draw(chain.id, "p", { kind: "bytes", count: 4097 });
  writeFileSync(join(dir, "big.json"), issued.raw);
  const args = ["verify", join(dir, "big.json"), "--keys", `${url}/v1/keys`, "--chunks", url];
  const ts = spawnSync(process.execPath, [resolve(REPO, "clients/typescript/dist/src/cli.js"), ...args], { encoding: "utf8" });
  const rust = spawnSync(GEIGER, args, { encoding: "utf8", env: { RUST_BACKTRACE: "0" } });
  assert.equal(ts.status, 0, ts.stdout + ts.stderr);
  assert.deepEqual([ts.status, ts.stdout], [rust.status, rust.stdout]);
  assert.match(ts.stdout, /^ok   segment 1 \(dev_[0-9a-f]{32} chunk \d+, bytes \d+\.\.\d+\): the device signed the chunk/m);
  assert.match(ts.stdout, /^(ok  |pending) segment 2 /m);
});

test("the wire fields are those of the node's OpenAPI document", live, async () => {
  const doc = (await (await fetch(url + "/v1/openapi.json")).json()) as { components: { schemas: Record<string, { properties: Record<string, { enum?: string[] }>; oneOf?: { properties: Record<string, { enum?: string[] }> }[] }> } };
  const s = doc.components.schemas;
  const props = (name: string) => new Set(Object.keys(s[name]!.properties));
  assert.deepEqual(props("DrawBody"), new Set(DRAW_BODY_FIELDS));
  assert.deepEqual(props("ChainBody"), new Set(CHAIN_BODY_FIELDS));
  assert.deepEqual(props("EntropyUse"), new Set(ENTROPY_FIELDS));
  assert.deepEqual(props("EntropySegment"), new Set(SEGMENT_FIELDS));
  assert.deepEqual(props("Signature"), new Set(SIGNATURE_FIELDS));
  assert.deepEqual(props("KeyInfo"), new Set(KEY_FIELDS));
  const variants = Object.fromEntries(s.Spec!.oneOf!.map((v) => [v.properties.kind!.enum![0], new Set(Object.keys(v.properties))]));
  assert.deepEqual(variants, Object.fromEntries(Object.entries(SPEC_FIELDS).map(([k, v]) => [k, new Set(v)])));
});
