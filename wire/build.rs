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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Well-known types come from pbjson-types (serde included), not prost-types.
        .compile_well_known_types(true)
        // Timestamps and Structs get types of our own (src/wkt.rs): the
        // JSON form of a timestamp must end in `Z` (pbjson-types writes
        // `+00:00`), and a Struct must keep one key order so that the same
        // release is always the same JSON (pbjson-types uses a HashMap).
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf.Struct", "crate::wkt::Struct")
        .extern_path(".google.protobuf.Value", "crate::wkt::Value")
        .extern_path(".google.protobuf.ListValue", "crate::wkt::ListValue")
        .extern_path(".google.protobuf.NullValue", "crate::wkt::NullValue")
        .extern_path(".google.protobuf.FieldMask", "crate::wkt::FieldMask")
        .extern_path(".google.protobuf", "::pbjson_types")
        // A list must show `"items": []` when empty; pbjson omits empty lists.
        .extern_path(".asm.v2.ReleaseList", "crate::list::ReleaseList")
        .compile_fds(file_descriptor_set)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf.Struct", "crate::wkt::Struct")
        .extern_path(".google.protobuf.Value", "crate::wkt::Value")
        .extern_path(".google.protobuf.ListValue", "crate::wkt::ListValue")
        .extern_path(".google.protobuf.NullValue", "crate::wkt::NullValue")
        .extern_path(".google.protobuf.FieldMask", "crate::wkt::FieldMask")
        .extern_path(".asm.v2.ReleaseList", "crate::list::ReleaseList")
        .exclude([".asm.v2.ReleaseList"])
        .build(&[".asm"])?;
    Ok(())
}
