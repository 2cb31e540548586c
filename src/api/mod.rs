//! The gRPC service implementation: the one entry point both protocols call
//! (REST reaches it through `crate::transcode`). Each method unwraps the
//! request, calls the domain, and maps the error; nothing more.

mod audit;
pub mod conversions;
pub mod errors;
pub mod field_mask;
mod release_service;

pub use release_service::{CLIENT_TOKEN, ReleaseApi};
