//! The link's secure channel: TLS 1.3 (rustls, ring provider) in which both
//! ends present an RFC 7250 raw Ed25519 public key instead of a certificate,
//! and each end pins the key it expects (docs/LINK.md, "Channel security").
//!
//! - The device presents its device key, the very key registered for it in
//!   the ledger; the node accepts the handshake only if the presented key is
//!   the registered one ([`PinnedDeviceKey`]).
//! - The node presents its link key (`link.key` in its data directory); the
//!   device accepts the handshake only if that key is on its list of cluster
//!   members' link keys ([`TrustedNodes`]).
//!
//! The handshake's CertificateVerify proves possession of each private key,
//! so a third party can neither impersonate an end nor read or alter what
//! the session carries. No certificate, CA or clock is involved: nothing to
//! expire on a device that may sit unattended for years.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    ServerConfig, SignatureScheme,
};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's
/// 32 bytes follow it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410): the
/// 32-byte seed follows it.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The name the node asks for. With raw public keys nothing checks it; the
/// pinned key is the identity.
const SERVER_NAME: &str = "geiger-device";

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("{path}: {what}")]
    TrustedNodes { path: PathBuf, what: String },
}

/// An Ed25519 public key as the SubjectPublicKeyInfo TLS carries.
pub fn spki(key: &VerifyingKey) -> Vec<u8> {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    der
}

/// The 32 key bytes of an Ed25519 SubjectPublicKeyInfo, if it is one.
pub fn key_of_spki(der: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(&SPKI_PREFIX[..])?.try_into().ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our key, as rustls presents and signs with it.
fn certified(key: &SigningKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&key.to_bytes());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&der)?;
    let public = CertificateDer::from(spki(&key.verifying_key()));
    Ok(Arc::new(CertifiedKey::new(vec![public], signer)))
}

/// Checks a handshake signature made with the raw key `der`.
fn verify_signature(
    message: &[u8],
    der: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, TlsError> {
    let spki = SubjectPublicKeyInfoDer::from(der.as_ref());
    verify_tls13_signature_with_raw_key(
        message,
        &spki,
        dss,
        &provider().signature_verification_algorithms,
    )
}

fn hex_key(key: &[u8; 32]) -> String {
    hex::encode(key)
}

/// The node side's verifier: the device must present exactly the registered
/// key. It remembers what was presented, so a refusal can name it.
#[derive(Debug)]
pub struct PinnedDeviceKey {
    expected: [u8; 32],
    presented: Mutex<Option<[u8; 32]>>,
}

impl PinnedDeviceKey {
    pub fn new(expected: &VerifyingKey) -> Arc<Self> {
        Arc::new(PinnedDeviceKey {
            expected: expected.to_bytes(),
            presented: Mutex::new(None),
        })
    }

    /// The key the device presented, if the handshake got that far.
    pub fn presented(&self) -> Option<[u8; 32]> {
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the handshake failed because the device showed another key.
    pub fn refused_a_key(&self) -> bool {
        self.presented().is_some_and(|k| k != self.expected)
    }
}

impl ServerCertVerifier for PinnedDeviceKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(key) = key_of_spki(end_entity).filter(|_| intermediates.is_empty()) else {
            return Err(TlsError::InvalidCertificate(CertificateError::BadEncoding));
        };
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(key);
        if key != self.expected {
            return Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // Only TLS 1.3 is offered: a 1.2 signature is never legitimate.
        Err(TlsError::General("the link speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The node's TLS client configuration for one device: it presents
/// `node_key` and accepts only `device`'s registered key.
pub fn client_config(
    node_key: &SigningKey,
    device: Arc<PinnedDeviceKey>,
) -> Result<ClientConfig, ChannelError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(device)
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(certified(
            node_key,
        )?)));
    Ok(config)
}

/// The server name the node's TLS client sends.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// The link keys of the cluster's members: the only clients a device
/// serves. Read from a file of hex keys (one per line, `#` comments), and
/// read again whenever the file changes, so adding a node to the cluster
/// needs no device restart.
#[derive(Clone)]
pub struct TrustedNodes {
    inner: Arc<TrustedInner>,
}

struct TrustedInner {
    file: Option<PathBuf>,
    keys: RwLock<(Option<SystemTime>, Vec<[u8; 32]>)>,
}

impl fmt::Debug for TrustedNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedNodes")
            .field("file", &self.inner.file)
            .field("keys", &self.keys().len())
            .finish()
    }
}

impl TrustedNodes {
    /// A fixed list (an in-process device, as `geiger dev` runs one).
    pub fn fixed(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let keys = keys.into_iter().map(|k| k.to_bytes()).collect();
        TrustedNodes {
            inner: Arc::new(TrustedInner {
                file: None,
                keys: RwLock::new((None, keys)),
            }),
        }
    }

    /// Keys from `path`, which must exist and parse now.
    pub fn from_file(path: &Path) -> Result<Self, ChannelError> {
        let trusted = TrustedNodes {
            inner: Arc::new(TrustedInner {
                file: Some(path.to_path_buf()),
                keys: RwLock::new((None, Vec::new())),
            }),
        };
        trusted.refresh()?;
        Ok(trusted)
    }

    /// The keys trusted now.
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .contains(key)
    }

    /// Re-reads the file if it changed. On a bad file the previous list is
    /// kept (an operator's typo must not lock the cluster out or in).
    pub fn refresh(&self) -> Result<(), ChannelError> {
        let Some(path) = &self.inner.file else {
            return Ok(());
        };
        let err = |what: String| ChannelError::TrustedNodes {
            path: path.clone(),
            what,
        };
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| err(e.to_string()))?;
        if self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            == Some(modified)
        {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let keys = parse_trusted(&text).map_err(err)?;
        tracing::info!(file = %path.display(), keys = keys.len(), "trusted node keys loaded");
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = (Some(modified), keys);
        Ok(())
    }
}

/// One hex Ed25519 key per line; blank lines and `#` comments ignored.
pub fn parse_trusted(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bytes: [u8; 32] = hex::decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("line {}: expected 64 hex digits (an Ed25519 key)", n + 1))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format!("line {}: not a valid Ed25519 public key", n + 1))?;
        keys.push(bytes);
    }
    Ok(keys)
}

/// The device side's verifier: the node must present a trusted link key.
/// It remembers the key it refused, for the refusal's log line: the agent
/// builds one per connection, so that key is this connection's.
#[derive(Debug)]
pub struct MemberNodes {
    trusted: TrustedNodes,
    refused: Mutex<Option<[u8; 32]>>,
}

impl MemberNodes {
    pub fn new(trusted: TrustedNodes) -> Arc<Self> {
        Arc::new(MemberNodes {
            trusted,
            refused: Mutex::new(None),
        })
    }

    /// Takes the key refused last (hex), if any.
    pub fn take_refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|k| hex_key(&k))
    }
}

impl ClientCertVerifier for MemberNodes {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let Some(key) = key_of_spki(end_entity).filter(|_| intermediates.is_empty()) else {
            return Err(TlsError::InvalidCertificate(CertificateError::BadEncoding));
        };
        if !self.trusted.contains(&key) {
            *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
            return Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::General("the link speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The device's TLS server configuration: it presents `device_key` and
/// serves only clients whose key `members` trusts.
pub fn server_config(
    device_key: &SigningKey,
    members: Arc<MemberNodes>,
) -> Result<ServerConfig, ChannelError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(members)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(certified(
            device_key,
        )?)));
    // Sessions last hours; resumption would only add state to keep.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_key_round_trips_through_its_spki() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(key_of_spki(&spki(&key)), Some(key.to_bytes()));
        assert_eq!(key_of_spki(&spki(&key)[1..]), None);
    }

    #[test]
    fn the_trusted_list_skips_comments_and_refuses_a_bad_line() {
        let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
        let text = format!(
            "# cluster members\n\n{}  # node 1\n",
            hex::encode(key.as_bytes())
        );
        assert_eq!(parse_trusted(&text).unwrap(), vec![key.to_bytes()]);
        let err = parse_trusted("# ok\nnot-a-key\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn both_configurations_build_from_ed25519_keys() {
        let device = SigningKey::from_bytes(&[1; 32]);
        let node = SigningKey::from_bytes(&[2; 32]);
        let trusted = TrustedNodes::fixed([node.verifying_key()]);
        server_config(&device, MemberNodes::new(trusted)).unwrap();
        client_config(&node, PinnedDeviceKey::new(&device.verifying_key())).unwrap();
    }
}
