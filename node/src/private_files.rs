//! Files and directories that hold secrets, private to the service user:
//! directories 0700, files 0600. A secret file that others can read is
//! refused rather than used, so a mistake in deployment stops the node
//! instead of leaking quietly.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} holds secrets but is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    ReadableByOthers { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) if needed and makes it 0700. An existing
/// directory that others could enter is tightened, with a warning.
pub fn private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let mode = fs::metadata(dir).map_err(io_err(dir))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "data directory was open to other users; now 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Refuses a secret file that users other than its owner's group can read.
pub fn check_private(path: &Path) -> Result<(), PrivateFileError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o004 != 0 {
        return Err(PrivateFileError::ReadableByOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes a new secret file, 0600 from its creation on (never briefly
/// readable by others); fails if the file exists.
pub fn write_new_private(path: &Path, contents: &[u8]) -> Result<(), PrivateFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_created_or_tightened_to_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&open).unwrap();
        assert_eq!(
            fs::metadata(&open).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_secret_readable_by_others_is_refused_and_a_new_one_is_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("token");
        write_new_private(&path, b"s3cret").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(check_private(&path).is_ok());
        assert!(write_new_private(&path, b"again").is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check_private(&path),
            Err(PrivateFileError::ReadableByOthers { mode: 0o644, .. })
        ));
    }
}
