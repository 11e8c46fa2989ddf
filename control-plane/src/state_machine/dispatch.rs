//! The command dispatch: [`Applier`] carries what every command of one
//! entry shares (the transaction, the cache, the leader's clock) and
//! [`Applier::apply`] hands each command to the module that owns its
//! domain: `chains` (chains and draws), `pool` (the entropy pool and each
//! device's sequence accounting), `links` (registry and leases),
//! `customers`, `keys`, `members`. It holds no domain logic of its own.
//!
//! Each command is checked in full before its first write, so a rejected
//! command leaves no trace. Commands of one batch run in order inside one
//! redb write transaction and see each other's effects (that is how 50
//! concurrent draws on one `previous` resolve to exactly one winner).

use super::tx::{ApplyCache, ApplyError, Tx};
use geiger_protocol::Derivation;

use crate::types::{Command, Outcome, Rejection};

/// Longest device id, customer id, name or reason.
const MAX_NAME_BYTES: usize = 128;

/// The context every command of one entry shares.
pub struct Applier<'a, 'b> {
    pub tx: &'a Tx<'b>,
    pub cache: &'a mut ApplyCache,
    /// The leader's clock for this batch.
    pub at_ms: u64,
    /// The cluster feature level in force (`super::features`).
    pub level: crate::feature_level::FeatureLevel,
}

/// A command's result: its outcome, or the rejection that left no trace.
pub(super) type Applied = Result<Outcome, Rejection>;

/// The rule for ids, names and reasons in commands.
pub(super) fn check_name(what: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(Rejection::Invalid(format!(
            "`{what}` must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl Applier<'_, '_> {
    /// Applies one command. `Err` is a storage failure; a rejected command is
    /// `Ok(Outcome::Rejected(_))`.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, ApplyError> {
        let result = match command {
            Command::CreateCustomer {
                id,
                name,
                key_sha256,
            } => self.create_customer(id, name, key_sha256)?,
            Command::CreateChain { customer, tag } => self.create_chain(customer, tag, None)?,
            Command::CreateChainOnce {
                customer,
                tag,
                request_id,
            } => self.create_chain(customer, tag, Some(request_id))?,
            Command::Draw { customer, request } => self.draw(customer, request, Derivation::V1)?,
            Command::DrawWith {
                customer,
                request,
                derivation,
            } => self.draw(customer, request, *derivation)?,
            Command::AppendEntropy {
                device,
                epoch,
                seq,
                bytes,
            } => self.append_entropy(device, *epoch, *seq, bytes)?,
            Command::QuarantineChunk {
                device,
                epoch,
                seq,
                length,
                sha256,
                reason,
            } => self.quarantine(device, *epoch, *seq, *length, sha256, reason)?,
            Command::AssignLease {
                device,
                owner,
                expected_epoch,
                duration_ms,
            } => self.assign_lease(device, *owner, *expected_epoch, *duration_ms)?,
            Command::RenewLease {
                device,
                owner,
                epoch,
                duration_ms,
            } => self.renew_lease(device, *owner, *epoch, *duration_ms)?,
            Command::SetMemberLabels { node, member } => self.set_member_labels(*node, member)?,
            Command::RotateKey { secret } => self.rotate_plain_key(secret)?,
            Command::RotateSealedKey { public_key, sealed } => {
                self.rotate_sealed_key(public_key, sealed)?
            }
            Command::RegisterLink {
                device,
                address,
                public_key,
            } => self.register_link(device, address, public_key)?,
            Command::RemoveLink { device } => self.remove_link(device)?,
            Command::SkipChunks {
                device,
                epoch,
                from,
                to,
            } => self.skip_chunks(device, *epoch, *from, *to)?,
            Command::AppendSignedEntropy {
                device,
                epoch,
                seq,
                timestamp_ms,
                signature,
                bytes,
            } => self.append_signed(device, *epoch, *seq, *timestamp_ms, signature, bytes)?,
            Command::RaiseFeatureLevel { level } => self.raise_feature_level(*level)?,
        };
        Ok(match result {
            Ok(outcome) => outcome,
            Err(rejection) => {
                tracing::debug!(command = command.kind(), %rejection, "command rejected");
                Outcome::Rejected(rejection)
            }
        })
    }
}
