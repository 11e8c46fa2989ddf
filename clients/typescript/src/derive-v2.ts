/**
 * geiger-derive-v2: from a draw's recorded entropy bits to its result,
 * written from docs/DERIVATION.md section 9, with exact arithmetic in
 * bigint. Bits are read most significant first within each byte; a draw
 * records the whole bytes its bits lie in.
 */

import type { Json, JsonObject } from "./json.js";
import { type Derived, NeedMoreEntropy, toHex } from "./derive.js";

export const DERIVATION_V2 = "geiger-derive-v2";

const LIMIT = 1n << 64n;

class Bits {
  /** Bits handed out so far. */
  read = 0;
  constructor(readonly data: Uint8Array) {}

  bit(): bigint {
    const i = this.read;
    if (i >> 3 >= this.data.length) throw new NeedMoreEntropy();
    this.read += 1;
    return BigInt((this.data[i >> 3]! >> (7 - (i & 7))) & 1);
  }

  /** Uniform in [0, n) for 1 <= n <= 2^64, keeping the leftover on rejection. */
  uniform(n: bigint): bigint {
    let v = 1n;
    let c = 0n;
    for (;;) {
      while (v < n) {
        v *= 2n;
        c = 2n * c + this.bit();
      }
      if (c < n) return c;
      v -= n;
      c -= n;
    }
  }

  /** Greedy groups whose product stays at most 2^64; one uniform per group, split by mixed radix. */
  offsets(ranges: bigint[]): bigint[] {
    const out: bigint[] = [];
    let j = 0;
    while (j < ranges.length) {
      const start = j;
      let product = ranges[j]!;
      j += 1;
      while (j < ranges.length && product * ranges[j]! <= LIMIT) product *= ranges[j++]!;
      let u = this.uniform(product);
      for (let k = start; k < j; k++) {
        out.push(u % ranges[k]!);
        u /= ranges[k]!;
      }
    }
    return out;
  }
}

/** Section 3's partial Fisher-Yates over [0, 1, ...], with the offsets given. */
function shuffle(offsets: bigint[]): bigint[] {
  const slots = new Map<bigint, bigint>();
  return offsets.map((x, n) => {
    const i = BigInt(n);
    const j = i + x;
    const atJ = slots.get(j) ?? j;
    slots.set(j, slots.get(i) ?? i);
    return atJ;
  });
}

const big = (v: Json | undefined): bigint => {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  throw new TypeError("an integer was expected");
};
const json = (v: bigint): number | bigint => (v >= -(2n ** 53n) && v <= 2n ** 53n ? Number(v) : v);
const countdown = (from: bigint, steps: number): bigint[] => Array.from({ length: steps }, (_, i) => from - BigInt(i));

/** The derived result and the bits read (`consumedBits`) and whole bytes recorded (`consumed`). */
export interface DerivedV2 extends Derived {
  consumedBits: number;
}

/**
 * Derives the result of `spec` from `entropy` by geiger-derive-v2. Throws
 * NeedMoreEntropy when the bits run out. The spec must already be within
 * the limits.
 */
export function deriveV2(spec: JsonObject, entropy: Uint8Array): DerivedV2 {
  const r = new Bits(entropy);
  const done = (result: JsonObject): DerivedV2 => ({ result, consumed: Math.ceil(r.read / 8), consumedBits: r.read });
  switch (spec.kind) {
    case "integers": {
      const min = big(spec.min);
      const span = big(spec.max) - min + 1n;
      const count = Number(spec.count);
      const offsets = spec.unique === true
        ? shuffle(r.offsets(countdown(span, count)))
        : r.offsets(Array.from({ length: count }, () => span));
      return done({ values: offsets.map((o) => json(min + o)) });
    }
    case "permutation":
      return done({ values: shuffle(r.offsets(countdown(big(spec.n), Number(spec.n)))).map((o) => json(o + 1n)) });
    case "selection":
      return done({ values: shuffle(r.offsets(countdown(big(spec.n), Number(spec.k)))).map((o) => json(o + 1n)) });
    case "bytes": {
      const count = Number(spec.count);
      if (count > entropy.length) throw new NeedMoreEntropy();
      r.read = 8 * count;
      return done({ hex: toHex(entropy.subarray(0, count)) });
    }
    default:
      throw new TypeError(`unknown spec kind ${String(spec.kind)}`);
  }
}
