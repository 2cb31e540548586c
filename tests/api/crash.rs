//! Crash safety: clients create releases while the server binary is killed
//! with SIGKILL at random moments and restarted, again and again. Every
//! create that was answered 200 must be there afterwards, every create that
//! was refused must not be, and SQLite's integrity check must pass.
//!
//! `MESHRELEASE_CRASH_KILLS` sets the number of kills (default 20); see
//! BENCHMARKS.md for the 1,000-kill run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::binary::start;
use crate::helpers::*;

const CLIENTS: usize = 4;

#[derive(Default)]
struct Ledger {
    /// Answered 200: must exist after every restart.
    acknowledged: BTreeSet<String>,
    /// Answered 400: must never exist.
    refused: BTreeSet<String>,
}

/// A small deterministic generator (no dependency for one random number).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

async fn client_loop(base: String, client: usize, round: usize, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{base}/v2/meshes/{MESH}/namespaces/default/releases");
    for i in 0.. {
        let name = format!("crash-{round}-{client}-{i}");
        // Every fifth create is invalid (no clusterID): it must be refused.
        let mut body = release_body(&name, &name);
        let invalid = i % 5 == 4;
        if invalid {
            body["spec"]["clusterID"] = serde_json::Value::Null;
        }
        let Ok(response) = http
            .post(&url)
            .header("X-Auth-Token", TOKEN)
            .json(&body)
            .send()
            .await
        else {
            return; // the server is gone: this create's fate is unknown
        };
        let status = response.status().as_u16();
        let mut ledger = ledger.lock().unwrap();
        match (status, invalid) {
            (200, false) => {
                ledger.acknowledged.insert(name);
            }
            (400, true) => {
                ledger.refused.insert(name);
            }
            other => panic!("unexpected answer {other:?} for {name}"),
        }
    }
}

fn integrity_check(data_dir: &std::path::Path) {
    let conn = rusqlite::Connection::open(data_dir.join("meshrelease.db")).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

async fn status_of(base: &str, name: &str) -> u16 {
    http_client()
        .get(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases/{name}"
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn acknowledged_creates_survive_repeated_sigkills() {
    let kills: usize = std::env::var("MESHRELEASE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // A seed per run, printed so that a failing run can be replayed with
    // MESHRELEASE_CRASH_SEED.
    let seed: u64 = std::env::var("MESHRELEASE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15);
    eprintln!("crash test seed: MESHRELEASE_CRASH_SEED={seed}");
    let mut random = Lcg(seed);
    let mut checked = 0;

    for round in 0..kills {
        let mut server = start(dir.path(), &[]);
        // Everything acknowledged before this restart is still there (the
        // ones not checked yet), and nothing refused is.
        let (acknowledged, refused) = {
            let l = ledger.lock().unwrap();
            (l.acknowledged.clone(), l.refused.clone())
        };
        for name in acknowledged.iter().skip(checked) {
            assert_eq!(status_of(&server.base, name).await, 200, "{name} was lost");
        }
        checked = acknowledged.len();
        for name in refused.iter().rev().take(20) {
            assert_eq!(
                status_of(&server.base, name).await,
                404,
                "{name} was stored"
            );
        }

        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(client_loop(server.base.clone(), c, round, ledger.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + random.next(300))).await;
        server.child.kill().unwrap(); // SIGKILL, mid-request
        server.child.wait().unwrap();
        for client in clients {
            client.await.unwrap();
        }
        integrity_check(dir.path());
    }

    // At the end, every acknowledged create of every round, by listing.
    let mut server = start(dir.path(), &[]);
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut stored = BTreeSet::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("/v2/meshes/{MESH}/namespaces/default/releases?limit=1000");
        if let Some(token) = &next {
            url.push_str(&format!("&continue={token}"));
        }
        let page: serde_json::Value = http_client()
            .get(format!("{}{url}", server.base))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            stored.insert(item["metadata"]["name"].as_str().unwrap().to_owned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) if !token.is_empty() => next = Some(token.to_owned()),
            _ => break,
        }
    }
    let lost: Vec<_> = ledger.acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let leaked: Vec<_> = ledger.refused.intersection(&stored).collect();
    assert!(leaked.is_empty(), "refused but stored: {leaked:?}");
    assert!(
        ledger.acknowledged.len() >= kills,
        "too few creates were acknowledged to mean anything: {}",
        ledger.acknowledged.len()
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    integrity_check(dir.path());
    eprintln!(
        "{kills} kills: {} creates acknowledged and all kept, {} refused and none stored, {} stored in all",
        ledger.acknowledged.len(),
        ledger.refused.len(),
        stored.len()
    );
}
