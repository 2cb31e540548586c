//! The listener's TLS files and CORS origins, checked.

use figment::value::magic::RelativePathBuf;

use super::{ConfigError, fail};
use crate::http::cors::CorsOrigins;
use crate::http::tls::TlsFiles;

/// `tls_cert_file`, `tls_key_file` and `tls_client_ca_file`: the first two
/// together, the third only with them; and the files must make a server
/// configuration now (so that `--check-config` and a reload catch a bad one).
pub(super) fn validate_tls(
    cert: Option<RelativePathBuf>,
    key: Option<RelativePathBuf>,
    client_ca: Option<RelativePathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let files = match (cert, key) {
        (None, None) => {
            if client_ca.is_some() {
                return fail("tls_client_ca_file: needs tls_cert_file and tls_key_file");
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.relative(),
            key: key.relative(),
            client_ca: client_ca.map(|c| c.relative()),
        },
        (Some(_), None) => return fail("tls_key_file: is required with tls_cert_file"),
        (None, Some(_)) => return fail("tls_cert_file: is required with tls_key_file"),
    };
    crate::http::tls::server_config(&files).map_err(ConfigError)?;
    Ok(Some(files))
}

pub(super) fn validate_cors(origins: Vec<String>) -> Result<CorsOrigins, ConfigError> {
    if origins.is_empty() {
        return Ok(CorsOrigins::Off);
    }
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return fail("cors_allowed_origins: \"*\" allows every origin; list it alone");
        }
        return Ok(CorsOrigins::Any);
    }
    for (i, origin) in origins.iter().enumerate() {
        let uri = origin.parse::<http::Uri>().ok();
        let well_formed = uri.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.host().is_empty())
                && uri.path_and_query().is_none_or(|pq| pq.as_str() == "/")
                && !origin.ends_with('/')
        });
        if !well_formed || http::HeaderValue::from_str(origin).is_err() {
            return fail(format!(
                "cors_allowed_origins[{i}]: {origin:?} is not an origin: write scheme://host[:port], as browsers send it (no path, no trailing slash), or \"*\""
            ));
        }
    }
    Ok(CorsOrigins::List(origins))
}
