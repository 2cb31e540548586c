//! CORS, for browsers whose pages come from another origin (a console
//! served elsewhere, a gRPC-Web client): off unless `cors_allowed_origins`
//! names origins. A preflight is answered here, before authentication (it
//! carries no token); the headers gRPC-Web and the REST API need are
//! allowed, and those a client must read (the gRPC status, the request id)
//! are exposed. Credentials are never allowed: the service authenticates by
//! header, not by cookie, so no origin ever gets a browser's credentials.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::auth::TOKEN_HEADER;
use crate::auth::signature::{DATE_HEADER, NONCE_HEADER};

/// `cors_allowed_origins`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: browsers on other origins are refused by the browser.
    Off,
    /// `*`: any origin (never with credentials).
    Any,
    /// These origins, each `scheme://host[:port]`, exactly.
    List(Vec<String>),
}

/// Request headers a browser may send: the token, gRPC-Web's, JSON's, and
/// AK/SK signing's.
const ALLOWED: &[&str] = &[
    TOKEN_HEADER,
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "x-request-id",
    "authorization",
    DATE_HEADER,
    NONCE_HEADER,
];

/// Response headers a browser's script may read.
const EXPOSED: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "retry-after",
];

/// How long a browser may cache a preflight's answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer, or none when CORS is off.
pub fn layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow_origin = match origins {
        CorsOrigins::Off => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        // Checked when the configuration was read.
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(AllowHeaders::list(
                ALLOWED.iter().map(|h| HeaderName::from_static(h)),
            ))
            .expose_headers(ExposeHeaders::list(
                EXPOSED.iter().map(|h| HeaderName::from_static(h)),
            ))
            .max_age(MAX_AGE),
    )
}
