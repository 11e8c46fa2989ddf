//! Deterministic example records, signed with a caller-given key: for
//! documentation, for tests of crates that handle records, and for anyone
//! writing a verifier who wants something real to check.

use crate::derivation::Derivation;
use crate::id::RecordId;
use crate::record::{
    format_timestamp, ChainBody, ChainResponse, DrawBody, DrawResponse, EntropySegment, EntropyUse,
    Signer,
};
use crate::spec::Spec;

/// The time every sample record is stamped near.
pub const SAMPLE_TIME_MS: u64 = 1_795_000_000_000;

/// A chain genesis for customer `cu_casino`, issued 1 ms after
/// [`SAMPLE_TIME_MS`].
pub fn genesis(signer: &Signer) -> ChainResponse {
    signer
        .seal_chain(ChainBody {
            record_type: Default::default(),
            customer: "cu_casino".into(),
            tag: "blackjack table 4".into(),
            created_at: format_timestamp(SAMPLE_TIME_MS + 1),
            ledger_index: 10,
            key_id: String::new(),
        })
        .expect("sample records canonicalise")
}

/// A `geiger-derive-v1` draw at `position` after `previous` on `chain`, its
/// entropy a fixed pattern split over two chunks of one device, issued at
/// [`SAMPLE_TIME_MS`] + 1 + `position`.
pub fn draw_after(
    signer: &Signer,
    chain: &ChainResponse,
    previous: RecordId,
    position: u64,
    spec: Spec,
) -> DrawResponse {
    draw_after_with(signer, chain, previous, position, spec, Derivation::V1)
}

/// [`draw_after`] by the given derivation.
pub fn draw_after_with(
    signer: &Signer,
    chain: &ChainResponse,
    previous: RecordId,
    position: u64,
    spec: Spec,
    derivation: Derivation,
) -> DrawResponse {
    let pattern: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let derived = derivation
        .derive(&spec, &pattern)
        .expect("the pattern is long enough for samples");
    let used = &pattern[..derived.consumed];
    let half = (used.len() / 2) as u32;
    signer
        .seal_draw(DrawBody {
            record_type: Default::default(),
            chain: chain.id,
            position,
            previous,
            tag: format!("hand {position}"),
            customer: chain.chain.body.customer.clone(),
            request_id: Some(format!("req-{position}")),
            spec,
            result: derived.result,
            issued_at: format_timestamp(SAMPLE_TIME_MS + 1 + position),
            ledger_index: 10 + position,
            entropy: EntropyUse::new(
                vec![
                    EntropySegment {
                        device: "dev_a".into(),
                        chunk_seq: 4,
                        offset: 100,
                        length: half,
                    },
                    EntropySegment {
                        device: "dev_a".into(),
                        chunk_seq: 5,
                        offset: 0,
                        length: used.len() as u32 - half,
                    },
                ],
                used,
            ),
            derivation: derivation.name().into(),
            key_id: String::new(),
        })
        .expect("sample records canonicalise")
}
