//! A ledger in a temporary redb file for the state machine's unit tests:
//! commands applied one transaction each, at a given leader time, exactly
//! as `apply_entries` does, plus builders for the link commands. A new
//! ledger is at this build's feature level unless a test asks for another.

use redb::Database;

use super::dispatch::Applier;
use super::links::registry::{links, LinkView};
use super::tables::ALL;
use super::tx::{ApplyCache, ApplyError, Tx};
use crate::feature_level::FeatureLevel;
use crate::types::{Command, Outcome};

pub struct Ledger {
    _dir: tempfile::TempDir,
    pub db: Database,
    cache: ApplyCache,
}

impl Ledger {
    pub fn new() -> Self {
        Self::at_level(FeatureLevel::SUPPORTED)
    }

    /// A ledger whose cluster feature level is `level`.
    pub fn at_level(level: FeatureLevel) -> Self {
        let mut ledger = Self::empty();
        if level > FeatureLevel::BASE {
            let raised = ledger.apply(0, Command::RaiseFeatureLevel { level: level.0 });
            assert_eq!(raised, Outcome::Done);
        }
        ledger
    }

    fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        for (_, def) in ALL {
            tx.open_table(def).unwrap();
        }
        tx.commit().unwrap();
        Ledger {
            _dir: dir,
            db,
            cache: ApplyCache::default(),
        }
    }

    /// A ledger whose apply opens sealed signing secrets with `kek`.
    pub fn with_kek(kek: crate::key_encryption::KeyEncryptionKey) -> Self {
        let mut ledger = Self::new();
        ledger.cache = ApplyCache::new(None, Some(kek));
        ledger
    }

    pub fn apply(&mut self, at_ms: u64, command: Command) -> Outcome {
        self.try_apply(at_ms, command).unwrap()
    }

    /// [`Ledger::apply`], for a command that may stop apply: an error
    /// commits nothing.
    pub fn try_apply(&mut self, at_ms: u64, command: Command) -> Result<Outcome, ApplyError> {
        let tx = self.db.begin_write().unwrap();
        let outcome = {
            let t = Tx::new(&tx);
            let mut a = Applier {
                tx: &t,
                cache: &mut self.cache,
                at_ms,
                level: super::features::stored(&t)?,
            };
            let outcome = a.apply(&command)?;
            t.finish()?;
            outcome
        };
        tx.commit().unwrap();
        Ok(outcome)
    }

    pub fn view(&self, device: &str) -> LinkView {
        links(&self.db)
            .unwrap()
            .into_iter()
            .find(|l| l.device == device)
            .unwrap()
    }
}

pub const KEY: [u8; 32] = [7; 32];

pub fn register(device: &str) -> Command {
    Command::RegisterLink {
        device: device.into(),
        address: "127.0.0.1:7000".into(),
        public_key: KEY,
    }
}

pub fn lease(device: &str, expected: u64) -> Command {
    Command::AssignLease {
        device: device.into(),
        owner: 1,
        expected_epoch: Some(expected),
        duration_ms: 3000,
    }
}

pub fn append(device: &str, epoch: u64, seq: u64) -> Command {
    Command::AppendEntropy {
        device: device.into(),
        epoch,
        seq,
        bytes: vec![seq as u8; 16],
    }
}

pub fn quarantine(device: &str, epoch: u64, seq: u64) -> Command {
    Command::QuarantineChunk {
        device: device.into(),
        epoch,
        seq,
        length: 16,
        sha256: [0; 32],
        reason: "health_test".into(),
    }
}
