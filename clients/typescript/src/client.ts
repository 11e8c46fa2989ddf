/**
 * The API client: endpoint rotation, the retry loop, one method per call,
 * behaving as the Rust SDK (`client/`) does. Each call starts on the next
 * endpoint in turn and moves on after a connection error, a timeout or a
 * 5xx answer, backing off a little after each full round, until a deadline.
 * Draws are safe to retry: every draw carries a `request_id` (a random one
 * when the caller gives none), so a retry of a draw that was in fact
 * committed is answered with the original 201 body. Every chain and draw
 * received is verified against the published keys before it is returned.
 * Uses `fetch`: Node.js 20+ and browsers.
 */

import { type Json, type JsonObject, parseJson } from "./json.js";
import { verifyChainAsync, verifyDrawAsync } from "./verify.js";

/** The header a node sets on a 201 that replays an earlier identical request. */
export const REPLAY_HEADER = "geiger-replayed";

export class ClientError extends Error {
  override name = "ClientError";
}

/** A node answered in the error shape (a 4xx, or a 5xx after every retry). */
export class ApiError extends ClientError {
  override name = "ApiError";
  constructor(readonly status: number, readonly code: string, readonly detail: string, readonly body: Json) {
    super(`${status} ${code}: ${detail}`);
  }
}

/** `previous` already has a successor; `existingId` is the draw issued after it. */
export class PreviousAlreadyUsed extends ApiError {
  override name = "PreviousAlreadyUsed";
  constructor(status: number, detail: string, body: Json, readonly existingId: string) {
    super(status, "previous_already_used", detail, body);
  }
}

/** No endpoint answered in time, after every retry. */
export class Unavailable extends ClientError {
  override name = "Unavailable";
  constructor(readonly attempts: number, readonly last: string) {
    super(`no node answered after ${attempts} attempts: ${last}`);
  }
}

/** The answer was not what the contract says. */
export class ProtocolError extends ClientError {
  override name = "ProtocolError";
  constructor(readonly endpoint: string, readonly detail: string) {
    super(`unexpected answer from ${endpoint}: ${detail}`);
  }
}

export interface ClientOptions {
  apiKey?: string;
  /** One attempt on one node, ms (default 2000). */
  attemptTimeoutMs?: number;
  /** All attempts of one call together, ms (default 10000). */
  deadlineMs?: number;
  /** Verify every record received (default true). */
  verify?: boolean;
}

export interface Issued {
  response: JsonObject;
  raw: string;
  replayed: boolean;
  endpoint: string;
  id: string;
}

export interface IssuedChain {
  response: JsonObject;
  raw: string;
  endpoint: string;
  id: string;
}

export interface Lookup {
  request: JsonObject;
  response: JsonObject;
}

interface Answer {
  status: number;
  replayed: boolean;
  body: string;
  endpoint: string;
}

/** 128 random bits in hex: an idempotency key no other request shares. */
export function randomRequestId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const isObject = (v: Json | undefined): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

function apiError(status: number, body: Json, endpoint: string): ClientError {
  const detail = isObject(body) ? body.error : undefined;
  if (!isObject(detail) || typeof detail.code !== "string") {
    return new ProtocolError(endpoint, `status ${status} without the error shape`);
  }
  const message = String(detail.message ?? "");
  if (detail.code === "previous_already_used" && typeof detail.existing_id === "string") {
    return new PreviousAlreadyUsed(status, message, body, detail.existing_id);
  }
  return new ApiError(status, detail.code, message, body);
}

export class Client {
  readonly endpoints: string[];
  private next: number;
  private keysCache: JsonObject | undefined;
  private readonly apiKey: string | undefined;
  private readonly attemptTimeoutMs: number;
  private readonly deadlineMs: number;
  private readonly verify: boolean;

  constructor(endpoints: string[], options: ClientOptions = {}) {
    if (endpoints.length === 0) throw new Unavailable(0, "no endpoints given");
    this.endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.apiKey = options.apiKey;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 2000;
    this.deadlineMs = options.deadlineMs ?? 10000;
    this.verify = options.verify ?? true;
    this.next = Math.floor(Math.random() * this.endpoints.length);
  }

  private async send(method: string, path: string, body: string | undefined, auth: boolean): Promise<Answer> {
    const started = Date.now();
    const first = this.next;
    this.next = (this.next + 1) % this.endpoints.length;
    for (let attempt = 1; ; attempt++) {
      const endpoint = this.endpoints[(first + attempt - 1) % this.endpoints.length]!;
      const headers: Record<string, string> = { accept: "application/json" };
      if (auth) headers.authorization = `Bearer ${this.apiKey ?? ""}`;
      if (body !== undefined) headers["content-type"] = "application/json";
      let failure: string;
      try {
        const reply = await fetch(endpoint + path, {
          method, headers, body, signal: AbortSignal.timeout(this.attemptTimeoutMs),
        });
        const text = await reply.text();
        const answer = { status: reply.status, replayed: reply.headers.has(REPLAY_HEADER), body: text, endpoint };
        if (reply.status < 500 || Date.now() - started >= this.deadlineMs) return answer;
        failure = `${endpoint}: ${reply.status}`;
      } catch (e) {
        const cause = (e as { cause?: { code?: string } }).cause;
        failure = `${endpoint}: ${cause?.code ?? (e as Error).message}`;
      }
      if (Date.now() - started >= this.deadlineMs) throw new Unavailable(attempt, failure);
      // Back off a little once every node has been tried in this round.
      if (attempt % this.endpoints.length === 0) {
        const round = attempt / this.endpoints.length;
        await sleep(Math.min(20 << Math.min(round, 5), 500));
      }
    }
  }

  private static parse(answer: Answer): Json {
    try {
      return parseJson(answer.body);
    } catch (e) {
      throw new ProtocolError(answer.endpoint, `not JSON: ${(e as Error).message}`);
    }
  }

  private async expect(method: string, path: string, body: string | undefined, auth: boolean, success: number): Promise<Answer> {
    const answer = await this.send(method, path, body, auth);
    if (answer.status !== success) {
      let parsed: Json;
      try {
        parsed = parseJson(answer.body);
      } catch {
        parsed = answer.body;
      }
      throw apiError(answer.status, parsed, answer.endpoint);
    }
    return answer;
  }

  /** `GET /v1/keys`, cached; `refresh` fetches it again. */
  async keys(refresh = false): Promise<JsonObject> {
    if (!this.keysCache || refresh) {
      const keys = Client.parse(await this.expect("GET", "/v1/keys", undefined, false, 200));
      if (!isObject(keys)) throw new ProtocolError(this.endpoints[0]!, "the key set is not an object");
      this.keysCache = keys;
    }
    return this.keysCache;
  }

  private async keysFor(keyId: Json | undefined): Promise<JsonObject> {
    const keys = await this.keys();
    const list = Array.isArray(keys.keys) ? keys.keys : [];
    if (list.some((k) => isObject(k) && k.key_id === keyId)) return keys;
    return this.keys(true); // rotated since the cache was filled
  }

  /** Verifies a draw against the published keys; throws VerifyError. */
  async verifyDraw(response: Json, previous?: Json): Promise<void> {
    const draw = isObject(response) ? response.draw : undefined;
    await verifyDrawAsync(response, await this.keysFor(isObject(draw) ? draw.key_id : undefined), previous);
  }

  /** `POST /v1/chains`: opens a chain; a retry after a lost answer gets the same chain. */
  async createChain(tag: string, requestId?: string): Promise<IssuedChain> {
    const body = JSON.stringify({ tag, request_id: requestId ?? randomRequestId() });
    const answer = await this.expect("POST", "/v1/chains", body, true, 201);
    const response = Client.parse(answer);
    if (!isObject(response) || typeof response.id !== "string") throw new ProtocolError(answer.endpoint, "not a chain");
    if (this.verify) {
      const chain = response.chain;
      await verifyChainAsync(response, await this.keysFor(isObject(chain) ? chain.key_id : undefined));
    }
    return { response, raw: answer.body, endpoint: answer.endpoint, id: response.id };
  }

  /**
   * `POST /v1/draws`. Gives the request a random `request_id` if it has
   * none, so that retries on other nodes are the same request. Throws
   * PreviousAlreadyUsed when `previous` already has another successor.
   */
  async draw(previous: string, tag: string, spec: JsonObject, requestId?: string): Promise<Issued> {
    const body = JSON.stringify({ previous, tag, spec, request_id: requestId ?? randomRequestId() },
      (_k, v: unknown) => (typeof v === "bigint" ? `__big__${v}` : v)).replace(/"__big__(-?\d+)"/g, "$1");
    const answer = await this.expect("POST", "/v1/draws", body, true, 201);
    const response = Client.parse(answer);
    const draw = isObject(response) ? response.draw : undefined;
    if (!isObject(response) || !isObject(draw) || draw.previous !== previous) {
      throw new ProtocolError(answer.endpoint, "the draw returned does not follow the requested previous");
    }
    if (this.verify) await this.verifyDraw(response);
    return { response, raw: answer.body, replayed: answer.replayed, endpoint: answer.endpoint, id: String(draw.id) };
  }

  /** `GET /v1/draws/{id}`, verified. */
  async getDraw(id: string): Promise<Lookup> {
    const answer = await this.expect("GET", `/v1/draws/${encodeURIComponent(id)}`, undefined, false, 200);
    const lookup = Client.parse(answer);
    if (!isObject(lookup) || !isObject(lookup.request) || !isObject(lookup.response)) {
      throw new ProtocolError(answer.endpoint, "not a draw lookup");
    }
    const draw = lookup.response.draw;
    if (!isObject(draw) || draw.id !== id) throw new ProtocolError(answer.endpoint, `asked for ${id}, got another draw`);
    if (this.verify) await this.verifyDraw(lookup.response);
    return { request: lookup.request, response: lookup.response };
  }

  /** `GET /v1/chains/{id}`: `{genesis, length, head, customer}`, the genesis verified. */
  async getChain(id: string): Promise<JsonObject> {
    const answer = await this.expect("GET", `/v1/chains/${encodeURIComponent(id)}`, undefined, false, 200);
    const chain = Client.parse(answer);
    if (!isObject(chain) || !isObject(chain.genesis)) throw new ProtocolError(answer.endpoint, "not a chain");
    if (this.verify) {
      const record = chain.genesis.chain;
      await verifyChainAsync(chain.genesis, await this.keysFor(isObject(record) ? record.key_id : undefined));
    }
    return chain;
  }

  /** One page of `GET /v1/chains/{id}/draws` (positions after `after`), every draw verified. */
  async chainDraws(id: string, after = 0, limit = 100): Promise<JsonObject> {
    const answer = await this.expect("GET", `/v1/chains/${encodeURIComponent(id)}/draws?after=${after}&limit=${limit}`,
      undefined, false, 200);
    const page = Client.parse(answer);
    if (!isObject(page) || !Array.isArray(page.draws)) throw new ProtocolError(answer.endpoint, "not a page of draws");
    if (this.verify) for (const draw of page.draws) await this.verifyDraw(draw);
    return page;
  }

  /** Every draw of a chain in order, each verified with the link to the one before it. */
  async *iterChain(id: string): AsyncGenerator<JsonObject> {
    let previous: Json = (await this.getChain(id)).genesis as Json;
    let after = 0;
    for (;;) {
      const page = await this.chainDraws(id, after);
      for (const draw of page.draws as JsonObject[]) {
        if (this.verify) await this.verifyDraw(draw, previous);
        previous = draw;
        yield draw;
      }
      if (page.next_after === undefined || page.next_after === null) return;
      after = Number(page.next_after);
    }
  }
}
