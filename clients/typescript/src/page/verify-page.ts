/**
 * The verification page's script (served by every node at /verify and
 * /verify/{draw_id}). It fetches the draw, the published keys and the
 * draws on either side of it from the node that served the page, and
 * computes the verdict here, in the browser, with this library's verifier:
 * the ID recomputed, the signature checked with /v1/keys, the result
 * re-derived from the recorded entropy, the link to the previous record.
 * Then the provenance of each entropy segment (docs/DERIVATION.md section
 * 10), each chunk fetched from the same node's /v1/chunks/{device}/{seq}:
 * checked, not yet checkable (409, the chunk is not used up yet: the
 * verdict stays VERIFIED), or failed (NOT VERIFIED, saying why).
 * Everything shown is set as text, never as HTML.
 */

import { type Json, type JsonObject, parseJson } from "../json.js";
import { type FetchedChunk, type ProvenanceOutcome, checkDrawProvenance, chunkFromReply } from "../provenance.js";
import { type VerifyErrorCode, VerifyError, verifyLookup } from "../verify.js";

/** What a person reads first when a check fails, by check. */
const HEADLINES: Record<VerifyErrorCode, string> = {
  malformed_record: "The record is not in the form geiger issues.",
  bad_key_set: "The published key list could not be read.",
  unsupported_algorithm: "The record names a signature algorithm geiger does not use.",
  key_id_mismatch: "The signature and the record name different keys.",
  unknown_key: "The record was signed with a key geiger does not publish.",
  bad_key: "A published key is malformed.",
  key_not_valid_at: "The signing key was not valid when the draw was issued.",
  bad_timestamp: "A timestamp in the record is malformed.",
  canonical: "The record cannot be put in its signed form.",
  id_mismatch: "The draw's ID does not match its content: the record was changed after it was issued.",
  malformed_signature: "The signature is malformed.",
  bad_signature: "The signature does not match the record: geiger did not sign this content.",
  unsupported_derivation: "The record names a derivation this page does not know.",
  invalid_spec: "The request breaks geiger's limits.",
  entropy_not_hex: "The recorded entropy is malformed.",
  entropy_hash_mismatch: "The recorded entropy does not match its hash.",
  segment_length_mismatch: "The entropy's sources do not add up to the bytes recorded.",
  entropy_too_short: "The recorded entropy is too short for this result.",
  unused_entropy: "The recorded entropy holds bytes the result did not use.",
  result_mismatch: "The result does not follow from the recorded entropy.",
  broken_link: "The draw does not follow the draw before it on its chain.",
  request_mismatch: "The recorded request differs from the draw that was signed.",
};

/** Why a segment's provenance failed, by outcome, in words. */
const PROVENANCE_FAILURES: Record<Exclude<ProvenanceOutcome, "verified" | "pending">, string> = {
  not_found: "this node publishes no device-signed chunk by that name",
  wrong_chunk: "the node served another chunk than the one the draw names",
  malformed: "the chunk the node served is malformed",
  key_not_device: "the chunk's key is not the key of the device it names",
  key_not_published: "the chunk's key is not among the device keys this node publishes",
  hash_mismatch: "the chunk's bytes do not match their SHA-256",
  bad_signature: "the device's signature over the chunk is not valid",
  out_of_range: "the draw's bytes reach past the end of the chunk",
  entropy_mismatch: "the draw's bytes are not the chunk's bytes at that offset",
  revealed_before_issue: "the draw was issued after the chunk's bytes were public",
};

const ID_RE = /^dr_[a-z2-7]{40}$/;
const $ = (id: string) => document.getElementById(id)!;
const text = (v: Json | undefined): string =>
  v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));

class NotFound extends Error {}

async function getJson(path: string): Promise<Json> {
  const reply = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
  if (reply.status === 404) throw new NotFound(path);
  if (!reply.ok) throw new Error(`${path} answered ${reply.status}`);
  return parseJson(await reply.text());
}

function setVerdict(state: "pending" | "ok" | "fail" | "missing", headline: string, detail = ""): void {
  const box = $("verdict");
  box.dataset.state = state;
  $("verdict-headline").textContent = headline;
  $("verdict-detail").textContent = detail;
}

function row(list: HTMLElement, term: string, value: string | Node): void {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (typeof value === "string") dd.textContent = value;
  else dd.append(value);
  list.append(dt, dd);
}

function link(id: string, label?: string): HTMLElement {
  if (!ID_RE.test(id)) {
    const code = document.createElement("code");
    code.textContent = label ?? id;
    return code;
  }
  const a = document.createElement("a");
  a.href = `/verify/${id}`;
  a.textContent = label ?? id;
  a.className = "id";
  return a;
}

function describeSpec(spec: JsonObject): string {
  switch (spec.kind) {
    case "integers":
      return `${text(spec.count)} integer(s) from ${text(spec.min)} to ${text(spec.max)}${spec.unique === true ? ", all different" : ""}`;
    case "permutation":
      return `a shuffle of 1 to ${text(spec.n)}`;
    case "selection":
      return `${text(spec.k)} different numbers from 1 to ${text(spec.n)}, in the order drawn`;
    case "bytes":
      return `${text(spec.count)} random bytes`;
    default:
      return text(spec);
  }
}

function showResult(draw: JsonObject): void {
  const result = draw.result as JsonObject;
  const out = $("result");
  out.textContent = "";
  if (Array.isArray(result.values)) {
    const list = document.createElement("ol");
    list.className = "values";
    for (const v of result.values) {
      const li = document.createElement("li");
      li.textContent = text(v);
      list.append(li);
    }
    out.append(list);
  } else {
    const code = document.createElement("code");
    code.className = "hex";
    code.textContent = text(result.hex);
    out.append(code);
  }
}

function showDetails(lookup: JsonObject, next: string | undefined): void {
  const draw = (lookup.response as JsonObject).draw as JsonObject;
  const request = lookup.request as JsonObject;
  const list = $("facts");
  list.textContent = "";
  row(list, "Draw ID", link(draw.id as string));
  row(list, "Asked for", describeSpec(request.spec as JsonObject));
  row(list, "Tag", text(request.tag));
  row(list, "Request", text(request));
  row(list, "Issued at", `${text(draw.issued_at)} (UTC)`);
  row(list, "Chain", `${text(draw.chain)}, position ${text(draw.position)}`);
  row(list, "Previous", (draw.previous as string).startsWith("ch_") ? "the chain's start (genesis)" : link(draw.previous as string));
  row(list, "Next", next ? link(next) : "none yet");
  row(list, "Signed by key", text(draw.key_id));
  const entropy = draw.entropy as JsonObject;
  row(list, "Entropy", `${(entropy.hex as string).length / 2} bytes, SHA-256 ${text(entropy.sha256)}`);
  showResult(draw);
  $("details").hidden = false;
}

function showChecks(checks: string[], failed?: string): void {
  const list = $("checks");
  list.textContent = "";
  for (const check of checks) {
    const li = document.createElement("li");
    li.textContent = `✓ ${check}`;
    list.append(li);
  }
  if (failed) {
    const li = document.createElement("li");
    li.className = "failed";
    li.textContent = `✗ ${failed}`;
    list.append(li);
  }
}

async function fetchChunk(device: string, seq: bigint): Promise<FetchedChunk> {
  const path = `/v1/chunks/${encodeURIComponent(device)}/${seq}`;
  const reply = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
  return chunkFromReply(path, reply.status, await reply.text());
}

interface Provenance {
  failed: string[];
  notPublished: number;
  pending: number;
  unchecked: string[];
  segments: number;
}

/**
 * Fetches each segment's chunk from this node, checks it, and lists the
 * outcome per segment. A chunk that could not be fetched (the network, a
 * 429 or a 5xx) says nothing about the draw: "could not be checked".
 */
async function showProvenance(response: JsonObject, keys: JsonObject): Promise<Provenance> {
  const segments = ((response.draw as JsonObject).entropy as JsonObject).segments as JsonObject[];
  const name = (s: JsonObject) => `${String(s.device)}/${String(s.chunk_seq)}`;
  const fetched = new Map<string, FetchedChunk | Error>();
  await Promise.all(segments.map(async (s) => {
    if (fetched.has(name(s))) return;
    fetched.set(name(s), null);
    try {
      fetched.set(name(s), await fetchChunk(String(s.device), BigInt(s.chunk_seq as number)));
    } catch (e) {
      fetched.set(name(s), e instanceof Error ? e : new Error(String(e)));
    }
  }));
  const results = checkDrawProvenance(response, keys, (device, seq) => {
    const got = fetched.get(`${device}/${seq}`);
    return got instanceof Error ? null : got;
  });
  const out: Provenance = { failed: [], notPublished: 0, pending: 0, unchecked: [], segments: results.length };
  const list = $("provenance");
  list.textContent = "";
  results.forEach(([segment, outcome], n) => {
    const offset = BigInt(segment.offset as number);
    const label = `Segment ${n + 1}, bytes ${offset}..${offset + BigInt(segment.length as number)} of chunk `
      + `${String(segment.chunk_seq)} of device ${String(segment.device)}`;
    const error = fetched.get(name(segment));
    const li = document.createElement("li");
    if (error instanceof Error) {
      out.unchecked.push(error.message);
      li.className = "unchecked";
      li.dataset.outcome = "unchecked";
      li.textContent = `? ${label}: could not be checked just now (${error.message}).`;
    } else if (outcome === "verified") {
      li.className = "checked";
      li.dataset.outcome = outcome;
      li.textContent = `✓ ${label}: checked: the device signed this chunk, and the draw's bytes are exactly its bytes there.`;
    } else if (outcome === "pending") {
      out.pending++;
      li.className = "pending";
      li.dataset.outcome = outcome;
      li.textContent = `… ${label}: not yet checkable: the chunk is published once later draws have used the rest `
        + "of its bytes; check again later.";
    } else {
      if (outcome === "not_found") out.notPublished++;
      const why = `${PROVENANCE_FAILURES[outcome]} (${outcome})`;
      out.failed.push(`Segment ${n + 1}: ${why}.`);
      li.className = "failed";
      li.dataset.outcome = outcome;
      li.textContent = `✗ ${label}: failed: ${why}.`;
    }
    list.append(li);
  });
  if (results.length === 0) {
    const li = document.createElement("li");
    li.textContent = "This draw used no entropy: there is nothing to trace.";
    list.append(li);
  }
  $("provenance-part").hidden = false;
  return out;
}

async function verifyPage(id: string): Promise<void> {
  const started = performance.now();
  document.title = `Verify ${id} · geiger`;
  ($("draw-id") as HTMLInputElement).value = id;
  setVerdict("pending", "Checking…", "Fetching the draw and the published keys from this node.");
  if (!ID_RE.test(id)) {
    setVerdict("missing", "That is not a draw ID.", "A draw ID starts with dr_ followed by 40 letters a–z and digits 2–7.");
    return;
  }
  let lookup: JsonObject;
  try {
    lookup = (await getJson(`/v1/draws/${id}`)) as JsonObject;
  } catch (e) {
    if (e instanceof NotFound) {
      setVerdict("missing", "No such draw.", `No draw with ID ${id} has been issued. Check the ID and try again.`);
    } else {
      setVerdict("fail", "The draw could not be fetched.", (e as Error).message);
    }
    return;
  }
  const response = lookup.response as JsonObject | undefined;
  const draw = (response?.draw ?? {}) as JsonObject;
  let keys: Json;
  let previous: Json | undefined;
  let next: string | undefined;
  try {
    const prevId = draw.previous as string;
    const [k, p, page] = await Promise.all([
      getJson("/v1/keys"),
      typeof prevId === "string" && prevId.startsWith("ch_")
        ? getJson(`/v1/chains/${prevId}`).then((c) => (c as JsonObject).genesis)
        : getJson(`/v1/draws/${prevId}`).then((l) => (l as JsonObject).response),
      getJson(`/v1/chains/${text(draw.chain)}/draws?after=${text(draw.position)}&limit=1`),
    ]);
    keys = k;
    previous = p;
    const after = ((page as JsonObject).draws as JsonObject[])[0];
    next = after ? text((after.draw as JsonObject).id) : undefined;
  } catch (e) {
    setVerdict("fail", "The keys or the neighbouring draws could not be fetched.", (e as Error).message);
    return;
  }
  try {
    showDetails(lookup, next);
  } catch {
    // A malformed record: the verdict below says what is wrong with it.
  }
  try {
    const report = verifyLookup(lookup, keys, previous);
    if (draw.id !== id) throw new VerifyError("malformed_record", `asked for ${id}, the node answered with another draw`);
    showChecks(report.checks);
  } catch (e) {
    if (!(e instanceof VerifyError)) throw e;
    showChecks([], e.message);
    setVerdict("fail", `NOT VERIFIED: ${HEADLINES[e.code]}`, e.message);
    document.body.dataset.verdictMs = (performance.now() - started).toFixed(1);
    return;
  }
  setVerdict("pending", "Checking where the entropy came from…",
    "The draw's record verified; now fetching the chunks the hardware device signed.");
  try {
    const p = await showProvenance(response!, keys as JsonObject);
    const issued = "This draw is exactly what geiger issued";
    if (p.failed.length > 0) {
      setVerdict("fail", p.notPublished === p.failed.length
        ? "NOT VERIFIED: The device-signed chunks this draw's entropy came from are not published."
        : "NOT VERIFIED: The draw's entropy is not what the hardware device signed.", p.failed.join(" "));
    } else if (p.unchecked.length > 0) {
      setVerdict("ok", "VERIFIED", `${issued}: checked in your browser just now. Where its entropy came from `
        + `could not be checked just now (${p.unchecked[0]!}); reload the page to try again.`);
    } else if (p.pending > 0) {
      setVerdict("ok", "VERIFIED", `${issued}: checked in your browser just now. Where its entropy came from can `
        + "be checked once later draws have used up the device's chunk; reload the page later.");
    } else if (p.segments > 0) {
      setVerdict("ok", "VERIFIED", `${issued}, and its entropy is exactly what the hardware device signed: `
        + "checked in your browser just now.");
    } else {
      setVerdict("ok", "VERIFIED", `${issued}: checked in your browser just now.`);
    }
  } finally {
    document.body.dataset.verdictMs = (performance.now() - started).toFixed(1);
  }
}

function start(): void {
  const form = $("lookup") as HTMLFormElement;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = ($("draw-id") as HTMLInputElement).value.trim();
    if (id) window.location.assign(`/verify/${encodeURIComponent(id)}`);
  });
  const match = /^\/verify\/([^/]+)\/?$/.exec(window.location.pathname);
  if (match) {
    verifyPage(decodeURIComponent(match[1]!)).catch((e: unknown) => {
      setVerdict("fail", "The page failed while checking.", String(e));
    });
  } else {
    $("draw-id").focus();
  }
}

start();
