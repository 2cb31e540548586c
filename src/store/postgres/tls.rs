//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` say, on the
//! same rustls (with ring) as the listener.
//!
//! | `sslmode`           | encrypted            | the server's certificate          |
//! |---------------------|----------------------|-----------------------------------|
//! | `disable`           | no                   | -                                 |
//! | `prefer` (default)  | if the server can    | not checked (`sslrootcert`: chain) |
//! | `require`           | yes                  | not checked (`sslrootcert`: chain) |
//! | `verify-ca`         | yes                  | chain to `sslrootcert`            |
//! | `verify-full`       | yes                  | chain to `sslrootcert`, and the host name |
//!
//! tokio-postgres knows the first three modes only and no `sslrootcert`:
//! both are taken out of the URL here and carried out by the connector.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`, as libpq reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How to reach the database: the connection settings and the TLS
/// connector they need.
pub(crate) struct Connection {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
}

/// Reads a PostgreSQL URL (or `key=value` string) with libpq's `sslmode`
/// and `sslrootcert`; the CA file is read now, so a bad one is found at
/// start (and by `--check-config`).
pub(crate) fn connection(url: &str) -> Result<Connection, String> {
    let (rest, mode, root) = take_tls_settings(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!("not a PostgreSQL URL such as postgres://user@127.0.0.1:5432/db ({e})")
    })?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root) {
        (Mode::VerifyFull, Some(root)) => webpki(&root)?,
        (Mode::VerifyCa, Some(root)) | (Mode::Prefer | Mode::Require, Some(root)) => {
            Arc::new(ChainOnly(webpki(&root)?))
        }
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert=<the CA's PEM file> in the URL",
                if mode == Mode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ));
        }
        // `disable` never uses the connector.
        (Mode::Disable, _) | (Mode::Prefer | Mode::Require, None) => {
            Arc::new(Unchecked(crate::http::tls::provider()))
        }
    };
    let client = ClientConfig::builder_with_provider(crate::http::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Connection {
        config,
        tls: MakeRustlsConnect::new(client),
    })
}

/// The URL without `sslmode` and `sslrootcert`, and their values.
fn take_tls_settings(url: &str) -> Result<(String, Mode, Option<String>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode: must be disable, prefer, require, verify-ca or verify-full, got {other:?}"
                        ));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(value.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = form_urlencoded::parse(pair.as_bytes())
                        .next()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .unwrap_or_default();
                    if !take(&key, &value)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, value.trim_matches('\''))? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode.unwrap_or(Mode::Prefer), root))
}

/// Certificates chaining to the CAs of the PEM file at `path`, for the
/// host name connected to.
fn webpki(path: &str) -> Result<Arc<WebPkiServerVerifier>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert: {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem) {
        let ca = ca.map_err(|e| format!("sslrootcert: {path}: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("sslrootcert: {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert: {path}: no PEM certificate in it"));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::http::tls::provider())
        .build()
        .map_err(|e| format!("sslrootcert: {path}: {e}"))
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`, as in libpq: encrypted,
/// but anyone's certificate is taken (the handshake's signatures are still
/// checked). Only `verify-full` defends against an active attacker.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_either_form() {
        let (rest, mode, root) = take_tls_settings(
            "postgres://u@db.example:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db.example:5432/app?application_name=x");
        assert_eq!(mode, Mode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) =
            take_tls_settings("host=db.example user=u sslmode=require dbname=app").unwrap();
        assert_eq!(rest, "host=db.example user=u dbname=app");
        assert_eq!((mode, root), (Mode::Require, None));

        let (rest, mode, _) = take_tls_settings("postgres://u@h/app").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/app", Mode::Prefer));
    }

    #[test]
    fn a_mode_that_needs_a_ca_says_so_and_an_unknown_mode_is_named() {
        let err = connection("postgres://u@h/app?sslmode=verify-full")
            .err()
            .unwrap();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = connection("postgres://u@h/app?sslmode=allow")
            .err()
            .unwrap();
        assert!(
            err.contains("sslmode") && err.contains("\"allow\""),
            "{err}"
        );
        let err =
            connection("postgres://u@h/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
                .err()
                .unwrap();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
