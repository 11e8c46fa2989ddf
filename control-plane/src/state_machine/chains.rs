//! Chains and draws: applying `CreateChain`, `CreateChainOnce` and `Draw`.
//!
//! A chain is a line: `previous` is free exactly when it is the chain's
//! head, and otherwise its successor is the draw one position further on
//! (the `chain_draws` index). A draw takes its entropy from the pool
//! ([`super::pool`]: read first, consumed only once everything else is
//! checked), is sealed with the current signing key and stored with the
//! exact request and 201 bytes. A repeat of an idempotency key is a replay
//! only when it is the same request ([`super::idempotency`]).

use geiger_protocol::record::format_timestamp;
use geiger_protocol::{
    ChainBody, ChainType, Derivation, DrawBody, DrawRequest, DrawType, RecordId, RecordKind,
};

use super::dispatch::{Applied, Applier};
use super::idempotency::{chain_difference, draw_difference};
use super::tables::*;
use super::tx::ApplyError;
use crate::types::{Outcome, Rejection};

impl Applier<'_, '_> {
    /// The next ledger sequence number. One Raft entry holds many commands,
    /// so records carry this per-command number as their `ledger_index`.
    fn next_ledger_index(&self) -> Result<u64, ApplyError> {
        let n = self.tx.get::<u64>(META, META_LEDGER_SEQ)?.unwrap_or(0) + 1;
        self.tx.put(META, META_LEDGER_SEQ, &n)?;
        Ok(n)
    }

    pub(super) fn create_chain(
        &mut self,
        customer: &str,
        tag: &str,
        request_id: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        if let Err(e) = geiger_protocol::api::validate_tag(tag) {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        if let Some(Err(e)) = request_id.map(geiger_protocol::api::validate_request_id) {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        if self.tx.get_raw(CUSTOMERS, customer.as_bytes())?.is_none() {
            return Ok(Err(Rejection::NotFound(format!("customer {customer}"))));
        }
        let request_key = request_id.map(|r| chain_request_key(customer, r));
        if let Some((request_id, key)) = request_id.zip(request_key.as_ref()) {
            if let Some(chain) = self.tx.get_raw(CHAIN_REQUESTS, key)? {
                let id = std::str::from_utf8(&chain)
                    .ok()
                    .and_then(|s| s.parse().ok());
                let meta = self.tx.get::<ChainMeta>(CHAINS, &chain)?;
                let Some((id, meta)) = id.zip(meta) else {
                    return Ok(Err(Rejection::Invalid(
                        "corrupt chain request index".into(),
                    )));
                };
                if let Some(field) = chain_difference(&meta.tag, tag) {
                    return Ok(Err(Rejection::RequestIdReused {
                        request_id: request_id.to_string(),
                        field: field.to_string(),
                    }));
                }
                return Ok(Ok(Outcome::Replayed {
                    id,
                    response: meta.response,
                }));
            }
        }
        let Some(signer) = self.cache.signer.clone() else {
            return Ok(Err(Rejection::NoSigningKey));
        };
        let ledger_index = self.next_ledger_index()?;
        let sealed = signer.seal_chain(ChainBody {
            record_type: ChainType::Chain,
            customer: customer.to_string(),
            tag: tag.to_string(),
            created_at: format_timestamp(self.at_ms),
            ledger_index,
            key_id: String::new(),
        })?;
        let response = sealed.to_canonical_vec()?;
        let id = sealed.id.to_string();
        self.tx.put(
            CHAINS,
            id.as_bytes(),
            &ChainMeta {
                customer: customer.to_string(),
                tag: tag.to_string(),
                response: response.clone(),
            },
        )?;
        self.tx.put(
            CHAIN_HEADS,
            id.as_bytes(),
            &ChainHead {
                customer: customer.to_string(),
                last_position: 0,
                head: id.clone(),
            },
        )?;
        self.tx.put_raw(
            CUSTOMER_CHAINS,
            &customer_chain_key(customer, ledger_index),
            id.as_bytes(),
        )?;
        if let Some(key) = &request_key {
            self.tx.put_raw(CHAIN_REQUESTS, key, id.as_bytes())?;
        }
        tracing::debug!(chain = %id, customer, "chain created");
        Ok(Ok(Outcome::ChainCreated {
            id: sealed.id,
            response,
        }))
    }

    pub(super) fn draw(
        &mut self,
        customer: &str,
        request_bytes: &[u8],
        derivation: Derivation,
    ) -> Result<Applied, ApplyError> {
        let request: DrawRequest = match serde_json::from_slice(request_bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Err(Rejection::Invalid(format!("not a draw request: {e}")))),
        };
        if let Err(e) = request.validate() {
            return Ok(Err(Rejection::Invalid(e.to_string())));
        }
        let previous = request.previous.to_string();
        // Where does `previous` sit, and whose chain is it?
        let (chain_id, previous_position) = match request.previous.kind() {
            RecordKind::Chain => (previous.clone(), 0),
            RecordKind::Draw => match self.tx.get::<DrawPlace>(DRAWS, previous.as_bytes())? {
                Some(d) => (d.chain, d.position),
                None => return Ok(Err(Rejection::NotFound(format!("previous {previous}")))),
            },
        };
        let Some(mut chain) = self.tx.get::<ChainHead>(CHAIN_HEADS, chain_id.as_bytes())? else {
            return Ok(Err(Rejection::NotFound(format!("previous {previous}"))));
        };
        // Ownership before the successor check, so a stranger learns nothing
        // about another customer's chain.
        if chain.customer != customer {
            return Ok(Err(Rejection::Forbidden(format!(
                "chain {chain_id} belongs to another customer"
            ))));
        }
        // A chain is a line: `previous` is free exactly when it is the head;
        // otherwise its successor is the draw one position further on.
        if chain.last_position > previous_position {
            let key = chain_draw_key(&chain_id, previous_position + 1);
            let Some(successor) = self.tx.get_raw(CHAIN_DRAWS, &key)? else {
                return Ok(Err(Rejection::Invalid("corrupt chain index".into())));
            };
            let existing: RecordId = match std::str::from_utf8(&successor)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(id) => id,
                None => return Ok(Err(Rejection::Invalid("corrupt chain index".into()))),
            };
            // The same key (`previous` and `request_id`): a replay when it is
            // the same request, refused when it is another one.
            if let Some(request_id) = &request.request_id {
                if let Some(d) = self.tx.get::<StoredDraw>(DRAWS, &successor)? {
                    if d.request_id.as_ref() == Some(request_id) {
                        if let Some(field) = draw_difference(&d.request, &request, request_bytes) {
                            return Ok(Err(Rejection::RequestIdReused {
                                request_id: request_id.clone(),
                                field: field.to_string(),
                            }));
                        }
                        return Ok(Ok(Outcome::Replayed {
                            id: existing,
                            response: d.response,
                        }));
                    }
                }
            }
            return Ok(Ok(Outcome::PreviousAlreadyUsed { existing }));
        }
        let position = previous_position + 1;
        let Some(signer) = self.cache.signer.clone() else {
            return Ok(Err(Rejection::NoSigningKey));
        };
        let (derived, taken, read) = match self.take_entropy(&request.spec, derivation)? {
            Ok(x) => x,
            Err(r) => return Ok(Err(r)),
        };
        // Everything is checked: from here on, only writes.
        let ledger_index = self.next_ledger_index()?;
        let entropy = self.consume(&taken, &read[..derived.consumed])?;
        let (sealed, response) = signer.seal_draw_to_vec(DrawBody {
            record_type: DrawType::Draw,
            chain: chain_id.parse().map_err(|_| {
                ApplyError::Storage(redb::Error::Corrupted(format!("bad chain id {chain_id}")))
            })?,
            position,
            previous: request.previous,
            tag: request.tag.clone(),
            customer: customer.to_string(),
            request_id: request.request_id.clone(),
            spec: request.spec.clone(),
            result: derived.result,
            issued_at: format_timestamp(self.at_ms),
            ledger_index,
            entropy,
            derivation: derivation.name().to_string(),
            key_id: String::new(),
        })?;
        let id = sealed.draw.id.to_string();
        self.tx.put(
            DRAWS,
            id.as_bytes(),
            &StoredDraw {
                id: id.clone(),
                chain: chain_id.clone(),
                position,
                request_id: request.request_id.clone(),
                request: request_bytes.to_vec(),
                response: response.clone(),
            },
        )?;
        self.tx.put_raw(
            CHAIN_DRAWS,
            &chain_draw_key(&chain_id, position),
            id.as_bytes(),
        )?;
        chain.last_position = position;
        chain.head = id;
        self.tx.put(CHAIN_HEADS, chain_id.as_bytes(), &chain)?;
        Ok(Ok(Outcome::Drawn {
            id: sealed.draw.id,
            response,
        }))
    }
}
