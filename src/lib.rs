//! meshrelease: grayscale (canary and blue-green) releases for workloads in a
//! service mesh, served over gRPC and over REST/JSON transcoded from the same
//! proto annotations.
//!
//! - `domain`: the release rules and operations, protocol-free.
//! - `store`: where releases are kept (SQLite, in memory), behind one trait.
//! - `api`: the gRPC service both protocols call, and the error mapping.
//! - `transcode`: REST routes read from `google.api.http`, turned into RPCs.
//! - `http`: the listener, limits, authentication, request ids, health.
//! - `metrics`: what `/metrics` reports.
//! - `configuration`, `telemetry`, `shutdown`, `startup`: running it.

pub mod api;
pub mod auth;
pub mod configuration;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod pb;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod transcode;
