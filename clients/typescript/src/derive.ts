/**
 * geiger-derive-v1: from a draw's recorded entropy bytes to its result,
 * written from docs/DERIVATION.md sections 1-4, with exact 64-bit and
 * 128-bit arithmetic in bigint.
 */

import type { Json, JsonObject } from "./json.js";

export const DERIVATION_V1 = "geiger-derive-v1";

const TWO64 = 1n << 64n;
const MASK64 = TWO64 - 1n;

/** The entropy ran out before the result was complete. */
export class NeedMoreEntropy extends Error {
  override name = "NeedMoreEntropy";
  constructor() {
    super("need more entropy");
  }
}

class Reader {
  pos = 0;
  constructor(readonly data: Uint8Array) {}

  word(): bigint {
    if (this.pos + 8 > this.data.length) throw new NeedMoreEntropy();
    let lo = 0;
    let hi = 0;
    for (let k = 3; k >= 0; k--) lo = lo * 256 + this.data[this.pos + k]!;
    for (let k = 7; k >= 4; k--) hi = hi * 256 + this.data[this.pos + k]!;
    this.pos += 8;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  take(n: number): Uint8Array {
    if (this.pos + n > this.data.length) throw new NeedMoreEntropy();
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Lemire's method: uniform in [0, s) for 1 <= s <= 2^64. */
  uniform(s: bigint): bigint {
    if (s === 1n) return 0n;
    if (s === TWO64) return this.word();
    let m = this.word() * s;
    if ((m & MASK64) < s) {
      const threshold = (TWO64 - s) % s;
      while ((m & MASK64) < threshold) m = this.word() * s;
    }
    return m >> 64n;
  }

  /** The first k entries of a front-to-back Fisher-Yates shuffle of [0, s). */
  shuffle(s: bigint, k: number): bigint[] {
    const slots = new Map<bigint, bigint>();
    const out: bigint[] = [];
    for (let n = 0; n < k; n++) {
      const i = BigInt(n);
      const j = i + this.uniform(s - i);
      const atJ = slots.get(j) ?? j;
      slots.set(j, slots.get(i) ?? i);
      out.push(atJ);
    }
    return out;
  }
}

const big = (v: Json | undefined): bigint => {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  throw new TypeError("an integer was expected");
};
const json = (v: bigint): number | bigint => (v >= -(2n ** 53n) && v <= 2n ** 53n ? Number(v) : v);

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
export const toHex = (bytes: Uint8Array): string => {
  let s = "";
  for (const b of bytes) s += HEX[b];
  return s;
};

/** The derived result (`{values}` or `{hex}`) and how many bytes it read. */
export interface Derived {
  result: JsonObject;
  consumed: number;
}

/**
 * Derives the result of `spec` from `entropy`. Throws NeedMoreEntropy when
 * the bytes run out. The spec must already be within the limits.
 */
export function derive(spec: JsonObject, entropy: Uint8Array): Derived {
  const r = new Reader(entropy);
  switch (spec.kind) {
    case "integers": {
      const min = big(spec.min);
      const span = big(spec.max) - min + 1n;
      const count = Number(spec.count);
      const offsets = spec.unique === true
        ? r.shuffle(span, count)
        : Array.from({ length: count }, () => r.uniform(span));
      return { result: { values: offsets.map((o) => json(min + o)) }, consumed: r.pos };
    }
    case "permutation":
      return { result: { values: r.shuffle(big(spec.n), Number(spec.n)).map((o) => json(o + 1n)) }, consumed: r.pos };
    case "selection":
      return { result: { values: r.shuffle(big(spec.n), Number(spec.k)).map((o) => json(o + 1n)) }, consumed: r.pos };
    case "bytes":
      return { result: { hex: toHex(r.take(Number(spec.count))) }, consumed: r.pos };
    default:
      throw new TypeError(`unknown spec kind ${String(spec.kind)}`);
  }
}
