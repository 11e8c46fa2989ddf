//! Chain and draw records as issued, signed and stored forever.
//!
//! A record is a *body* (every field that is signed) plus its ID. The
//! canonical JSON of the body (see [`crate::canonical`]) is both what the ID
//! hashes and what Ed25519 signs, so neither can change unnoticed. The body
//! carries `"type": "chain"` or `"type": "draw"`, so a signature over one kind
//! can never pass for the other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::{to_canonical_vec, value_to_canonical_vec, CanonicalError};
pub use crate::derive::DrawResult;
use crate::id::{RecordId, RecordKind};
use crate::spec::Spec;

/// The only signature algorithm geiger uses.
pub const ALG_ED25519: &str = "ed25519";

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds, the form of
/// every timestamp in a record (`2026-11-27T09:31:33.123Z`). The clock is the
/// caller's: records carry the leader's time, never a replica's.
pub fn format_timestamp(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// This machine's clock in Unix milliseconds, the unit of every record and
/// lease timestamp: one definition for the crates that stamp them (the
/// ledger's leader, the node's link leases, the device agent). Nothing in
/// this crate calls it; verification never reads a clock.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Parses a record timestamp back to a point in time.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

/// The signed part of a chain's genesis record.
/// The `"type": "chain"` marker. A one-value enum rather than a serde tag,
/// so that a record claiming any other type fails to parse (serde does not
/// check struct tags inside a flattened record).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainType {
    #[default]
    #[serde(rename = "chain")]
    Chain,
}

/// The `"type": "draw"` marker; see [`ChainType`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrawType {
    #[default]
    #[serde(rename = "draw")]
    Draw,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBody {
    #[serde(rename = "type")]
    pub record_type: ChainType,
    pub customer: String,
    pub tag: String,
    pub created_at: String,
    pub ledger_index: u64,
    pub key_id: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRecord {
    pub id: RecordId,
    #[serde(flatten)]
    pub body: ChainBody,
}

/// The 201 body of `POST /v1/chains`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainResponse {
    pub id: RecordId,
    pub chain: ChainRecord,
    pub signature: Signature,
}

/// One contiguous run of bytes taken from one device chunk.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropySegment {
    pub device: String,
    pub chunk_seq: u64,
    pub offset: u32,
    pub length: u32,
}

/// The entropy a draw used: where each byte came from, the bytes (in segment
/// order) and their SHA-256, both in lowercase hex.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyUse {
    pub segments: Vec<EntropySegment>,
    pub hex: String,
    pub sha256: String,
}

impl EntropyUse {
    pub fn new(segments: Vec<EntropySegment>, bytes: &[u8]) -> Self {
        EntropyUse {
            segments,
            hex: hex::encode(bytes),
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// The signed part of a draw record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawBody {
    #[serde(rename = "type")]
    pub record_type: DrawType,
    pub chain: RecordId,
    /// 1 for the first draw after the genesis; contiguous within a chain.
    pub position: u64,
    pub previous: RecordId,
    pub tag: String,
    pub customer: String,
    pub request_id: Option<String>,
    pub spec: Spec,
    pub result: DrawResult,
    pub issued_at: String,
    pub ledger_index: u64,
    pub entropy: EntropyUse,
    pub derivation: String,
    pub key_id: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawRecord {
    pub id: RecordId,
    #[serde(flatten)]
    pub body: DrawBody,
}

/// The 201 body of `POST /v1/draws`, kept byte for byte in the ledger.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawResponse {
    pub draw: DrawRecord,
    pub signature: Signature,
}

/// `GET /v1/draws/{id}`: the original request and the original response.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawLookup {
    /// The request body as received. Requests accepted before a rule was
    /// added (the tag characters, 2026-12) are shown as they were.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub request: crate::api::DrawRequest,
    pub response: DrawResponse,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub alg: String,
    pub key_id: String,
    /// Base64 (standard alphabet, padded) of the 64-byte Ed25519 signature.
    pub value: String,
}

/// A signing public key and the period in which it signs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub alg: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    pub valid_from: String,
    /// `None` while the key is current. Rotation sets it; records signed
    /// before it keep verifying forever.
    pub valid_until: Option<String>,
}

/// `GET /v1/keys`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<KeyInfo>,
    /// Device public keys, registered or removed, with their validity
    /// (docs/DERIVATION.md §10). Absent where no device was ever linked
    /// (and in key sets saved before it existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::provenance::DeviceKeyInfo>,
}

impl KeyInfo {
    /// The published description of a public key (no secret needed: a
    /// retired key's secret is erased, its public half stays).
    pub fn for_public_key(
        key: &VerifyingKey,
        valid_from: String,
        valid_until: Option<String>,
    ) -> Self {
        KeyInfo {
            key_id: key_id_of(key),
            alg: ALG_ED25519.to_string(),
            public_key: BASE64.encode(key.as_bytes()),
            valid_from,
            valid_until,
        }
    }
}

impl KeySet {
    pub fn find(&self, key_id: &str) -> Option<&KeyInfo> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }
}

/// The ID of a public key: `k_` and the first 8 bytes of its SHA-256, in hex.
pub fn key_id_of(key: &VerifyingKey) -> String {
    format!("k_{}", hex::encode(&Sha256::digest(key.as_bytes())[..8]))
}

/// An Ed25519 signing key with its ID. The secret comes from the caller
/// (this crate has no randomness of its own).
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let key_id = key_id_of(&key.verifying_key());
        Signer { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn key_info(&self, valid_from: String, valid_until: Option<String>) -> KeyInfo {
        KeyInfo::for_public_key(&self.key.verifying_key(), valid_from, valid_until)
    }

    /// The public half, as `VerifyingKey` bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    fn sign_bytes(&self, message: &[u8]) -> Signature {
        Signature {
            alg: ALG_ED25519.to_string(),
            key_id: self.key_id.clone(),
            value: BASE64.encode(self.key.sign(message).to_bytes()),
        }
    }

    /// Signs a chain body (setting its `key_id`) and names it.
    pub fn seal_chain(&self, mut body: ChainBody) -> Result<ChainResponse, CanonicalError> {
        body.key_id = self.key_id.clone();
        let bytes = to_canonical_vec(&body)?;
        let id = RecordId::for_body(RecordKind::Chain, &bytes);
        Ok(ChainResponse {
            id,
            signature: self.sign_bytes(&bytes),
            chain: ChainRecord { id, body },
        })
    }

    /// Signs a draw body (setting its `key_id`) and names it.
    pub fn seal_draw(&self, body: DrawBody) -> Result<DrawResponse, CanonicalError> {
        Ok(self.seal_draw_to_vec(body)?.0)
    }

    /// [`Signer::seal_draw`], also returning the response's canonical bytes
    /// (what [`DrawResponse::to_canonical_vec`] gives). The body is turned
    /// into a JSON value once and reused for the response, which is the
    /// body's members plus `id`, next to the signature: the ledger does this
    /// for every draw on every replica.
    pub fn seal_draw_to_vec(
        &self,
        mut body: DrawBody,
    ) -> Result<(DrawResponse, Vec<u8>), CanonicalError> {
        body.key_id = self.key_id.clone();
        let mut value = serde_json::to_value(&body)?;
        let bytes = value_to_canonical_vec(&value)?;
        let id = RecordId::for_body(RecordKind::Draw, &bytes);
        let signature = self.sign_bytes(&bytes);
        if let serde_json::Value::Object(members) = &mut value {
            members.insert("id".into(), serde_json::Value::String(id.to_string()));
        }
        let mut response = serde_json::Map::new();
        response.insert("draw".into(), value);
        response.insert("signature".into(), serde_json::to_value(&signature)?);
        let response_bytes = value_to_canonical_vec(&serde_json::Value::Object(response))?;
        Ok((
            DrawResponse {
                signature,
                draw: DrawRecord { id, body },
            },
            response_bytes,
        ))
    }
}

impl DrawResponse {
    /// The exact bytes sent as the 201 body and kept in the ledger.
    pub fn to_canonical_vec(&self) -> Result<Vec<u8>, CanonicalError> {
        to_canonical_vec(self)
    }
}

impl ChainResponse {
    pub fn to_canonical_vec(&self) -> Result<Vec<u8>, CanonicalError> {
        to_canonical_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_sealed_to_bytes_gives_exactly_the_canonical_bytes_of_its_response() {
        let signer = Signer::from_secret([9; 32]);
        let genesis = crate::sample::genesis(&signer);
        let specs = [
            Spec::Integers {
                min: -5,
                max: i64::MAX,
                count: 3,
                unique: true,
            },
            Spec::Permutation { n: 7 },
            Spec::Bytes { count: 5 },
        ];
        let tags = [
            "",
            "plain",
            "quote \" back\\slash",
            "tab\tnew\nline\u{1}",
            "é 🎲 \u{e000}",
        ];
        for (n, spec) in specs.into_iter().enumerate() {
            let sample =
                crate::sample::draw_after(&signer, &genesis, genesis.id, 1 + n as u64, spec);
            for (k, tag) in tags.iter().enumerate() {
                let mut body = sample.draw.body.clone();
                body.tag = tag.to_string();
                body.request_id = (k % 2 == 0).then(|| format!("r-{k}"));
                let (response, bytes) = signer.seal_draw_to_vec(body.clone()).unwrap();
                assert_eq!(bytes, to_canonical_vec(&response).unwrap(), "tag {tag:?}");
                assert_eq!(response, signer.seal_draw(body).unwrap());
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_795_772_293_123),
            "2026-11-27T09:38:13.123Z"
        );
        assert!(parse_timestamp("2026-11-27T09:38:13.123Z").is_some());
    }

    #[test]
    fn a_sealed_chain_round_trips_through_json_with_its_type_tag() {
        let signer = Signer::from_secret([1; 32]);
        let sealed = signer
            .seal_chain(ChainBody {
                record_type: ChainType::Chain,
                customer: "cu_1".into(),
                tag: "roulette".into(),
                created_at: format_timestamp(0),
                ledger_index: 3,
                key_id: String::new(),
            })
            .unwrap();
        let text = String::from_utf8(sealed.to_canonical_vec().unwrap()).unwrap();
        assert!(text.contains(r#""type":"chain""#), "{text}");
        let back: ChainResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(back.chain.body.key_id, signer.key_id());
    }
}
