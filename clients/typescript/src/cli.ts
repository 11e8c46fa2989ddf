#!/usr/bin/env node
/**
 * `geiger-verify verify FILE --keys FILE_OR_URL [--previous FILE]
 * [--chunks URL_OR_DIR]`: the same arguments, output and exit codes as
 * `geiger verify` and the Python CLI (0 verified, 1 failed verification,
 * 2 unreadable input). With `--chunks`, each entropy segment's provenance
 * too (docs/DERIVATION.md section 10), its chunk fetched from
 * `URL/v1/chunks/{device}/{seq}` or read from `DIR/{device}-{seq}.json`;
 * segments whose chunk is not exhausted yet are pending and do not fail it.
 */

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { type JsonObject, parseJson } from "./json.js";
import { type FetchedChunk, checkDrawProvenanceAsync, chunkFromReply } from "./provenance.js";
import { VerifyError, verifyRecord } from "./verify.js";

const USAGE = "usage: geiger-verify verify FILE --keys FILE_OR_URL [--previous FILE] [--chunks URL_OR_DIR]";
/** As the Python CLI: a source that does not answer within this is unreadable input. */
const TIMEOUT_MS = 10_000;

const isUrl = (source: string) => /^https?:\/\//.test(source);

function read(source: string): string {
  return readFileSync(source === "-" ? 0 : source, "utf8");
}

async function get(url: string): Promise<{ status: number; text: string }> {
  try {
    const reply = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    return { status: reply.status, text: await reply.text() };
  } catch (e) {
    // Node's fetch says only "fetch failed"; the cause says why (refused, timed out, ...).
    const cause = (e as Error).cause;
    throw new Error(`fetching ${url}: ${cause instanceof Error ? cause.message : (e as Error).message}`);
  }
}

async function loadKeys(source: string): Promise<string> {
  if (!isUrl(source)) return read(source);
  const { status, text } = await get(source);
  if (status !== 200) throw new Error(`${source} answered ${status}`);
  return text;
}

/** `fetch(device, seq)` over the cluster's URL or a directory of `{device}-{seq}.json` chunk bodies. */
function chunkSource(source: string): (device: string, seq: bigint) => Promise<FetchedChunk> {
  return async (device, seq) => {
    if (isUrl(source)) {
      const url = `${source.replace(/\/+$/, "")}/v1/chunks/${device}/${seq}`;
      const { status, text } = await get(url);
      return chunkFromReply(url, status, text);
    }
    const path = join(source, `${device}-${seq}.json`);
    // A missing file is a chunk the auditor does not have: not_found, as a 404.
    if (!existsSync(path)) return undefined;
    return chunkFromReply(path, 200, readFileSync(path, "utf8"));
  };
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  let file: string | undefined, keys: string | undefined, previous: string | undefined, chunks: string | undefined;
  let extra = false;
  for (let n = 0; n < rest.length; n++) {
    const arg = rest[n]!;
    if (arg === "--keys" || arg === "-k") keys = rest[++n];
    else if (arg === "--previous") previous = rest[++n];
    else if (arg === "--chunks") chunks = rest[++n];
    else if (file === undefined) file = arg;
    else extra = true;
  }
  if (command !== "verify" || file === undefined || keys === undefined || extra || (rest.includes("--chunks") && !chunks)) {
    console.error(USAGE);
    return 2;
  }
  let record, keySet, prev;
  try {
    record = parseJson(read(file));
    keySet = parseJson(await loadKeys(keys));
    prev = previous === undefined ? undefined : parseJson(read(previous));
  } catch (e) {
    console.error(`Error: ${(e as Error).message}`);
    return 2;
  }
  try {
    const report = verifyRecord(record, keySet, prev);
    for (const check of report.checks) console.log(`ok   ${check}`);
  } catch (e) {
    if (e instanceof VerifyError) {
      console.log(`FAILED ${e.message}`);
      return 1;
    }
    throw e;
  }
  const r = record as JsonObject;
  const response = (typeof r.response === "object" && r.response !== null ? r.response : r) as JsonObject;
  if (chunks === undefined || !("draw" in response)) {
    console.log("VERIFIED");
    return 0;
  }
  let results;
  try {
    results = await checkDrawProvenanceAsync(response, keySet as JsonObject, chunkSource(chunks));
  } catch (e) {
    console.error(`Error: ${(e as Error).message}`);
    return 2;
  }
  let pending = 0, failed = 0;
  results.forEach(([segment, outcome], n) => {
    const offset = BigInt(segment.offset as number);
    const at = `segment ${n + 1} (${String(segment.device)} chunk ${String(segment.chunk_seq)}, bytes `
      + `${offset}..${offset + BigInt(segment.length as number)})`;
    if (outcome === "verified") {
      console.log(`ok   ${at}: the device signed the chunk and the draw's bytes are its slice`);
    } else if (outcome === "pending") {
      pending++;
      console.log(`pending ${at}: the chunk is not exhausted yet; check again later`);
    } else {
      failed++;
      console.log(`FAILED ${at}: ${outcome}`);
    }
  });
  if (failed) {
    console.log(`FAILED provenance of ${failed} segment(s)`);
    return 1;
  }
  console.log(pending ? `VERIFIED (provenance pending for ${pending} segment(s))` : "VERIFIED");
  return 0;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
