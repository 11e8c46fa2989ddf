// Records verified per second by the TypeScript library (built: npm run build
// in clients/typescript), on the records of a bundle, each lookup with its
// previous. Run on one core: taskset -c 0 node clients/bench/rate.mjs BUNDLE [SECONDS]
import { readFileSync } from "node:fs";
import { parseJson, verifyChain, verifyLookup } from "../typescript/dist/src/index.js";

const bundle = parseJson(readFileSync(process.argv[2], "utf8"));
const seconds = Number(process.argv[3] ?? 5);
const { keys, chain, lookups } = bundle;
const pairs = lookups.map((l, n) => [l, n === 0 ? chain : lookups[n - 1].response]);
// CPU seconds of this process, not wall time: the machine is shared.
const cpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
let done = 0;
const started = performance.now();
const cpu0 = cpuSeconds();
while (performance.now() - started < seconds * 1000) {
  verifyChain(chain, keys);
  for (const [lookup, previous] of pairs) verifyLookup(lookup, keys, previous);
  done += 1 + pairs.length;
}
const elapsed = (performance.now() - started) / 1000;
const cpu = cpuSeconds() - cpu0;
console.log(`typescript: ${done} records in ${cpu.toFixed(2)} CPU s (${elapsed.toFixed(2)} s wall) = ${(done / cpu).toFixed(0)} records per CPU second`);

// The same with the WebCrypto runs (Ed25519 by the platform).
const { verifyChainAsync, verifyLookupAsync } = await import("../typescript/dist/src/index.js");
let doneAsync = 0;
const startedAsync = performance.now();
const cpuAsync0 = cpuSeconds();
while (performance.now() - startedAsync < seconds * 1000) {
  await verifyChainAsync(chain, keys);
  for (const [lookup, previous] of pairs) await verifyLookupAsync(lookup, keys, previous);
  doneAsync += 1 + pairs.length;
}
const elapsedAsync = (performance.now() - startedAsync) / 1000;
const cpuAsync = cpuSeconds() - cpuAsync0;
console.log(`typescript (WebCrypto Ed25519): ${doneAsync} records in ${cpuAsync.toFixed(2)} CPU s (${elapsedAsync.toFixed(2)} s wall) = ${(doneAsync / cpuAsync).toFixed(0)} records per CPU second`);
