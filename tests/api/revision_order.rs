//! Watchers on two PostgreSQL replicas see every change in revision order,
//! none skipped, while writers on both commit in parallel (run when
//! MESHRELEASE_TEST_DATABASE_URL is set; said to be skipped otherwise).
//!
//! Writers commit out of revision order all the time here (32 creates in
//! flight over two replicas of 8 connections each), so a watcher that read
//! past a revision still in flight would miss it for good; the test waits
//! for every acknowledged revision and names any one a watcher missed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use meshrelease::pb::asm::v2 as pb;
use meshrelease::store::PostgresStore;

use crate::helpers::*;

const ROUNDS: usize = 12;
const CREATES_PER_ROUND: usize = 200;
/// Watchers that stay on each replica for the whole test.
const STAYING: usize = 3;
const IN_FLIGHT: usize = 32;

/// What one watcher saw: the revisions of its events, in arrival order.
#[derive(Default)]
struct Seen(Mutex<Vec<u64>>);

impl Seen {
    fn revisions(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
    fn last(&self) -> Option<u64> {
        self.0.lock().unwrap().last().copied()
    }
}

/// Watches `app` from `from` (the current releases first when empty),
/// recording every event until the stream ends or the task is aborted.
async fn follow(app: &TestApp, from: String, seen: Arc<Seen>) -> tokio::task::JoinHandle<()> {
    let mut events = app
        .grpc()
        .await
        .watch_releases(authed(pb::WatchReleasesRequest {
            mesh_id: MESH.into(),
            namespace: String::new(),
            resource_version: from,
        }))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            seen.0
                .lock()
                .unwrap()
                .push(event.resource_version.parse().unwrap());
        }
    })
}

async fn create(app: &TestApp, name: &str) -> u64 {
    let created = app
        .grpc()
        .await
        .create_release(authed(grpc_request(name, name)))
        .await
        .unwrap()
        .into_inner();
    created.metadata.unwrap().resource_version.parse().unwrap()
}

async fn store_on(url: &str) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect(url, None, 8).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn watchers_on_two_replicas_see_every_revision_in_order_while_writers_race() {
    let Some((url, _schema)) = fresh_schema().await else {
        return;
    };
    let (a, b) = (
        spawn_app_on(store_on(&url).await).await,
        spawn_app_on(store_on(&url).await).await,
    );
    let apps = [&a, &b];
    // Watchers on each replica for the whole test; one more moves to the
    // other replica every round, resuming after the last revision it saw.
    let mut staying = Vec::new();
    let mut watches = Vec::new();
    for (who, app) in [("A's", &a), ("B's", &b)] {
        for _ in 0..STAYING {
            let seen = Arc::new(Seen::default());
            watches.push(follow(app, String::new(), seen.clone()).await);
            staying.push((who, seen));
        }
    }
    let moving = Arc::new(Seen::default());
    let mut moving_watch = follow(&b, String::new(), moving.clone()).await;

    let mut written = BTreeSet::new();
    for round in 0..ROUNDS {
        let clients = [a.grpc().await, b.grpc().await];
        let creates = futures_util::stream::iter(0..CREATES_PER_ROUND)
            .map(|i| {
                let mut client = clients[i % 2].clone();
                async move {
                    let name = format!("r{round}-{i}");
                    let created = client
                        .create_release(authed(grpc_request(&name, &name)))
                        .await
                        .unwrap()
                        .into_inner();
                    created
                        .metadata
                        .unwrap()
                        .resource_version
                        .parse::<u64>()
                        .unwrap()
                }
            })
            .buffer_unordered(IN_FLIGHT);
        // A watcher that starts while the creates are in flight: the
        // releases as they are, then every change after, each once.
        let joining = Arc::new(Seen::default());
        let mut joined = None;
        let (revisions, ()): (Vec<u64>, ()) = tokio::join!(creates.collect(), async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            joined = Some(follow(apps[(round + 1) % 2], String::new(), joining.clone()).await);
        });
        assert_eq!(
            revisions.iter().collect::<BTreeSet<_>>().len(),
            revisions.len(),
            "two creates were given one revision"
        );
        written.extend(revisions);

        // The moving watcher resumes on the other replica.
        moving_watch.abort();
        let _ = (&mut moving_watch).await;
        let from = moving.last().map(|r| r.to_string()).unwrap_or_default();
        moving_watch = follow(apps[round % 2], from, moving.clone()).await;

        let expected: Vec<u64> = written.iter().copied().collect();
        let watchers = staying
            .iter()
            .map(|(who, seen)| (*who, seen))
            .chain([("the moving watcher's", &moving)]);
        for (who, seen) in watchers {
            let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
                while seen.revisions().len() < expected.len() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            let got = seen.revisions();
            let missing: Vec<_> = written
                .iter()
                .filter(|r| !got.contains(r))
                .take(5)
                .collect();
            assert!(
                caught_up.is_ok() && got == expected,
                "round {round}: a watcher on {who} replica saw {} events for {} writes; \
                 missing (first 5): {missing:?}; in order: {}",
                got.len(),
                expected.len(),
                got.windows(2).all(|w| w[0] < w[1]),
            );
        }
        let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
            while joining.revisions().len() < expected.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if let Some(joined) = joined {
            joined.abort();
        }
        // Its first events (the releases as they were) come in creation
        // order, not revision order: compare as sets, and count.
        let mut got = joining.revisions();
        let received = got.len();
        got.sort_unstable();
        got.dedup();
        assert!(
            caught_up.is_ok() && received == expected.len() && got == expected,
            "round {round}: a watcher joining mid-round received {received} events \
             ({} distinct) for {} writes",
            got.len(),
            expected.len()
        );
    }
    moving_watch.abort();
    for watch in watches {
        watch.abort();
    }
    a.stop().await;
    b.stop().await;
}

/// A writer that began before others and commits after them: watchers wait
/// for it and then see its change first; a watch that starts meanwhile
/// lists what has committed and does not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn a_change_committed_late_is_seen_first_and_never_twice() {
    let Some((url, _schema)) = fresh_schema().await else {
        return;
    };
    let (a, b) = (
        spawn_app_on(store_on(&url).await).await,
        spawn_app_on(store_on(&url).await).await,
    );
    let early = Arc::new(Seen::default());
    let early_watch = follow(&a, String::new(), early.clone()).await;
    let first = create(&a, "first").await;

    // The slow writer: a change of "first" in a transaction left open.
    let (slow, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    slow.batch_execute("BEGIN").await.unwrap();
    let late: i64 = slow
        .query_one(
            "INSERT INTO events (revision, mesh_id, namespace, type, body)
             SELECT pg_current_xact_id()::text::bigint + (SELECT revision_offset FROM change_log),
                    mesh_id, namespace, 'MODIFIED', body
             FROM events WHERE revision = $1
             RETURNING revision",
            &[&(first as i64)],
        )
        .await
        .unwrap()
        .get(0);
    let second = create(&b, "second").await;
    let third = create(&a, "third").await;
    assert!(first < late as u64 && (late as u64) < second && second < third);

    // Committed, but behind the open transaction: nobody is shown them yet
    // (a wrong store shows them at once; waiting longer proves nothing more).
    let joining = Arc::new(Seen::default());
    let joining_watch = follow(&b, String::new(), joining.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(early.revisions(), [first], "shown past a change in flight");
    let mut listed = joining.revisions();
    listed.sort_unstable();
    assert_eq!(listed, [first, second, third], "the joining watch's list");

    slow.batch_execute("COMMIT").await.unwrap();
    let all = [first, late as u64, second, third];
    let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
        while early.revisions().len() < all.len() || joining.revisions().len() < all.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Give a duplicate the time to arrive, if one were coming.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(caught_up.is_ok(), "the late change never came");
    assert_eq!(
        early.revisions(),
        all,
        "in revision order, the late one first"
    );
    let joined = joining.revisions();
    assert_eq!(
        joined[3..],
        [late as u64],
        "after its list, the joining watch gets only the late change"
    );
    early_watch.abort();
    joining_watch.abort();
    a.stop().await;
    b.stop().await;
}
