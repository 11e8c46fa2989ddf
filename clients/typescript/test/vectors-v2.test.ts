import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";

import { type JsonObject, NeedMoreEntropy, deriveV2, jsonEqual, parseJson } from "../src/index.js";
import { REPO } from "./helpers.js";

const doc = parseJson(readFileSync(resolve(REPO, "protocol/tests/vectors_v2.json"), "utf8")) as JsonObject;
const vectors = doc.vectors as JsonObject[];
const bytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

test("the v2 vectors file names geiger-derive-v2 and holds the documented cases", () => {
  assert.equal(doc.derivation, "geiger-derive-v2");
  assert.ok(vectors.length >= 15);
});

for (const v of vectors) {
  test(`v2 vector "${String(v.name)}" gives its result reading exactly its bits`, () => {
    const got = deriveV2(v.spec as JsonObject, bytes(v.entropy_hex as string));
    assert.ok(jsonEqual(got.result, v.result!), `got ${JSON.stringify(got.result, (_k, x) => typeof x === "bigint" ? String(x) : x)}`);
    assert.equal(got.consumed, v.consumed);
    assert.equal(got.consumedBits, v.consumed_bits);
  });
  if ((v.consumed as number) > 0) {
    test(`v2 vector "${String(v.name)}" with one byte less needs more entropy`, () => {
      assert.throws(() => deriveV2(v.spec as JsonObject, bytes(v.entropy_hex as string).subarray(0, -1)), NeedMoreEntropy);
    });
  }
}
