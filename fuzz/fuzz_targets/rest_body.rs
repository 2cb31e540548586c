//! REST JSON bodies through the transcoder (depth check, parse, request
//! assembly, proto3 JSON decoding) and validation, as dry runs so that the
//! store does not grow.

#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let h = harness::harness();
    for uri in [
        "/v2/meshes/demo-mesh/namespaces/default/releases?dryRun=true",
        "/v2/meshes/demo-mesh/namespaces/default/releases/reviews-canary?dryRun=true",
    ] {
        let method = if uri.contains("canary") {
            http::Method::PUT
        } else {
            http::Method::POST
        };
        if let Some(response) = h.rest(method, uri, body.to_vec()) {
            harness::assert_no_fault(&response);
        }
    }
});
