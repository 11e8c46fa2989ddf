//! Signing keys: applying `RotateSealedKey` (and the older `RotateKey`,
//! whose secret travels in plaintext; still applied for logs written
//! before the key-encryption key, and by clusters run without one).
//!
//! The secret is drawn by the proposer (apply has no randomness). The key
//! it replaces keeps its public half and validity, so old draws keep
//! verifying, but its secret is erased: nothing signs with it again. Keys
//! of the legacy table (plaintext secrets) move to [`SIGNING_KEYS`] with
//! their secret erased at the first rotation.
//!
//! Every replica signs what it applies, so every replica must open the
//! current key: a replica whose KEK does not open it stops (a storage
//! error) rather than apply differently from the others.

use ed25519_dalek::VerifyingKey;
use geiger_protocol::record::key_id_of;
use geiger_protocol::Signer;

use super::dispatch::{Applied, Applier};
use super::tables::*;
use super::tx::{ApplyCache, ApplyError, Tx};
use crate::key_encryption::{KekError, KeyEncryptionKey, SealedSecret};
use crate::types::{Outcome, Rejection};

impl Applier<'_, '_> {
    pub(super) fn rotate_plain_key(&mut self, secret: &[u8; 32]) -> Result<Applied, ApplyError> {
        let signer = Signer::from_secret(*secret);
        self.install_key(signer.public_key(), KeySecret::Plain(*secret), signer)
    }

    pub(super) fn rotate_sealed_key(
        &mut self,
        public_key: &[u8; 32],
        sealed: &SealedSecret,
    ) -> Result<Applied, ApplyError> {
        let Ok(verifying) = VerifyingKey::from_bytes(public_key) else {
            return Ok(Err(Rejection::Invalid(
                "`public_key` is not an Ed25519 public key".into(),
            )));
        };
        let key_id = key_id_of(&verifying);
        if self.key_exists(&key_id)? {
            return Ok(Err(Rejection::AlreadyExists(format!("key {key_id}"))));
        }
        let signer = open_signer(self.cache.kek.as_ref(), public_key, sealed)?;
        // Every replica holds the same KEK (or stopped above), so this
        // check comes out the same everywhere.
        if signer.public_key() != *public_key {
            return Ok(Err(Rejection::Invalid(
                "the sealed secret is not the secret of `public_key`".into(),
            )));
        }
        self.install_key(*public_key, KeySecret::Sealed(sealed.clone()), signer)
    }

    fn key_exists(&self, key_id: &str) -> Result<bool, ApplyError> {
        Ok(self.tx.get_raw(SIGNING_KEYS, key_id.as_bytes())?.is_some()
            || self.tx.get_raw(KEYS, key_id.as_bytes())?.is_some())
    }

    fn install_key(
        &mut self,
        public_key: [u8; 32],
        secret: KeySecret,
        signer: Signer,
    ) -> Result<Applied, ApplyError> {
        let key_id = signer.key_id().to_string();
        if self.key_exists(&key_id)? {
            return Ok(Err(Rejection::AlreadyExists(format!("key {key_id}"))));
        }
        self.retire_current_key()?;
        self.move_legacy_keys()?;
        self.tx.put(
            SIGNING_KEYS,
            key_id.as_bytes(),
            &KeyRecord {
                public_key,
                secret,
                valid_from_ms: self.at_ms,
                valid_until_ms: None,
            },
        )?;
        self.tx.put_raw(META, META_CURRENT_KEY, key_id.as_bytes())?;
        self.cache.signer = Some(signer);
        tracing::info!(key_id, "signing key rotated");
        Ok(Ok(Outcome::KeyRotated { key_id }))
    }

    /// Ends the current key's validity now and erases its secret.
    fn retire_current_key(&mut self) -> Result<(), ApplyError> {
        let Some(old_id) = self.tx.get_raw(META, META_CURRENT_KEY)? else {
            return Ok(());
        };
        if let Some(mut old) = self.tx.get::<KeyRecord>(SIGNING_KEYS, &old_id)? {
            old.valid_until_ms = Some(self.at_ms);
            old.secret = KeySecret::Erased;
            self.tx.put(SIGNING_KEYS, &old_id, &old)?;
        } else if let Some(mut old) = self.tx.get::<StoredKey>(KEYS, &old_id)? {
            old.valid_until_ms = Some(self.at_ms);
            self.tx.put(KEYS, &old_id, &old)?;
        }
        Ok(())
    }

    /// Moves every key of the legacy table (plaintext secrets) into
    /// [`SIGNING_KEYS`], keeping only public half and validity.
    fn move_legacy_keys(&mut self) -> Result<(), ApplyError> {
        for (id, legacy) in self.tx.scan::<StoredKey>(KEYS)? {
            let public_key = Signer::from_secret(legacy.secret).public_key();
            self.tx.put(
                SIGNING_KEYS,
                &id,
                &KeyRecord {
                    public_key,
                    secret: KeySecret::Erased,
                    valid_from_ms: legacy.valid_from_ms,
                    valid_until_ms: legacy.valid_until_ms,
                },
            )?;
            self.tx.delete(KEYS, &id)?;
        }
        Ok(())
    }
}

/// The signer of the current key, for the apply cache.
pub(super) fn current_signer(
    tx: &Tx<'_>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Option<Signer>, ApplyError> {
    let Some(key_id) = tx.get_raw(META, META_CURRENT_KEY)? else {
        return Ok(None);
    };
    if let Some(record) = tx.get::<KeyRecord>(SIGNING_KEYS, &key_id)? {
        return match &record.secret {
            KeySecret::Sealed(sealed) => Ok(Some(open_signer(kek, &record.public_key, sealed)?)),
            KeySecret::Plain(secret) => Ok(Some(Signer::from_secret(*secret))),
            KeySecret::Erased => Ok(None),
        };
    }
    let legacy: Option<StoredKey> = tx.get(KEYS, &key_id)?;
    Ok(legacy.map(|k| Signer::from_secret(k.secret)))
}

fn open_signer(
    kek: Option<&KeyEncryptionKey>,
    public_key: &[u8; 32],
    sealed: &SealedSecret,
) -> Result<Signer, ApplyError> {
    let kek = kek.ok_or(KekError::Missing)?;
    let secret = kek.open(sealed, public_key)?;
    Ok(Signer::from_secret(*secret))
}

/// Checks that `kek` opens the current signing key of the ledger in `db`
/// (for a restore, before a node is started on it).
pub fn check_current_key(
    db: &redb::Database,
    kek: Option<&KeyEncryptionKey>,
) -> Result<(), ApplyError> {
    let tx = db.begin_write().map_err(redb::Error::from)?;
    let opened = current_signer(&Tx::new(&tx), kek).map(|_| ());
    tx.abort().map_err(redb::Error::from)?;
    opened
}

impl ApplyCache {
    /// The cache for a state just opened or installed: the current key
    /// opened with `kek`.
    pub fn load(tx: &Tx<'_>, kek: Option<KeyEncryptionKey>) -> Result<Self, ApplyError> {
        let signer = current_signer(tx, kek.as_ref())?;
        Ok(ApplyCache::new(signer, kek))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::reads;
    use crate::state_machine::test_ledger::Ledger;
    use crate::types::Command;

    fn sealed_rotation(kek: &KeyEncryptionKey, secret: [u8; 32]) -> Command {
        let public_key = Signer::from_secret(secret).public_key();
        Command::RotateSealedKey {
            public_key,
            sealed: kek.seal(&secret, &public_key),
        }
    }

    fn record(ledger: &Ledger, key_id: &str) -> Option<KeyRecord> {
        let tx = ledger.db.begin_write().unwrap();
        let record = Tx::new(&tx).get(SIGNING_KEYS, key_id.as_bytes()).unwrap();
        tx.abort().unwrap();
        record
    }

    #[test]
    fn a_plaintext_key_from_before_the_kek_is_erased_by_the_first_sealed_rotation() {
        let kek = KeyEncryptionKey::from_bytes([1; 32]);
        let mut ledger = Ledger::with_kek(kek.clone());
        // A ledger written before the KEK: the key in the legacy table.
        let legacy = Signer::from_secret([9; 32]);
        {
            let tx = ledger.db.begin_write().unwrap();
            let t = Tx::new(&tx);
            t.put(
                KEYS,
                legacy.key_id().as_bytes(),
                &StoredKey {
                    secret: [9; 32],
                    valid_from_ms: 1_000,
                    valid_until_ms: None,
                },
            )
            .unwrap();
            t.put_raw(META, META_CURRENT_KEY, legacy.key_id().as_bytes())
                .unwrap();
            t.finish().unwrap();
            tx.commit().unwrap();
        }
        let outcome = ledger.apply(5_000, sealed_rotation(&kek, [4; 32]));
        let Outcome::KeyRotated { key_id } = outcome else {
            panic!("{outcome:?}");
        };
        let moved = record(&ledger, legacy.key_id()).unwrap();
        assert_eq!(moved.secret, KeySecret::Erased);
        assert_eq!(moved.public_key, legacy.public_key());
        assert_eq!(moved.valid_until_ms, Some(5_000));
        assert!(matches!(
            record(&ledger, &key_id).unwrap().secret,
            KeySecret::Sealed(_)
        ));
        let published = reads::keys(&ledger.db).unwrap();
        assert_eq!(published.keys.len(), 2);
        assert_eq!(published.keys[0].key_id, legacy.key_id());
        assert_eq!(published.keys[1].key_id, key_id);
    }

    #[test]
    fn rotating_to_a_key_already_used_is_rejected_and_changes_nothing() {
        let kek = KeyEncryptionKey::from_bytes([1; 32]);
        let mut ledger = Ledger::with_kek(kek.clone());
        ledger.apply(1_000, sealed_rotation(&kek, [4; 32]));
        let again = ledger.apply(2_000, sealed_rotation(&kek, [4; 32]));
        assert!(matches!(
            again,
            Outcome::Rejected(Rejection::AlreadyExists(_))
        ));
        assert_eq!(reads::keys(&ledger.db).unwrap().keys.len(), 1);
    }

    #[test]
    fn a_sealed_secret_that_is_not_the_named_public_keys_is_rejected() {
        let kek = KeyEncryptionKey::from_bytes([1; 32]);
        let mut ledger = Ledger::with_kek(kek.clone());
        let other = Signer::from_secret([5; 32]).public_key();
        let outcome = ledger.apply(
            1_000,
            Command::RotateSealedKey {
                public_key: other,
                sealed: kek.seal(&[4; 32], &other),
            },
        );
        assert!(
            matches!(outcome, Outcome::Rejected(Rejection::Invalid(_))),
            "{outcome:?}"
        );
        assert!(reads::keys(&ledger.db).unwrap().keys.is_empty());
    }
}
