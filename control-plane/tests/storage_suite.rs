//! openraft's own storage conformance suite, run against the redb log store
//! (with its writer thread) and the state machine, each on a fresh directory:
//! log state after appends, truncation and purging, reading entries back
//! while they may still be on their way to disk, vote persistence, applying
//! blank and membership entries, and snapshot build/install.

use geiger_control_plane::log_store::LogStore;
use geiger_control_plane::state_machine::StateMachine;
use geiger_control_plane::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

struct Builder;

fn setup_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Write,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(setup_err)?;
        let log = LogStore::open(&dir.path().join("raft-log.redb"), 4 << 20).map_err(setup_err)?;
        let sm = StateMachine::open(dir.path(), 4 << 20, None).map_err(setup_err)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openraft_s_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
