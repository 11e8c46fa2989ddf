//! The cluster feature level as the ledger keeps it ([`META_FEATURE_LEVEL`]
//! in `meta`; absent means [`FeatureLevel::BASE`]), and the command that
//! raises it. Apply code checks `Applier::level` before doing anything a
//! level added, so every replica starts doing it at the same entry
//! (`crate::feature_level` says who proposes the raise, and when).

use redb::Database;

use super::dispatch::{Applied, Applier};
use super::reads::{get, ReadError};
use super::tables::{META, META_FEATURE_LEVEL};
use super::tx::{ApplyError, Tx};
use crate::feature_level::FeatureLevel;
use crate::types::Outcome;

/// The level in force, inside an apply transaction.
pub(super) fn stored(tx: &Tx<'_>) -> Result<FeatureLevel, ApplyError> {
    Ok(tx
        .get::<u32>(META, META_FEATURE_LEVEL)?
        .map_or(FeatureLevel::BASE, FeatureLevel))
}

/// The level in force, as this replica has applied it.
pub fn feature_level(db: &Database) -> Result<FeatureLevel, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    Ok(get::<u32>(&tx, META, META_FEATURE_LEVEL)?.map_or(FeatureLevel::BASE, FeatureLevel))
}

impl Applier<'_, '_> {
    /// Raises the level to `level`. A raise to a level this build does not
    /// know stops apply (an error, not a rejection): the replica cannot
    /// follow the entries after it, and says which build it needs. A raise
    /// to the level in force or below changes nothing.
    pub(super) fn raise_feature_level(&mut self, level: u32) -> Result<Applied, ApplyError> {
        let wanted = FeatureLevel(level);
        if wanted > FeatureLevel::SUPPORTED {
            tracing::error!(
                wanted = level,
                supported = FeatureLevel::SUPPORTED.0,
                "the cluster raised its feature level beyond this build: upgrade this node"
            );
            return Err(ApplyError::FeatureLevel {
                wanted: level,
                supported: FeatureLevel::SUPPORTED.0,
            });
        }
        if wanted > self.level {
            self.tx.put(META, META_FEATURE_LEVEL, &level)?;
            tracing::info!(
                from = self.level.0,
                to = level,
                "cluster feature level raised"
            );
            self.level = wanted;
        }
        Ok(Ok(Outcome::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::test_ledger::Ledger;
    use crate::types::Command;

    #[test]
    fn a_raise_beyond_this_build_stops_apply_and_changes_nothing() {
        let mut l = Ledger::at_level(FeatureLevel::BASE);
        let beyond = FeatureLevel::SUPPORTED.0 + 1;
        let err = l
            .try_apply(1, Command::RaiseFeatureLevel { level: beyond })
            .unwrap_err();
        assert!(
            err.to_string().contains("upgrade this node"),
            "says what to do: {err}"
        );
        assert_eq!(feature_level(&l.db).unwrap(), FeatureLevel::BASE);
    }

    #[test]
    fn the_level_only_rises() {
        let mut l = Ledger::at_level(FeatureLevel::REVEAL);
        let lower = Command::RaiseFeatureLevel {
            level: FeatureLevel::BASE.0,
        };
        assert_eq!(l.apply(1, lower), Outcome::Done);
        assert_eq!(feature_level(&l.db).unwrap(), FeatureLevel::REVEAL);
    }
}
