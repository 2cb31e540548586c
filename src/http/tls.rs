//! TLS on the listener: rustls (with ring), ALPN `h2` and `http/1.1`, and
//! optionally client certificates (mutual TLS). The server configuration
//! is read from files at start and again on each reload; a connection takes
//! the configuration current when it arrives, so new certificates apply to
//! new connections and open ones are not cut.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The listener's certificate files, as configured (read at start and on
/// each reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are required, issued by these CAs.
    pub client_ca: Option<PathBuf>,
}

/// The crypto every TLS configuration of this service uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration `files` make, or what is wrong with them,
/// naming the key and the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(&files.cert).map_err(|e| format!("tls_cert_file: {e}"))?;
    let key = crate::secrets::read_secret_file(&files.key)
        .and_then(|pem| {
            PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("{}: no PEM private key ({e})", files.key.display()))
        })
        .map_err(|e| format!("tls_key_file: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(path).map_err(|e| format!("tls_client_ca_file: {e}"))? {
                roots
                    .add(ca)
                    .map_err(|e| format!("tls_client_ca_file: {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("tls_client_ca_file: {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_cert_file and tls_key_file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The PEM certificates of `path`, at least one.
fn certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(chain)
}

/// The server configuration in use, replaced by a reload.
pub struct Tls {
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        Ok(Tls {
            current: ArcSwap::new(server_config(files)?),
        })
    }

    /// What a new connection's handshake uses.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Takes the configuration a reload read.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }
}
