/**
 * The verification page in Debian's headless Chromium, driven by
 * playwright-core (no browser download), against a real `geiger dev` node:
 * real draws show VERIFIED with their values, tampered records served by a
 * test server show a failure naming what failed, unknown and malformed IDs
 * get a clear message, the page works from the keyboard, and a phone-sized
 * screenshot is saved to target/verify-page.png. Each entropy segment's
 * provenance shows checked, not yet checkable (409) or failed, from the
 * node's chunks or from tampered ones the test server serves; the test
 * server serves this tree's page (node/assets/verify), so that it is the
 * page under test even when the node binary was built before it.
 *
 * Needs CHROMIUM (default /usr/bin/chromium) and GEIGER_BIN (default
 * target/debug/geiger).
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { type Browser, type Page, chromium } from "playwright-core";

import { Client, type JsonObject, canonicalString } from "../src/index.js";
import { REPO, loadBundle, setPath } from "../test/helpers.js";

const GEIGER = process.env.GEIGER_BIN ?? resolve(REPO, "target/debug/geiger");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = resolve(REPO, "target/verify-page.png");
const ASSETS = resolve(REPO, "node/assets/verify");
const API_KEY = "gk_clients_test_key_0123456789abcdef";

const dir = mkdtempSync(join(tmpdir(), "geiger-page-"));
let url = "";
let pid = 0;
let dataDir = "";
let bundle: JsonObject = {};
let browser: Browser;
let tamperServer: http.Server;
let tamperUrl = "";
/** Answers the test server gives instead of the node's, by path: a body (200), or a status and a body. */
const tampered = new Map<string, string | [number, string]>();

/** This tree's page, as the node serves it (node/src/api/verify_page.rs). */
function pageAsset(path: string): [string, string] | undefined {
  if (path === "/verify/assets/verify.js") return ["text/javascript; charset=utf-8", "verify.js"];
  if (path === "/verify/assets/verify.css") return ["text/css; charset=utf-8", "verify.css"];
  if (/^\/verify(\/[^/]+)?$/.test(path)) return ["text/html; charset=utf-8", "index.html"];
  return undefined;
}

before(async () => {
  execFileSync("python3", [resolve(REPO, "clients/testdata/dev_records.py"), "--geiger", GEIGER,
    "--out", join(dir, "bundle.json"), "--keep-running", join(dir, "node.json")], { stdio: "inherit" });
  const node = JSON.parse(readFileSync(join(dir, "node.json"), "utf8")) as { url: string; pid: number; data_dir: string };
  dataDir = node.data_dir;
  url = node.url;
  pid = node.pid;
  bundle = loadBundle(join(dir, "bundle.json"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // Playwright starts Chromium with a fresh, empty user data directory of its own.
  });
  // A test server that serves this tree's page and the node's API, except
  // for the paths in `tampered`, whose answers it replaces.
  tamperServer = http.createServer(async (req, res) => {
    const path = req.url ?? "/";
    const fake = tampered.get(path);
    if (fake !== undefined) {
      const [status, body] = typeof fake === "string" ? [200, fake] : fake;
      res.writeHead(status, { "content-type": "application/json" }).end(body);
      return;
    }
    const asset = pageAsset(path);
    if (asset) {
      res.writeHead(200, { "content-type": asset[0] }).end(readFileSync(join(ASSETS, asset[1])));
      return;
    }
    const reply = await fetch(url + path);
    const headers: Record<string, string> = {};
    reply.headers.forEach((v, k) => {
      if (!["transfer-encoding", "connection", "content-length", "content-encoding"].includes(k)) headers[k] = v;
    });
    res.writeHead(reply.status, headers).end(Buffer.from(await reply.arrayBuffer()));
  });
  await new Promise<void>((r) => tamperServer.listen(0, "127.0.0.1", r));
  tamperUrl = `http://127.0.0.1:${(tamperServer.address() as AddressInfo).port}`;
});

after(async () => {
  await browser?.close();
  tamperServer?.close();
  if (pid) process.kill(pid, "SIGTERM");
  // The node's data goes once it has stopped; a second later is plenty for a dev node.
  if (dataDir) setTimeout(() => rmSync(dataDir, { recursive: true, force: true }), 1000);
  rmSync(dir, { recursive: true, force: true });
});

const lookups = () => bundle.lookups as JsonObject[];
const drawOf = (l: JsonObject) => (l.response as JsonObject).draw as JsonObject;

/** The browser logs a 404 (an unknown draw) and a 409 (a chunk not used up yet) as errors; both are answers the page expects. */
const EXPECTED_STATUSES = /\b40[49]\b/;

async function open(base: string, id: string, viewport = { width: 390, height: 844 }, expected = EXPECTED_STATUSES): Promise<Page> {
  const page = await browser.newPage({ viewport });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && !expected.test(m.text())) errors.push(m.text());
  });
  await page.goto(`${base}/verify/${id}`);
  await page.waitForSelector('#verdict:not([data-state="pending"]):not([data-state="idle"])', { timeout: 15000 });
  assert.deepEqual(errors, [], "no script errors");
  return page;
}

const verdict = async (page: Page) => ({
  state: await page.getAttribute("#verdict", "data-state"),
  headline: (await page.textContent("#verdict-headline")) ?? "",
  detail: (await page.textContent("#verdict-detail")) ?? "",
});

test("a real draw shows VERIFIED with its values, on a phone-sized screen", async () => {
  const lookup = lookups().find((l) => (drawOf(l).spec as JsonObject).kind === "selection")!;
  const draw = drawOf(lookup);
  const page = await open(url, draw.id as string);
  const v = await verdict(page);
  assert.equal(v.state, "ok", v.headline + " " + v.detail);
  assert.equal(v.headline, "VERIFIED");
  const shown = await page.$$eval("#result .values li", (items) => items.map((i) => i.textContent));
  assert.deepEqual(shown, ((draw.result as JsonObject).values as number[]).map(String));
  const facts = (await page.textContent("#facts")) ?? "";
  assert.ok(facts.includes(draw.issued_at as string) && facts.includes(draw.chain as string));
  assert.ok(facts.includes("6 different numbers from 1 to 49"));
  const checks = await page.$$eval("#checks li", (items) => items.map((i) => i.textContent ?? ""));
  assert.ok(checks.some((c) => c.includes("Ed25519 signature")) && checks.some((c) => c.includes("re-derives")));
  // Neither side of the screen is cut off.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the page is ${width}px wide on a 390px screen`);
  mkdirSync(resolve(REPO, "target"), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await page.close();
});

test("every draw the tests produce shows VERIFIED, as geiger verify says", async () => {
  for (const lookup of lookups()) {
    const draw = drawOf(lookup);
    const page = await open(url, draw.id as string, { width: 1024, height: 768 });
    const v = await verdict(page);
    assert.equal(v.state, "ok", `${draw.id as string}: ${v.headline} ${v.detail}`);
    // The draws on either side are linked.
    const links = await page.$$eval("#facts a.id", (as) => as.map((a) => a.textContent));
    if ((draw.position as number) > 1) assert.ok(links.includes(draw.previous as string));
    await page.close();
  }
});

test("a tampered record shows a failure that names what failed", async () => {
  const lookup = lookups()[0]!;
  const id = drawOf(lookup).id as string;
  const values = (drawOf(lookup).result as JsonObject).values as number[];
  const changedResult = setPath(lookup, ["response", "draw", "result", "values", 0], values[0] === 6 ? 5 : 6);
  tampered.set(`/v1/draws/${id}`, canonicalString(changedResult));
  let page = await open(tamperUrl, id);
  let v = await verdict(page);
  assert.equal(v.state, "fail");
  assert.match(v.headline, /^NOT VERIFIED: The draw's ID does not match its content/);
  assert.match(v.detail, /the record hashes to dr_/);
  await page.screenshot({ path: resolve(REPO, "target/verify-page-tampered.png"), fullPage: true });
  await page.close();

  const badSignature = setPath(lookup, ["response", "signature", "value"],
    "A".repeat(86) + "==");
  tampered.set(`/v1/draws/${id}`, canonicalString(badSignature));
  page = await open(tamperUrl, id);
  v = await verdict(page);
  assert.equal(v.state, "fail");
  assert.match(v.headline, /signature does not match the record/);
  await page.close();

  const otherRequest = setPath(lookup, ["request", "tag"], "another round");
  tampered.set(`/v1/draws/${id}`, canonicalString(otherRequest));
  page = await open(tamperUrl, id);
  v = await verdict(page);
  assert.match(v.headline, /recorded request differs/);
  await page.close();
  tampered.clear();
});

test("a draw ID that does not exist, or is not an ID, gets a clear message", async () => {
  let page = await open(url, "dr_" + "a".repeat(40));
  let v = await verdict(page);
  assert.equal(v.state, "missing");
  assert.equal(v.headline, "No such draw.");
  await page.close();
  page = await open(url, "not-an-id");
  v = await verdict(page);
  assert.equal(v.headline, "That is not a draw ID.");
  await page.close();
});

test("the page works from the keyboard and names its parts for screen readers", async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(`${url}/verify`);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "draw-id");
  assert.equal(await page.getAttribute("#verdict-headline", "role"), "status");
  assert.equal(await page.textContent('label[for="draw-id"]'), "Draw ID");
  await page.keyboard.type(drawOf(lookups()[1]!).id as string);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Verify");
  await page.keyboard.press("Enter");
  await page.waitForSelector('#verdict[data-state="ok"]', { timeout: 15000 });
  assert.ok(page.url().endsWith(`/verify/${drawOf(lookups()[1]!).id as string}`));
  await page.close();
});

const provenance = async (page: Page) => page.$$eval("#provenance li", (items) =>
  items.map((i) => ({ outcome: (i as HTMLElement).dataset.outcome ?? "", text: i.textContent ?? "" })));

test("each entropy segment shows checked or not yet checkable, as the node's chunks say", async () => {
  // More than a chunk (4,096 bytes by default): the first segment's chunk is used up by this draw.
  const client = new Client([url], { apiKey: API_KEY });
  const chain = await client.createChain("provenance on the page");
  const issued = await client.draw(chain.id, "p", { kind: "bytes", count: 4097 });
  const segments = ((issued.response.draw as JsonObject).entropy as JsonObject).segments as JsonObject[];
  const page = await open(tamperUrl, issued.id);
  const v = await verdict(page);
  assert.equal(v.state, "ok", v.headline + " " + v.detail);
  assert.equal(v.headline, "VERIFIED");
  const shown = await provenance(page);
  assert.equal(shown.length, segments.length);
  assert.equal(shown[0]!.outcome, "verified");
  assert.match(shown[0]!.text, /^✓ Segment 1, bytes \d+\.\.\d+ of chunk \d+ of device dev_[0-9a-f]{32}: checked: the device signed/);
  // The last segment's chunk is usually still being drawn from: whatever the node answers for it, the page says.
  const last = segments.at(-1)!;
  const status = (await fetch(`${url}/v1/chunks/${String(last.device)}/${String(last.chunk_seq)}`)).status;
  assert.equal(shown.at(-1)!.outcome, status === 409 ? "pending" : "verified");
  if (status === 409) assert.match(v.detail, /can be checked once later draws have used up/);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the page is ${width}px wide on a 390px screen`);
  await page.screenshot({ path: resolve(REPO, "target/verify-page-provenance.png"), fullPage: true });
  await page.close();
});

test("a chunk the node says is not used up yet (409) shows not yet checkable, and the draw VERIFIED", async () => {
  const draw = drawOf(lookups()[0]!);
  const segment = ((draw.entropy as JsonObject).segments as JsonObject[])[0]!;
  tampered.set(`/v1/chunks/${String(segment.device)}/${String(segment.chunk_seq)}`, [409, canonicalString({
    error: { code: "chunk_not_exhausted", message: "still has unused bytes" },
  })]);
  const page = await open(tamperUrl, draw.id as string);
  const v = await verdict(page);
  assert.equal(v.state, "ok");
  assert.equal(v.headline, "VERIFIED");
  const [shown] = await provenance(page);
  assert.equal(shown!.outcome, "pending");
  assert.match(shown!.text, /: not yet checkable: /);
  await page.close();
  tampered.clear();
});

test("a tampered or unpublished chunk fails the draw, saying why", async () => {
  const draw = drawOf(lookups()[0]!);
  const segments = (draw.entropy as JsonObject).segments as JsonObject[];
  const segment = segments[0]!;
  const chunkPath = (s: JsonObject) => `/v1/chunks/${String(s.device)}/${String(s.chunk_seq)}`;
  const path = chunkPath(segment);
  // A derivation that asked for more bytes (a rejection) holds two adjacent
  // segments of one chunk: each segment read from the tampered chunk fails.
  const expected = segments
    .map((s, i) => (chunkPath(s) === path ? `Segment ${i + 1}: the chunk's bytes do not match their SHA-256 (hash_mismatch).` : ""))
    .filter((line) => line !== "")
    .join(" ");
  const reply = await fetch(url + path);
  assert.equal(reply.status, 200, "the 4,097-byte draw above used up the bundle's first chunk");
  const chunk = (await reply.json()) as { hex: string };
  // One bit of the draw's first byte changed in the chunk, its hash and signature kept.
  const at = 2 * (segment.offset as number);
  const hex = chunk.hex.slice(0, at) + (parseInt(chunk.hex.slice(at, at + 2), 16) ^ 1).toString(16).padStart(2, "0") + chunk.hex.slice(at + 2);
  tampered.set(path, JSON.stringify({ ...chunk, hex }));
  let page = await open(tamperUrl, draw.id as string);
  let v = await verdict(page);
  assert.equal(v.state, "fail");
  assert.equal(v.headline, "NOT VERIFIED: The draw's entropy is not what the hardware device signed.");
  assert.ok(expected.startsWith("Segment 1: "));
  assert.equal(v.detail, expected);
  const [shown] = await provenance(page);
  assert.equal(shown!.outcome, "hash_mismatch");
  assert.match(shown!.text, /^✗ Segment 1, .*: failed: /);
  await page.screenshot({ path: resolve(REPO, "target/verify-page-provenance-failed.png"), fullPage: true });
  await page.close();

  tampered.set(path, [404, canonicalString({ error: { code: "not_found", message: "no such chunk" } })]);
  page = await open(tamperUrl, draw.id as string);
  v = await verdict(page);
  assert.equal(v.state, "fail");
  assert.match(v.headline, /chunks this draw's entropy came from are not published/);
  assert.equal((await provenance(page))[0]!.outcome, "not_found");
  await page.close();

  tampered.set(path, [503, canonicalString({ error: { code: "unavailable", message: "no leader" } })]);
  page = await open(tamperUrl, draw.id as string, undefined, /\b(40[49]|503)\b/);
  v = await verdict(page);
  assert.equal(v.state, "ok", "a 503 says nothing about the chunk");
  assert.match(v.detail, /could not be checked just now/);
  assert.equal((await provenance(page))[0]!.outcome, "unchecked");
  await page.close();
  tampered.clear();
});
