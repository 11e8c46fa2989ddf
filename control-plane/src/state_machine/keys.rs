//! Signing keys: applying `RotateKey`. The secret arrives in the command
//! (drawn by the proposer: apply has no randomness); the old key's
//! validity ends at the batch's time and it stays in the table, so old
//! draws keep verifying.

use geiger_protocol::Signer;

use super::dispatch::{Applied, Applier};
use super::tables::*;
use super::tx::ApplyError;
use crate::types::{Outcome, Rejection};

impl Applier<'_, '_> {
    pub(super) fn rotate_key(&mut self, secret: &[u8; 32]) -> Result<Applied, ApplyError> {
        let signer = Signer::from_secret(*secret);
        let key_id = signer.key_id().to_string();
        if self.tx.get_raw(KEYS, key_id.as_bytes())?.is_some() {
            return Ok(Err(Rejection::AlreadyExists(format!("key {key_id}"))));
        }
        if let Some(old_id) = self.tx.get_raw(META, META_CURRENT_KEY)? {
            if let Some(mut old) = self.tx.get::<StoredKey>(KEYS, &old_id)? {
                old.valid_until_ms = Some(self.at_ms);
                self.tx.put(KEYS, &old_id, &old)?;
            }
        }
        self.tx.put(
            KEYS,
            key_id.as_bytes(),
            &StoredKey {
                secret: *secret,
                valid_from_ms: self.at_ms,
                valid_until_ms: None,
            },
        )?;
        self.tx.put_raw(META, META_CURRENT_KEY, key_id.as_bytes())?;
        self.cache.signer = Some(signer);
        tracing::info!(key_id, "signing key rotated");
        Ok(Ok(Outcome::KeyRotated { key_id }))
    }
}
