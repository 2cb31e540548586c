//! What the fuzz targets share: the real transcoder and service over an
//! in-memory store, called as the HTTP layer calls them (after
//! authentication), on one current-thread runtime.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use meshrelease::api::ReleaseApi;
use meshrelease::domain::{Effect, Mesh, Meshes, Principal, ReleaseManager, Statement};
use meshrelease::store::MemoryStore;
use meshrelease::transcode::{RouteTable, Transcoder, release_service_methods, transcode};

pub struct Harness {
    runtime: tokio::runtime::Runtime,
    transcoder: Transcoder,
    pub api: Arc<ReleaseApi>,
    pub manager: Arc<ReleaseManager>,
    pub principal: Principal,
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let meshes = Meshes::new([Mesh {
            id: "demo-mesh".into(),
            clusters: vec!["cluster-a".into(), "cluster-b".into()],
            enterprise_project_id: "0".into(),
            tags: Default::default(),
            ..Mesh::default()
        }]);
        let manager = Arc::new(ReleaseManager::new(meshes, Arc::new(MemoryStore::new())));
        let api = Arc::new(ReleaseApi::new(manager.clone()));
        let table = RouteTable::from_descriptor_set(
            meshrelease::pb::FILE_DESCRIPTOR_SET,
            release_service_methods(api.clone()),
        )
        .expect("the route table builds");
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            transcoder: Transcoder {
                table: Arc::new(table),
                max_body_bytes: 4 * 1024 * 1024,
            },
            api,
            manager,
            principal: Principal {
                subject: "fuzzer".into(),
                statements: vec![Statement {
                    effect: Effect::Allow,
                    actions: None,
                    meshes: None,
                    conditions: vec![],
                }],
            },
        }
    })
}

impl Harness {
    /// A REST request as the authentication layer passes it on.
    pub fn rest(&self, method: http::Method, uri: &str, body: Vec<u8>) -> Option<Response> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .ok()?;
        request.extensions_mut().insert(self.principal.clone());
        Some(
            self.runtime
                .block_on(transcode(State(self.transcoder.clone()), request)),
        )
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// Every answer is a success or one of the contract's client errors: a 500
/// means bad input reached a fault.
pub fn assert_no_fault(response: &Response) {
    assert!(
        response.status().as_u16() < 500,
        "bad input caused {}",
        response.status()
    );
}
