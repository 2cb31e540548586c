//! meshrelease: grayscale (canary and blue-green) releases for workloads in a
//! service mesh, served over gRPC and over REST/JSON transcoded from the same
//! proto annotations.

pub mod domain;
pub mod pb;
pub mod store;
