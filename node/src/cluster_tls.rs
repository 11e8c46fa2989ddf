//! Mutual TLS between members (`[cluster.tls]`): the internal listener's
//! acceptor, the client configuration every call to another member uses,
//! and who a connecting peer is.
//!
//! - **One cluster CA.** Each node's certificate chains to it and carries
//!   the DNS name `node-<id>.geiger.internal` (subject alternative name;
//!   [`geiger_control_plane::raft_network::peer_name`]). A server accepts a
//!   client only with such a certificate ([`verify_peer`]): a certificate
//!   from another CA, or none, fails the handshake; one naming no node ID,
//!   or a node that is not a member now, is refused right after it. The
//!   one exception is a node not yet in any cluster (its membership empty):
//!   it accepts any cluster certificate, which is how a new member is first
//!   reached (bootstrap, or `geiger ctl member add` through the admin API).
//! - **The client checks the server too**: it calls
//!   `https://node-<id>.geiger.internal:<port>`, so rustls accepts only the
//!   certificate of the node it meant to call.
//! - **Files reload without a restart**: [`watch`] polls the CA, the
//!   certificate and the key; a changed set that loads replaces them for
//!   new handshakes (open connections keep theirs), one that does not is
//!   logged and counted and the old one kept. A CA is replaced by first
//!   giving every node a bundle of the old and the new CA, then new
//!   certificates, then the new CA alone (docs/RUNBOOK.md).
//! - **Refusals are visible**: each logs one `warn` line with the reason and
//!   the peer's address, and counts `geiger_peer_tls_refused_total{reason}`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use geiger_control_plane::raft_network::client::PeerTls;
use geiger_control_plane::raft_network::node_id_of_peer_name;
use geiger_control_plane::ControlPlane;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

use crate::config::ClusterTlsSettings;
use crate::listener::tls::{self as api_tls, ServerCertificate, TlsError};
use crate::metrics::NodeMetrics;

/// The `listener` label of the internal listener's TLS metrics.
pub const LISTENER: &str = "internal";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a peer was refused: the `reason` label of
/// `geiger_peer_tls_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// No client certificate was presented.
    NoCertificate,
    /// The certificate does not chain to the cluster CA.
    UnknownCa,
    /// The certificate has expired (or is not valid yet).
    Expired,
    /// Any other handshake failure (protocol, bad signature, timeout).
    Handshake,
    /// The certificate names no `node-<id>.geiger.internal`.
    NoNodeId,
    /// The certificate names a node that is not a member.
    NotAMember,
}

impl PeerRefusal {
    pub const ALL: [PeerRefusal; 6] = [
        PeerRefusal::NoCertificate,
        PeerRefusal::UnknownCa,
        PeerRefusal::Expired,
        PeerRefusal::Handshake,
        PeerRefusal::NoNodeId,
        PeerRefusal::NotAMember,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PeerRefusal::NoCertificate => "no_certificate",
            PeerRefusal::UnknownCa => "unknown_ca",
            PeerRefusal::Expired => "expired",
            PeerRefusal::Handshake => "handshake",
            PeerRefusal::NoNodeId => "no_node_id",
            PeerRefusal::NotAMember => "not_a_member",
        }
    }

    /// What a failed handshake says about the peer.
    pub fn of_handshake_error(error: &std::io::Error) -> Self {
        use rustls::CertificateError as C;
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::NoCertificatesPresented) => PeerRefusal::NoCertificate,
            Some(rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
                PeerRefusal::UnknownCa
            }
            Some(rustls::Error::InvalidCertificate(C::Expired | C::NotValidYet)) => {
                PeerRefusal::Expired
            }
            _ => PeerRefusal::Handshake,
        }
    }
}

/// The node IDs a certificate names (`node-<id>.geiger.internal` DNS
/// names among its subject alternative names).
pub fn node_ids_named(certificate: &CertificateDer<'_>) -> Vec<u64> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(certificate) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => node_id_of_peer_name(dns),
            _ => None,
        })
        .collect()
}

/// Who may connect: is node `id` a member now? A node with no membership
/// yet (not initialised, or about to be added) accepts any cluster node.
pub fn is_member_or_joining(ledger: &ControlPlane, id: u64) -> bool {
    let metrics = ledger.raft().metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    membership.nodes().next().is_none() || membership.get_node(&id).is_some()
}

/// Decides on a peer whose handshake succeeded: the node ID its
/// certificate names, if that node may connect.
pub fn verify_peer(
    certificates: Option<&[CertificateDer<'static>]>,
    is_member: impl Fn(u64) -> bool,
) -> Result<u64, PeerRefusal> {
    let Some(leaf) = certificates.and_then(|c| c.first()) else {
        return Err(PeerRefusal::NoCertificate);
    };
    let ids = node_ids_named(leaf);
    if ids.is_empty() {
        return Err(PeerRefusal::NoNodeId);
    }
    // A certificate names one node; should it name several, every one of
    // them must be a member.
    if ids.iter().all(|id| is_member(*id)) {
        Ok(ids[0])
    } else {
        Err(PeerRefusal::NotAMember)
    }
}

/// The two verifiers built from the cluster CA, replaced together when the
/// CA file changes.
#[derive(Debug)]
struct Verifiers {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
}

#[derive(Debug)]
struct ClusterRoots {
    current: RwLock<Arc<Verifiers>>,
}

impl ClusterRoots {
    fn get(&self) -> Arc<Verifiers> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, verifiers: Verifiers) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(verifiers);
    }
}

fn load_roots(ca_file: &Path) -> Result<Verifiers, TlsError> {
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: ca_file.to_path_buf(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: ca_file.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate)?;
    }
    let roots = Arc::new(roots);
    let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Unparsable {
            path: ca_file.to_path_buf(),
            detail: e.to_string(),
        })?;
    let server = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Unparsable {
            path: ca_file.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok(Verifiers { client, server })
}

/// The server's check of a client certificate, against the CA loaded last.
#[derive(Debug)]
struct PeerClientVerifier(Arc<ClusterRoots>);

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; a node has exactly one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .get()
            .client
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .client
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .client
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().client.supported_verify_schemes()
    }
}

/// The client's check of a server certificate (chain and peer name),
/// against the CA loaded last.
#[derive(Debug)]
struct PeerServerVerifier(Arc<ClusterRoots>);

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.get().server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().server.supported_verify_schemes()
    }
}

/// This node's certificate as the client side presents it.
#[derive(Debug)]
struct ClientCertificate(Arc<ServerCertificate>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Mutual TLS between members: both halves, and what [`watch`] reloads.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: Arc<ServerConfig>,
    pub client: PeerTls,
    certificate: Arc<ServerCertificate>,
    roots: Arc<ClusterRoots>,
    settings: ClusterTlsSettings,
}

impl ClusterTls {
    /// Loads `[cluster.tls]`; fails if a file is unusable or the certificate
    /// does not name this node.
    pub fn start(
        settings: &ClusterTlsSettings,
        node_id: u64,
        metrics: &NodeMetrics,
    ) -> Result<Self, TlsError> {
        let loaded = load_own(settings, node_id)?;
        metrics.tls_certificate_loaded_for(LISTENER, loaded.not_after);
        metrics.peer_tls_refusals_start();
        let roots = Arc::new(ClusterRoots {
            current: RwLock::new(Arc::new(load_roots(&settings.ca_file)?)),
        });
        let certificate = ServerCertificate::new(loaded.key);
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(PeerClientVerifier(roots.clone())))
            .with_cert_resolver(certificate.clone());
        server.alpn_protocols = vec![api_tls::ALPN_HTTP1.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServerVerifier(roots.clone())))
            .with_client_cert_resolver(Arc::new(ClientCertificate(certificate.clone())));
        client.alpn_protocols = vec![api_tls::ALPN_HTTP1.to_vec()];
        tracing::info!(
            cert_file = %settings.cert_file.display(),
            ca_file = %settings.ca_file.display(),
            not_after = loaded.not_after,
            "mutual TLS between members"
        );
        Ok(ClusterTls {
            server: Arc::new(server),
            client: PeerTls {
                config: Arc::new(client),
            },
            certificate,
            roots,
            settings: settings.clone(),
        })
    }
}

/// Loads this node's certificate and checks that it names this node.
fn load_own(
    settings: &ClusterTlsSettings,
    node_id: u64,
) -> Result<api_tls::LoadedCertificate, TlsError> {
    let loaded = api_tls::load(&settings.cert_file, &settings.key_file)?;
    let named = loaded
        .key
        .end_entity_cert()
        .map(node_ids_named)
        .unwrap_or_default();
    if !named.contains(&node_id) {
        return Err(TlsError::Unparsable {
            path: settings.cert_file.clone(),
            detail: format!(
                "it must name {} (it names node IDs {named:?})",
                geiger_control_plane::raft_network::peer_name(node_id)
            ),
        });
    }
    Ok(loaded)
}

/// What the internal listener does with a peer's handshake (see
/// [`crate::listener`]).
pub struct PeerGate {
    pub ledger: ControlPlane,
    pub metrics: Arc<NodeMetrics>,
}

impl PeerGate {
    fn refuse(&self, peer: SocketAddr, refusal: PeerRefusal, detail: &str) {
        self.metrics.peer_tls_refused(refusal.label());
        tracing::warn!(
            %peer,
            reason = refusal.label(),
            detail,
            "peer refused on the internal listener"
        );
    }

    /// A handshake that failed.
    pub fn handshake_failed(&self, peer: SocketAddr, error: &std::io::Error) {
        self.metrics.tls_handshake_for(LISTENER, "error");
        self.refuse(
            peer,
            PeerRefusal::of_handshake_error(error),
            &error.to_string(),
        );
    }

    pub fn handshake_timed_out(&self, peer: SocketAddr) {
        self.metrics.tls_handshake_for(LISTENER, "timeout");
        self.refuse(
            peer,
            PeerRefusal::Handshake,
            "the handshake did not finish in time",
        );
    }

    /// A handshake that succeeded: may this peer go on?
    /// The admitted peer's node ID, or `None` (logged and counted) when it
    /// is refused.
    pub fn admit(&self, peer: SocketAddr, connection: &rustls::ServerConnection) -> Option<u64> {
        match verify_peer(connection.peer_certificates(), |id| {
            is_member_or_joining(&self.ledger, id)
        }) {
            Ok(id) => {
                self.metrics.tls_handshake_for(LISTENER, "ok");
                tracing::debug!(%peer, node = id, "peer admitted");
                Some(id)
            }
            Err(refusal) => {
                self.metrics.tls_handshake_for(LISTENER, "error");
                self.refuse(peer, refusal, "");
                None
            }
        }
    }
}

/// Polls the CA, certificate and key files and loads them again when one
/// changes, until the task is aborted.
pub async fn watch(tls: ClusterTls, node_id: u64, metrics: Arc<NodeMetrics>) {
    let settings = &tls.settings;
    let stamps = || {
        (
            api_tls::stamp(&settings.ca_file),
            api_tls::stamp(&settings.cert_file),
            api_tls::stamp(&settings.key_file),
        )
    };
    let mut seen = stamps();
    let mut ticker = tokio::time::interval(Duration::from_millis(settings.reload_check_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = stamps();
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = load_roots(&settings.ca_file)
            .and_then(|roots| load_own(settings, node_id).map(|own| (roots, own)));
        match loaded {
            Ok((roots, own)) => {
                tls.roots.replace(roots);
                tls.certificate.replace(own.key);
                metrics.tls_certificate_loaded_for(LISTENER, own.not_after);
                metrics.tls_reload_for(LISTENER, true);
                tracing::info!(
                    cert_file = %settings.cert_file.display(),
                    not_after = own.not_after,
                    "cluster CA and certificate reloaded"
                );
            }
            Err(e) => {
                metrics.tls_reload_for(LISTENER, false);
                tracing::error!(
                    error = %e,
                    "the changed cluster CA, certificate or key does not load; keeping those in use"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_naming(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_naming_a_member_is_admitted_as_that_node() {
        let cert = certificate_naming(&["node-3.geiger.internal"]);
        assert_eq!(verify_peer(Some(&[cert]), |id| id == 3), Ok(3));
    }

    #[test]
    fn a_certificate_naming_a_node_that_is_not_a_member_is_refused() {
        let cert = certificate_naming(&["node-9.geiger.internal"]);
        assert_eq!(
            verify_peer(Some(&[cert]), |id| id == 3),
            Err(PeerRefusal::NotAMember)
        );
    }

    #[test]
    fn a_certificate_naming_no_node_or_no_certificate_is_refused() {
        let cert = certificate_naming(&["example.com", "node-03.geiger.internal"]);
        assert_eq!(
            verify_peer(Some(&[cert]), |_| true),
            Err(PeerRefusal::NoNodeId)
        );
        assert_eq!(verify_peer(None, |_| true), Err(PeerRefusal::NoCertificate));
    }

    #[test]
    fn a_certificate_naming_a_member_and_a_stranger_is_refused() {
        let cert = certificate_naming(&["node-3.geiger.internal", "node-9.geiger.internal"]);
        assert_eq!(
            verify_peer(Some(&[cert]), |id| id == 3),
            Err(PeerRefusal::NotAMember)
        );
    }
}
