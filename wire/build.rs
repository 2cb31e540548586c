//! Compiles `../proto/` without a system protoc (protox), then generates:
//! - prost messages and tonic clients and services (`asm.v2.rs`),
//! - proto3 JSON serde impls with pbjson (`asm.v2.serde.rs`),
//! - the encoded descriptor set, kept whole so that the `google.api.http`
//!   options survive for reflection and for the server's route table (its
//!   path reaches the server's build script as `DEP_MESHRELEASE_WIRE_DESCRIPTOR`).

use std::path::PathBuf;

use prost::Message as _;

const PROTO_ROOT: &str = "../proto";
const PROTO_FILES: &[&str] = &["asm/v2/release.proto", "google/rpc/error_details.proto"];
const DESCRIPTOR_FILE: &str = "meshrelease_descriptor.bin";

/// Messages whose Rust types are written by hand, for prost and pbjson alike.
/// Timestamps and Structs (src/wkt.rs): the JSON form of a timestamp must
/// end in `Z` (pbjson-types writes `+00:00`), and a Struct must keep one key
/// order so that the same release is always the same JSON (pbjson-types uses
/// a HashMap). A list (src/list.rs) must show `"items": []` when empty;
/// pbjson omits empty lists.
const HAND_WRITTEN: &[(&str, &str)] = &[
    (".google.protobuf.Timestamp", "crate::wkt::Timestamp"),
    (".google.protobuf.Struct", "crate::wkt::Struct"),
    (".google.protobuf.Value", "crate::wkt::Value"),
    (".google.protobuf.ListValue", "crate::wkt::ListValue"),
    (".google.protobuf.NullValue", "crate::wkt::NullValue"),
    (".google.protobuf.FieldMask", "crate::wkt::FieldMask"),
    (".asm.v2.ReleaseList", "crate::list::ReleaseList"),
    (".asm.v2.ReleaseCheckList", "crate::list::ReleaseCheckList"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true);
    compiler.include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    let encoded = compiler.encode_file_descriptor_set();
    let descriptor = out_dir.join(DESCRIPTOR_FILE);
    std::fs::write(&descriptor, &encoded)?;
    println!("cargo:descriptor={}", descriptor.display());

    let file_descriptor_set = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    let mut tonic = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Well-known types come from pbjson-types (serde included), not prost-types.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types");
    for (proto, rust) in HAND_WRITTEN {
        tonic = tonic.extern_path(*proto, *rust);
    }
    tonic.compile_fds(file_descriptor_set)?;

    let mut pbjson = pbjson_build::Builder::new();
    pbjson.register_descriptors(&encoded)?;
    for (proto, rust) in HAND_WRITTEN {
        pbjson.extern_path(*proto, *rust);
    }
    pbjson
        .exclude([".asm.v2.ReleaseList", ".asm.v2.ReleaseCheckList"])
        .build(&[".asm"])?;
    Ok(())
}
