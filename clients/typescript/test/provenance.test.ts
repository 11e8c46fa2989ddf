import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";

import { type JsonObject, chunkStatement, checkDrawProvenance, checkSegment, parseJson } from "../src/index.js";
import { REPO } from "./helpers.js";

const doc = parseJson(readFileSync(resolve(REPO, "protocol/tests/provenance_vectors.json"), "utf8")) as JsonObject;
const cases = doc.cases as JsonObject[];
const keys = doc.keys as JsonObject;
const bytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

test("the chunk statement is the published 80 bytes", () => {
  const chunk = doc.chunk as JsonObject;
  const statement = chunkStatement(String(chunk.device), BigInt(chunk.seq as number), bytes(String(chunk.sha256)), BigInt(chunk.timestamp_ms as number));
  assert.equal(hex(statement), doc.statement_hex);
});

for (const c of cases) {
  test(`provenance case "${String(c.name)}" has its published outcome`, () => {
    const got = checkSegment(c.segment as JsonObject, bytes(String(c.entropy_hex)), String(c.issued_at), c.chunk as JsonObject, keys);
    assert.equal(got, c.outcome);
  });
}

test("a chunk not yet exhausted leaves its segment pending, and a verified one verifies", () => {
  const c = cases[0]!;
  const draw = { draw: { issued_at: c.issued_at!, entropy: { hex: c.entropy_hex!, segments: [c.segment!] } } };
  assert.equal(checkDrawProvenance(draw, keys, () => null)[0]![1], "pending");
  assert.equal(checkDrawProvenance(draw, keys, () => undefined)[0]![1], "not_found");
  assert.equal(checkDrawProvenance(draw, keys, () => c.chunk as JsonObject)[0]![1], "verified");
});
