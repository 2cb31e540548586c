//! PATCH: a field mask (the input's first line, comma-separated, as
//! `?updateMask=` carries it; none when empty) and a body (the rest) against
//! a running release, as dry runs, over REST and gRPC. Traffic policies with
//! arbitrary regexes land here: their size and compile cost are bounded, and
//! nothing may answer a 500 or INTERNAL.

#![no_main]

#[path = "harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshrelease::domain::phase::Move;
use meshrelease::domain::{ReleaseRef, StatusUpdate};
use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_server::ReleaseService;

const URI: &str = "/v2/meshes/demo-mesh/namespaces/default/releases/patch-target";

/// A release in Running, made once.
fn running(h: &harness::Harness) {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/seeds/rest_body/release.json"
        ))
        .expect("the seed release");
        let body = String::from_utf8_lossy(&body)
            .replace("reviews-canary", "patch-target")
            .into_bytes();
        let created = h
            .rest(
                http::Method::POST,
                "/v2/meshes/demo-mesh/namespaces/default/releases",
                body,
            )
            .expect("a request");
        assert_eq!(created.status(), 200);
        let target = ReleaseRef {
            mesh_id: "demo-mesh".into(),
            namespace: "default".into(),
            name: "patch-target".into(),
        };
        for step in [Move::StartDeploying, Move::GrayReady] {
            let current = h.block_on(h.manager.read(&target)).expect("stored");
            h.block_on(h.manager.write_status(
                &target,
                current.resource_version,
                StatusUpdate {
                    step: Some(step),
                    ..StatusUpdate::default()
                },
            ))
            .expect("driven");
        }
    });
}

fuzz_target!(|input: &[u8]| {
    let h = harness::harness();
    running(h);
    let text = String::from_utf8_lossy(input);
    let (mask, body) = text.split_once('\n').unwrap_or(("", &text));
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("dryRun", "true")
        .append_pair("updateMask", mask)
        .finish();
    for uri in [format!("{URI}?dryRun=true"), format!("{URI}?{query}")] {
        if let Some(response) = h.rest(http::Method::PATCH, &uri, body.as_bytes().to_vec()) {
            harness::assert_no_fault(&response);
        }
    }
    if let Ok(release) = serde_json::from_str::<pb::Release>(body) {
        let mut request = tonic::Request::new(pb::PatchReleaseRequest {
            mesh_id: "demo-mesh".into(),
            namespace: "default".into(),
            name: "patch-target".into(),
            release: Some(release),
            update_mask: Some(meshrelease::pb::wkt::FieldMask {
                paths: mask.split(',').map(str::to_owned).collect(),
            }),
            dry_run: true,
        });
        request.extensions_mut().insert(h.principal.clone());
        if let Err(status) = h.block_on(h.api.patch_release(request)) {
            assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
        }
    }
});
