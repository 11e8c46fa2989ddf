/**
 * @geiger/client: a client and an offline verifier for geiger, auditable
 * random draws. `Client` talks to a cluster with failover and safe retries;
 * `verifyRecord`, `verifyDraw`, `verifyChain` and `verifyLookup` check
 * records offline, in Node.js or a browser; `checkDrawProvenance` checks a
 * draw's entropy against the device-signed chunks (docs/DERIVATION.md §10).
 */

export { type Json, type JsonObject, JsonError, canonicalBytes, canonicalString, jsonEqual, parseJson } from "./json.js";
export { DERIVATION_V1, type Derived, NeedMoreEntropy, derive } from "./derive.js";
export { DERIVATION_V2, type DerivedV2, deriveV2 } from "./derive-v2.js";
export {
  type KeyInfo, VerifyError, type VerifyErrorCode, type VerifyReport, checkSpec, computeRecordId, keyIdOf,
  verifyChain, verifyChainAsync, verifyDraw, verifyDrawAsync, verifyLookup, verifyLookupAsync, verifyRecord,
  verifyRecordAsync,
} from "./verify.js";
export {
  ChunkFetchError, type FetchedChunk, type ProvenanceOutcome, checkDrawProvenance, checkDrawProvenanceAsync,
  checkSegment, chunkFromReply, chunkStatement, deviceIdOf,
} from "./provenance.js";
export {
  ApiError, Client, type ClientOptions, ClientError, type Issued, type IssuedChain, type Lookup,
  PreviousAlreadyUsed, ProtocolError, REPLAY_HEADER, Unavailable, randomRequestId,
} from "./client.js";
