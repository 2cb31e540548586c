//! The release operations of the domain core, without a protocol, a server
//! or SQL: the `ReleaseManager` over the in-memory store, as both protocols
//! call it. The API suite checks the same rules through gRPC and REST; these
//! tests pin them where they are decided, and build and run in seconds (the
//! mutation runs of docs/testing.md use them).

#![allow(unreachable_pub)]

mod layers;
mod metric_checks;
mod progress;
mod races;
mod service;
mod status;
mod support;
