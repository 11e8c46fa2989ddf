import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { type JsonObject, NeedMoreEntropy, derive, jsonEqual, parseJson } from "../src/index.js";
import { VECTORS } from "./helpers.js";

const doc = parseJson(readFileSync(VECTORS, "utf8")) as JsonObject;
const vectors = doc.vectors as JsonObject[];
const bytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

test("the vectors file names geiger-derive-v1 and holds the documented cases", () => {
  assert.equal(doc.derivation, "geiger-derive-v1");
  assert.ok(vectors.length >= 10);
});

for (const v of vectors) {
  test(`vector "${String(v.name)}" gives its result reading exactly its bytes`, () => {
    const got = derive(v.spec as JsonObject, bytes(v.entropy_hex as string));
    assert.ok(jsonEqual(got.result, v.result!), `got ${JSON.stringify(got.result, (_k, x) => typeof x === "bigint" ? String(x) : x)}`);
    assert.equal(got.consumed, v.consumed);
  });
  if ((v.consumed as number) > 0) {
    test(`vector "${String(v.name)}" with one byte less needs more entropy`, () => {
      assert.throws(() => derive(v.spec as JsonObject, bytes(v.entropy_hex as string).subarray(0, -1)), NeedMoreEntropy);
    });
  }
}
