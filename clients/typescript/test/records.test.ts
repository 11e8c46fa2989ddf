import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";

import {
  type Json, type JsonObject, VerifyError, canonicalString, parseJson, verifyChain, verifyDraw, verifyLookup,
} from "../src/index.js";
import { REPO, ResealKey, changed, clone, loadBundle, setPath, singleFieldTampers } from "./helpers.js";

const bundle = loadBundle();
const keys = bundle.keys as JsonObject;
const lookups = bundle.lookups as JsonObject[];
const kinds = lookups.map((l) => ((((l.response as JsonObject).draw as JsonObject).spec as JsonObject).kind as string));
const previousOf = (n: number): Json => (n === 0 ? bundle.chain! : lookups[n - 1]!.response!);
const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    if (e instanceof VerifyError) return e.code;
    throw e;
  }
};

test("the bundle holds draws of every spec kind", () => {
  assert.deepEqual(new Set(kinds), new Set(["integers", "permutation", "selection", "bytes"]));
});

test("the chain genesis and every lookup verify, with the link to the previous record", () => {
  assert.equal(verifyChain(bundle.chain!, keys).checks.length, 3);
  lookups.forEach((l, n) => {
    const report = verifyLookup(l, keys, previousOf(n));
    assert.equal(report.checks.at(-1), "the recorded request matches the signed draw");
    assert.ok(report.checks.some((c) => c.startsWith("follows ")));
  });
});

test("the 201 bytes are the canonical form of the parsed response", () => {
  for (const text of bundle.responses as string[]) {
    assert.equal(canonicalString(parseJson(text)), text);
    verifyDraw(parseJson(text), keys);
  }
});

test("every single-field tamper of every lookup is rejected", () => {
  let rejected = 0;
  lookups.forEach((lookup, n) => {
    const request = lookup.request as JsonObject;
    for (const [where, tampered] of singleFieldTampers(lookup)) {
      // A missing request_id means null, and an integers spec without
      // `unique` means false: those removals do not change the request.
      const harmless = (where === "-request/request_id" && request.request_id === undefined)
        || where === "-request/spec/unique" && request.spec !== undefined && (request.spec as JsonObject).unique === false;
      const got = code(() => verifyLookup(tampered, keys, previousOf(n)));
      if (harmless) continue;
      assert.notEqual(got, undefined, `${kinds[n]} ${where} was accepted`);
      rejected++;
    }
  });
  assert.ok(rejected > 500, `${rejected}`);
});

test("every single-field tamper of the chain is rejected", () => {
  for (const [where, tampered] of singleFieldTampers(bundle.chain!)) {
    assert.notEqual(code(() => verifyChain(tampered, keys)), undefined, where);
  }
});

const key = new ResealKey();
const resealedKeys = key.keySet();

function resealed(n: number, path: string[], value?: Json): JsonObject {
  const response = lookups[n]!.response as JsonObject;
  const draw = response.draw as JsonObject;
  let next = value;
  if (next === undefined) {
    const old = path.reduce<Json>((v, s) => (v as JsonObject)[s]!, draw);
    next = path.join("/") === "entropy/hex"
      ? ((old as string) ? (old as string).slice(0, -1) + ((old as string).endsWith("0") ? "1" : "0") : "00")
      : changed(old);
  }
  return key.sealDraw(setPath(response, ["draw", ...path], next));
}

test("a re-sealed untouched draw verifies, so the re-sealed tests mean something", () => {
  lookups.forEach((l) => verifyDraw(key.sealDraw(l.response as JsonObject), resealedKeys));
});

test("re-sealed draws with wrong content are rejected by the deeper checks", () => {
  const cases: [string[], string][] = [
    [["entropy", "hex"], "entropy_hash_mismatch"],
    [["entropy", "sha256"], "entropy_hash_mismatch"],
    [["derivation"], "unsupported_derivation"],
    [["position"], "broken_link"],
  ];
  lookups.forEach((l, n) => {
    for (const [path, expected] of cases) {
      assert.equal(code(() => verifyDraw(resealed(n, path), resealedKeys, previousOf(n))), expected, `${kinds[n]} ${path}`);
    }
    const draw = (l.response as JsonObject).draw as JsonObject;
    const segments = ((draw.entropy as JsonObject).segments as JsonObject[]);
    const wrongSegments = segments.length
      ? resealed(n, ["entropy", "segments", "0", "length"])
      : resealed(n, ["entropy", "segments"], [{ device: "dev_x", chunk_seq: 0, offset: 0, length: 1 }]);
    assert.equal(code(() => verifyDraw(wrongSegments, resealedKeys)), "segment_length_mismatch");
    const result = clone(draw.result as JsonObject);
    if (Array.isArray(result.values)) result.values[result.values.length - 1] = changed(result.values.at(-1)!);
    else result.hex = changed(result.hex!);
    assert.equal(code(() => verifyDraw(resealed(n, ["result"], result), resealedKeys)), "result_mismatch", kinds[n]);
  });
});

test("a re-sealed spec beyond the limits, and keys outside their validity, are rejected", () => {
  assert.equal(code(() => verifyDraw(resealed(4, ["spec"], { kind: "permutation", n: 10001 }), resealedKeys)), "invalid_spec");
  const draw = key.sealDraw(lookups[0]!.response as JsonObject);
  const issued = (draw.draw as JsonObject).issued_at as string;
  assert.equal(code(() => verifyDraw(draw, key.keySet("2999-01-01T00:00:00.000Z"))), "key_not_valid_at");
  assert.equal(code(() => verifyDraw(draw, key.keySet(undefined, issued))), "key_not_valid_at");
  verifyDraw(draw, key.keySet(issued, "2999-01-01T00:00:00.000Z"));
  assert.equal(code(() => verifyDraw(lookups[0]!.response!, { keys: [] })), "unknown_key");
  assert.equal(code(() => verifyLookup(lookups[3]!, keys, lookups[1]!.response)), "broken_link");
});

test("the CLI verifies a lookup file and fails a tampered one naming what failed", () => {
  const dir = mkdtempSync(join(tmpdir(), "geiger-ts-cli-"));
  const write = (name: string, value: Json) => {
    writeFileSync(join(dir, name), JSON.stringify(value, (_k, x: unknown) => (typeof x === "bigint" ? `__b${x}` : x)).replace(/"__b(-?\d+)"/g, "$1"));
    return join(dir, name);
  };
  const cli = resolve(REPO, "clients/typescript/dist/src/cli.js");
  const ok = execFileSync("node", [cli, "verify", write("d.json", lookups[0]!), "--keys", write("k.json", keys),
    "--previous", write("c.json", bundle.chain!)], { encoding: "utf8" });
  assert.equal(ok.trim().split("\n").at(-1), "VERIFIED");
  const tampered = setPath(lookups[0]!, ["response", "draw", "tag"], "another tag");
  const bad = spawnSync("node", [cli, "verify", write("t.json", tampered), "--keys", join(dir, "k.json")], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stdout, /^FAILED the ID is dr_/);
  rmSync(dir, { recursive: true, force: true });
});

test("the WebCrypto runs give the same verdict and the same failed check as the pure ones", async () => {
  const { verifyLookupAsync, verifyChainAsync } = await import("../src/index.js");
  const asyncCode = async (f: () => Promise<unknown>) => {
    try {
      await f();
      return undefined;
    } catch (e) {
      if (e instanceof VerifyError) return e.code;
      throw e;
    }
  };
  let compared = 0;
  for (const [n, lookup] of lookups.entries()) {
    const cases: Json[] = [lookup, ...singleFieldTampers(lookup).map(([, t]) => t)];
    for (const record of cases) {
      assert.equal(await asyncCode(() => verifyLookupAsync(record, keys, previousOf(n))),
        code(() => verifyLookup(record, keys, previousOf(n))));
      compared++;
    }
  }
  const badSig = setPath(bundle.chain!, ["signature", "value"], "A".repeat(86) + "==");
  assert.equal(await asyncCode(() => verifyChainAsync(badSig, keys)), "bad_signature");
  assert.ok(compared > 500);
});

test("a small-order key that plain RFC 8032 verification accepts for any message is rejected, with and without WebCrypto", async () => {
  const { verifyDrawAsync, computeRecordId: rid, canonicalBytes: cb } = await import("../src/index.js");
  const weak = new Uint8Array(32);
  weak[0] = 1; // the identity point
  const { keyIdOf: kid } = await import("../src/index.js");
  const weakId = kid(weak);
  const weakKeys = { keys: [{ key_id: weakId, alg: "ed25519", public_key: btoa(String.fromCharCode(...weak)), valid_from: "2000-01-01T00:00:00.000Z", valid_until: null }] };
  const body: JsonObject = { ...(clone(lookups[0]!.response as JsonObject).draw as JsonObject), key_id: weakId };
  delete body.id;
  const sig = new Uint8Array(64);
  sig[0] = 1; // R the identity, S = 0: [S]B = R + [k]A for every message
  const forged = { draw: { ...body, id: rid("draw", cb(body)) }, signature: { alg: "ed25519", key_id: weakId, value: btoa(String.fromCharCode(...sig)) } };
  assert.equal(code(() => verifyDraw(forged, weakKeys)), "bad_signature");
  await assert.rejects(verifyDrawAsync(forged, weakKeys), (e: unknown) => e instanceof VerifyError && e.code === "bad_signature");
});
