//! Making the cluster CA and node certificates (`geiger ctl cert`, and
//! `geiger dev` on its first start), with rcgen: ECDSA P-256 keys, written
//! owner-only (0600) and never over an existing file.
//!
//! - The CA: `ca.pem` (the certificate every node trusts; public) and
//!   `ca.key` (kept by the operator, needed only to issue certificates).
//! - A node: `node-<id>.pem` and `node-<id>.key`, naming
//!   `node-<id>.geiger.internal` (the name [`crate::cluster_tls`] checks),
//!   usable as server and client, signed by the CA.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use geiger_control_plane::raft_network::peer_name;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;

use crate::private_files::{write_new_private, PrivateFileError};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("making the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA certificate: {detail}")]
    BadCa { path: PathBuf, detail: String },
}

/// The files of a CA.
pub fn ca_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// The files of node `id`'s certificate.
pub fn node_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("node-{id}.pem")),
        dir.join(format!("node-{id}.key")),
    )
}

/// A calendar date `days` from now (rcgen takes dates; days since the Unix
/// epoch are turned into a proleptic Gregorian date).
fn date_in(days: i64) -> time_free::Date {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    time_free::civil_from_days(now / 86_400 + days)
}

/// Unix days to a calendar date, without a date library.
mod time_free {
    pub type Date = (i32, u8, u8);

    pub fn civil_from_days(days: i64) -> Date {
        // Shift to an era starting on 0000-03-01, so leap days come last.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year as i32, month as u8, day as u8)
    }
}

/// The CA's parameters; `name` is its common name.
fn ca_params(name: &str, days: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ((y0, m0, d0), (y1, m1, d1)) = (date_in(-1), date_in(days));
    params.not_before = rcgen::date_time_ymd(y0, m0, d0);
    params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    Ok(params)
}

/// Makes a new cluster CA in `dir` (`ca.pem`, `ca.key`), valid for `days`.
pub fn create_ca(dir: &Path, cluster: &str, days: i64) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate()?;
    // A fresh suffix keeps two CAs of one cluster apart by name too (both
    // are trusted at once while one replaces the other).
    let suffix: u32 = rand::random();
    let params = ca_params(&format!("geiger {cluster} cluster CA {suffix:08x}"), days)?;
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = ca_files(dir);
    write_new_private(&key_path, key.serialize_pem().as_bytes())?;
    write_new_private(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path))
}

/// The CA as an issuer: its certificate's common name, rebuilt around its
/// key (rcgen signs with the issuer's name and key; nothing else of the CA
/// certificate goes into what it issues).
fn load_issuer(ca_cert: &Path, ca_key: &Path) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let bad = |detail: String| CertError::BadCa {
        path: ca_cert.to_path_buf(),
        detail,
    };
    let pem = read(ca_cert)?;
    let key = KeyPair::from_pem(&read(ca_key)?)?;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| bad("no common name".into()))?
        .to_string();
    if parsed.public_key().raw != key.public_key_der().as_slice() {
        return Err(bad(format!(
            "{} does not hold this certificate's key",
            ca_key.display()
        )));
    }
    let issuer = ca_params(&name, 1)?.self_signed(&key)?;
    Ok((issuer, key))
}

/// Issues node `id`'s certificate, signed by the CA in `ca_cert`/`ca_key`,
/// valid for `days`, into `out` (`node-<id>.pem`, `node-<id>.key`).
pub fn issue_node(
    ca_cert: &Path,
    ca_key: &Path,
    id: u64,
    days: i64,
    out: &Path,
) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(out).map_err(|source| CertError::Read {
        path: out.to_path_buf(),
        source,
    })?;
    let (issuer, issuer_key) = load_issuer(ca_cert, ca_key)?;
    let name = peer_name(id);
    let mut params = CertificateParams::new(vec![name.clone()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let ((y0, m0, d0), (y1, m1, d1)) = (date_in(-1), date_in(days));
    params.not_before = rcgen::date_time_ymd(y0, m0, d0);
    params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &issuer_key)?;
    let (cert_path, key_path) = node_files(out, id);
    write_new_private(&key_path, key.serialize_pem().as_bytes())?;
    write_new_private(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_days_become_calendar_dates() {
        assert_eq!(time_free::civil_from_days(0), (1970, 1, 1));
        assert_eq!(time_free::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(time_free::civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(time_free::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn a_node_certificate_chains_to_its_ca_and_names_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = create_ca(dir.path(), "test", 30).unwrap();
        let (cert, _) = issue_node(&ca, &ca_key, 7, 10, dir.path()).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(crate::cluster_tls::node_ids_named(&der), vec![7]);
        let ca_der = rustls_pki_types::CertificateDer::from_pem_file(&ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls_pki_types::UnixTime::now())
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-7.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never over an existing file.
        assert!(issue_node(&ca, &ca_key, 7, 10, dir.path()).is_err());
    }
}
