//! Protobuf bytes decoded as the gRPC requests, then through the service's
//! conversions and validation (as dry runs).

#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;
use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_server::ReleaseService;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let h = harness::harness();
    if let Ok(mut request) = pb::CreateReleaseRequest::decode(bytes) {
        request.dry_run = true;
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(h.principal.clone());
        if let Err(status) = h.block_on(h.api.create_release(request)) {
            assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
        }
    }
    if let Ok(mut request) = pb::UpdateReleaseRequest::decode(bytes) {
        request.dry_run = true;
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(h.principal.clone());
        if let Err(status) = h.block_on(h.api.update_release(request)) {
            assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
        }
    }
});
