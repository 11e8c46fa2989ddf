#!/usr/bin/env node
/**
 * `geiger-verify verify FILE --keys FILE_OR_URL [--previous FILE]`: the
 * same arguments, output and exit codes as `geiger verify` (0 verified,
 * 1 failed verification, 2 unreadable input).
 */

import { readFileSync } from "node:fs";

import { parseJson } from "./json.js";
import { VerifyError, verifyRecord } from "./verify.js";

const USAGE = "usage: geiger-verify verify FILE --keys FILE_OR_URL [--previous FILE]";

function read(source: string): string {
  return readFileSync(source === "-" ? 0 : source, "utf8");
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  let file: string | undefined, keys: string | undefined, previous: string | undefined;
  for (let n = 0; n < rest.length; n++) {
    const arg = rest[n]!;
    if (arg === "--keys" || arg === "-k") keys = rest[++n];
    else if (arg === "--previous") previous = rest[++n];
    else if (file === undefined) file = arg;
    else keys = undefined;
  }
  if (command !== "verify" || file === undefined || keys === undefined) {
    console.error(USAGE);
    return 2;
  }
  let record, keySet, prev;
  try {
    record = parseJson(read(file));
    keySet = /^https?:\/\//.test(keys) ? parseJson(await (await fetch(keys)).text()) : parseJson(read(keys));
    prev = previous === undefined ? undefined : parseJson(read(previous));
  } catch (e) {
    console.error(`Error: ${(e as Error).message}`);
    return 2;
  }
  try {
    const report = verifyRecord(record, keySet, prev);
    for (const check of report.checks) console.log(`ok   ${check}`);
    console.log("VERIFIED");
    return 0;
  } catch (e) {
    if (e instanceof VerifyError) {
      console.log(`FAILED ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
