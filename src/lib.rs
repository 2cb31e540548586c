//! meshrelease: grayscale (canary and blue-green) releases for workloads in a
//! service mesh, served over gRPC and over REST/JSON transcoded from the same
//! proto annotations.
//!
//! - `domain`: the release rules and operations, protocol-free: validation,
//!   the traffic policy, the phase machine, the planner of cluster objects,
//!   and the ports it needs (`domain::ports`).
//! - `driver`: the clusters through kube-rs, and the loop that drives
//!   releases there.
//! - `store`: the store port's backends (SQLite, PostgreSQL, in memory).
//! - `api`: the gRPC service both protocols call, field masks, and the one
//!   error mapping.
//! - `transcode`: REST routes read from `google.api.http`, turned into RPCs.
//! - `http`: the listener, limits, authentication, request ids, health.
//! - `auth`: tokens, AK/SK signatures, rate limits.
//! - `pb`: the generated wire types (the `meshrelease-wire` crate, which
//!   clients such as `mrctl` share).
//! - `metrics`: what `/metrics` reports.
//! - `configuration`, `telemetry`, `shutdown`, `startup`: running it.

/// The version, with the commit built and its date, as `--version`, the
/// start-up log and `meshrelease_build_info` say.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MESHRELEASE_COMMIT"),
    ", ",
    env!("MESHRELEASE_COMMIT_DATE"),
    ")"
);

pub mod api;
pub mod auth;
pub mod configuration;
pub mod console;
pub mod domain;
pub mod driver;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod secrets;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod transcode;

pub use meshrelease_wire as pb;
