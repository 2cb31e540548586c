//! The wire types generated from `proto/` (prost, tonic and pbjson), and the
//! encoded descriptor set they came from.

#![allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::wildcard_enum_match_arm
)]

pub mod list;
pub mod wkt;

pub mod asm {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/asm.v2.rs"));
        include!(concat!(env!("OUT_DIR"), "/asm.v2.serde.rs"));
    }
}

pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// The encoded `FileDescriptorSet` of `proto/` and its imports, with every
/// option (including `google.api.http`) intact.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meshrelease_descriptor.bin"));
