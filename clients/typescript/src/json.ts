/**
 * JSON as geiger's verifiers need it: a parser that keeps integers exact
 * (beyond 2^53 they become `bigint`) and refuses duplicate member names, and
 * the canonical form (RFC 8785 as docs/DERIVATION.md section 6 defines it for
 * geiger) that a record's ID hashes and its signature covers.
 */

/** A parsed JSON value; integers outside the safe range are bigints. */
export type Json = null | boolean | number | bigint | string | Json[] | JsonObject;
export interface JsonObject {
  [name: string]: Json;
}

/** A value with no canonical form in geiger records, or text that is not JSON. */
export class JsonError extends Error {
  override name = "JsonError";
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** Parses JSON text, integers exact, duplicate members refused. */
export function parseJson(text: string): Json {
  let i = 0;
  const fail = (why: string): never => {
    throw new JsonError(`${why} at offset ${i}`);
  };
  const skip = () => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++;
  };
  const value = (): Json => {
    skip();
    const c = text[i];
    if (c === "{") {
      i++;
      const out: JsonObject = {};
      skip();
      if (text[i] === "}") {
        i++;
        return out;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail("expected a member name");
        const name = string();
        if (Object.prototype.hasOwnProperty.call(out, name)) fail(`duplicate member "${name}"`);
        skip();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        out[name] = value();
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return out;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const out: Json[] = [];
      skip();
      if (text[i] === "]") {
        i++;
        return out;
      }
      for (;;) {
        out.push(value());
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return out;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail("not JSON");
    i += m[0].length;
    if (m[2] === undefined && m[3] === undefined) {
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? n : BigInt(m[0]);
    }
    return Number(m[0]);
  };
  const string = (): string => {
    i++; // opening quote
    let out = "";
    let start = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const code = text.charCodeAt(i);
      if (code === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (code < 0x20) fail("control character in a string");
      if (code !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(start, i);
      const e = text[i + 1];
      i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case "\\": out += "\\"; break;
        case "/": out += "/"; break;
        case "b": out += "\b"; break;
        case "f": out += "\f"; break;
        case "n": out += "\n"; break;
        case "r": out += "\r"; break;
        case "t": out += "\t"; break;
        case "u": {
          const hex = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16));
          i += 4;
          break;
        }
        default:
          fail("bad escape");
      }
      start = i;
    }
  };
  const result = value();
  skip();
  if (i !== text.length) fail("trailing characters");
  return result;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function writeString(s: string, out: string[]): void {
  if (LONE_SURROGATE.test(s)) throw new JsonError("a string holds a lone UTF-16 surrogate");
  // JSON.stringify escapes exactly as RFC 8785 asks (for well-formed strings).
  out.push(JSON.stringify(s));
}

function write(value: Json | undefined, out: string[]): void {
  if (value === null) out.push("null");
  else if (value === true) out.push("true");
  else if (value === false) out.push("false");
  else if (typeof value === "bigint") out.push(value.toString());
  else if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new JsonError(`fractional number ${value} has no canonical form in geiger records`);
    if (!Number.isSafeInteger(value)) throw new JsonError(`integer ${value} was rounded by a double; parse with parseJson`);
    out.push(String(value));
  } else if (typeof value === "string") writeString(value, out);
  else if (Array.isArray(value)) {
    out.push("[");
    value.forEach((item, n) => {
      if (n) out.push(",");
      write(item, out);
    });
    out.push("]");
  } else if (typeof value === "object") {
    // Array.prototype.sort compares UTF-16 code units, as RFC 8785 asks.
    const names = Object.keys(value).sort();
    out.push("{");
    names.forEach((name, n) => {
      if (n) out.push(",");
      writeString(name, out);
      out.push(":");
      write(value[name], out);
    });
    out.push("}");
  } else throw new JsonError(`${typeof value} cannot be represented as JSON`);
}

/** The canonical JSON text of a value. */
export function canonicalString(value: Json): string {
  const out: string[] = [];
  write(value, out);
  return out.join("");
}

const encoder = new TextEncoder();

/** The canonical JSON bytes (UTF-8) of a value. */
export function canonicalBytes(value: Json): Uint8Array {
  return encoder.encode(canonicalString(value));
}

/** Equality of JSON values, whatever the integer representation. */
export function jsonEqual(a: Json, b: Json): boolean {
  try {
    return canonicalString(a) === canonicalString(b);
  } catch {
    return false;
  }
}
