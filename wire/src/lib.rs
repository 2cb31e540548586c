//! The wire types of the meshrelease API, generated from `proto/` (prost
//! messages, tonic clients and servers, pbjson's proto3 JSON mapping), the
//! well-known types whose JSON form we control, and the encoded descriptor
//! set they came from.
//!
//! Its own crate so that clients (`mrctl`) share these types with the server
//! without linking the server's store.

pub mod list;
pub mod wkt;

#[allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::wildcard_enum_match_arm
)]
pub mod asm {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/asm.v2.rs"));
        include!(concat!(env!("OUT_DIR"), "/asm.v2.serde.rs"));
    }
}

#[allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::wildcard_enum_match_arm
)]
pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// The encoded `FileDescriptorSet` of `proto/` and its imports, with every
/// option (including `google.api.http`) intact.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meshrelease_descriptor.bin"));
