//! Watch caches: what the driver reads of a cluster, kept current by
//! watches instead of asked for again each round (client-go's informers,
//! kube-runtime's reflector). One cache per cluster, kind and namespace
//! with an active release: started by the first read of it, stopped when
//! the driver says no active release needs it any more
//! ([`Caches::retain`]). Each cache lists once, then watches; a watch that
//! fails or falls behind (410) lists again, and the fresh list replaces the
//! whole cache, so no change is lost. Each change is news for the driver
//! ([`ClusterChange`]), naming what it touched.
//!
//! Objects are kept without what the driver never reads: the field sets of
//! `managedFields` (the managers' names stay: they say who owns an object)
//! and kubectl's last-applied annotation; and as their JSON text, with the
//! routing indexed by the services it names (`held.rs`).
//!
//! A read that must not miss an object made before a moment (a release's
//! routing, read to decide that something is absent) asks for a list sent
//! after that moment: the list is merged into the cache, and readers that
//! wait for it share it ([`Cache::listed_since`], [`Caches::merge`]).
//!
//! A cache that has not listed yet, or whose watch failed and has not
//! listed again, is not read: the caller reads the cluster itself, which
//! also tells it whether the cluster answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::held::{Held, hosts_in, version_of};
use crate::domain::istio::names_service;
use crate::domain::object::JsonObject;
use crate::domain::plan::RELEASE_UID_ANNOTATION;
use crate::domain::ports::ClusterChange;
use crate::metrics::DriverMetrics;

use super::throttle::Throttle;

/// News kept for a driver that is slow to read it; beyond this it hears
/// "anything may have changed" and looks at every release.
const NEWS_BUFFER: usize = 16_384;
/// The first wait before listing again after a failed watch, doubled up
/// to [`MAX_RETRY`] while it keeps failing.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// (cluster, API version, plural, namespace)
pub(super) type CacheKey = (String, String, String, String);

pub(super) struct Caches {
    all: std::sync::Mutex<HashMap<CacheKey, Arc<Cache>>>,
    news: News,
    metrics: DriverMetrics,
}

/// Where the caches tell their news, numbered in the order told. Each
/// change is in its cache before it is numbered, so a read of the caches
/// that begins once `told` has reached a number holds every change up to
/// it (`ClusterPort::told`).
#[derive(Clone)]
struct News {
    sender: tokio::sync::broadcast::Sender<ClusterChange>,
    told: Arc<AtomicU64>,
}

/// One kind's objects in one namespace of one cluster.
pub(super) struct Cache {
    objects: RwLock<Held>,
    /// When the last list merged by [`Caches::merge`] was sent: the cache
    /// holds all it held, and what the watch brought since.
    listed_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Held while such a list is read, so that readers waiting for one
    /// share it.
    pub(super) listing: tokio::sync::Mutex<()>,
    /// Whether the objects are current (listed, and the watch since then
    /// unbroken).
    current: tokio::sync::watch::Sender<Health>,
    _stop: DropGuard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// Listing for the first time.
    Listing,
    Current,
    /// The watch failed; listing again.
    Broken,
}

impl Caches {
    pub(super) fn new(metrics: DriverMetrics) -> Self {
        Caches {
            all: std::sync::Mutex::default(),
            news: News {
                sender: tokio::sync::broadcast::channel(NEWS_BUFFER).0,
                told: Arc::default(),
            },
            metrics,
        }
    }

    pub(super) fn news(&self) -> tokio::sync::broadcast::Receiver<ClusterChange> {
        self.news.sender.subscribe()
    }

    /// How many news were told so far.
    pub(super) fn told(&self) -> u64 {
        self.news.told.load(Ordering::SeqCst)
    }

    /// The cache of `key`, started now (over `client`) if there is none.
    /// Waits up to `wait` for its first list.
    pub(super) async fn cache(
        &self,
        key: &CacheKey,
        (client, throttle): (&kube::Client, &Arc<Throttle>),
        resource: &ApiResource,
        wait: Duration,
    ) -> Option<Arc<Cache>> {
        let cache = {
            let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
            let cache = all
                .entry(key.clone())
                .or_insert_with(|| self.start(key, client, throttle, resource))
                .clone();
            self.count(all.len());
            cache
        };
        let mut current = cache.current.subscribe();
        let listed = tokio::time::timeout(wait, current.wait_for(|h| *h != Health::Listing)).await;
        let current = matches!(listed, Ok(Ok(h)) if *h == Health::Current);
        current.then_some(cache)
    }

    /// The cache of `key` if it is running and current, without starting one.
    pub(super) fn current(&self, key: &CacheKey) -> Option<Arc<Cache>> {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.get(key)
            .filter(|c| *c.current.borrow() == Health::Current)
            .cloned()
    }

    /// Merges into `cache` (of `key`) a list of its objects sent at
    /// `sent_at`, at the list's resourceVersion `version`: what the cache
    /// missed is news.
    pub(super) fn merge(
        &self,
        key: &CacheKey,
        cache: &Cache,
        listed: Vec<JsonObject>,
        version: Option<u64>,
        sent_at: DateTime<Utc>,
    ) {
        let touched = cache.merge(listed, version, sent_at);
        tell(&self.news, (&key.0, &key.3), touched);
    }

    /// This service's own write to an object of `cache` (of `key`) was
    /// answered with `answer`, or (`None`) `name` was deleted: the cache
    /// holds it at once, and it is news when it changed something (the
    /// release that wrote it looks again, at what its write made).
    pub(super) fn written(
        &self,
        key: &CacheKey,
        cache: &Cache,
        answer: Option<JsonObject>,
        name: &str,
    ) {
        let touched = match answer {
            Some(object) => {
                let touched = touches(&object);
                cache.keep(object).then_some(touched)
            }
            None => cache.deleted(name).map(|object| touches(&object)),
        };
        tell(&self.news, (&key.0, &key.3), touched.into_iter().collect());
    }

    /// Stops the caches of every cluster and namespace not in `wanted`.
    pub(super) fn retain(&self, wanted: &HashSet<(String, String)>) {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(cluster, _, _, namespace), _| {
            wanted.contains(&(cluster.clone(), namespace.clone()))
        });
        self.count(all.len());
    }

    /// Stops every cache (the clients they use are replaced).
    pub(super) fn clear(&self) {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.clear();
        self.count(0);
    }

    fn count(&self, running: usize) {
        self.metrics
            .watch_caches
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    fn start(
        &self,
        key: &CacheKey,
        client: &kube::Client,
        throttle: &Arc<Throttle>,
        resource: &ApiResource,
    ) -> Arc<Cache> {
        let stop = CancellationToken::new();
        let cache = Arc::new(Cache {
            objects: RwLock::default(),
            listed_at: std::sync::Mutex::default(),
            listing: tokio::sync::Mutex::default(),
            current: tokio::sync::watch::Sender::new(Health::Listing),
            _stop: stop.clone().drop_guard(),
        });
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.3, resource);
        let feed = Feed {
            cluster: key.0.clone(),
            namespace: key.3.clone(),
            cache: Arc::downgrade(&cache),
            news: self.news.clone(),
            metrics: self.metrics.clone(),
            throttle: throttle.clone(),
        };
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = feed.run(api) => {}
            }
        });
        cache
    }
}

impl Cache {
    pub(super) fn get(&self, name: &str) -> Option<JsonObject> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.get(name)
    }

    /// The routing objects whose hosts name `service` (of `namespace`):
    /// a namespace may hold thousands, and a release reads only its own.
    pub(super) fn for_service(&self, service: &str, namespace: &str) -> Vec<JsonObject> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        let mut naming = objects.naming(service);
        naming.retain(|o| routes_for(o, service, namespace));
        naming
    }

    /// Keeps an object a watch brought, or a write of this service
    /// answered (so that the next read sees the write at once), unless the
    /// cache already holds that version or a newer one; answers whether it
    /// was kept.
    pub(super) fn keep(&self, object: JsonObject) -> bool {
        let object = slim(object);
        let name = name_of(&object);
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        if newer_or_same(objects.version(&name), &object) {
            return false;
        }
        objects.insert(name, &object);
        true
    }

    /// Whether a list sent at `at` or later was merged.
    pub(super) fn listed_since(&self, at: DateTime<Utc>) -> bool {
        let listed_at = self.listed_at.lock().unwrap_or_else(|e| e.into_inner());
        listed_at.is_some_and(|listed| listed >= at)
    }

    /// Merges a list sent at `sent_at` (resourceVersion `version`): each
    /// object kept unless the cache holds that version or a newer one, and
    /// one the list lacks dropped unless written after it. Answers what
    /// changed.
    fn merge(
        &self,
        listed: Vec<JsonObject>,
        version: Option<u64>,
        sent_at: DateTime<Utc>,
    ) -> Vec<Touched> {
        let mut touched = Vec::new();
        let mut names = HashSet::new();
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        for object in listed {
            let object = slim(object);
            let name = name_of(&object);
            names.insert(name.clone());
            if newer_or_same(objects.version(&name), &object) {
                continue;
            }
            touched.push(touches(&object));
            objects.insert(name, &object);
        }
        if let Some(version) = version {
            let dropped = objects
                .retain(|name, held| names.contains(name) || held.is_some_and(|v| v > version));
            touched.extend(dropped.iter().map(touches));
        }
        drop(objects);
        let mut listed_at = self.listed_at.lock().unwrap_or_else(|e| e.into_inner());
        *listed_at = Some(listed_at.map_or(sent_at, |at| at.max(sent_at)));
        touched
    }

    /// Replaces the objects by a fresh list (a watch's relist); answers
    /// what differs.
    fn replace(&self, listed: BTreeMap<String, JsonObject>) -> Vec<Touched> {
        // Each object made text once, and before the cache is locked.
        let mut fresh = Held::default();
        for (name, object) in &listed {
            fresh.insert(name.clone(), object);
        }
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let mut touched: Vec<Touched> = listed
            .iter()
            .filter(|(name, _)| !objects.same_as(&fresh, name))
            .map(|(_, object)| touches(object))
            .collect();
        let gone: Vec<String> = objects
            .names()
            .filter(|name| fresh.version(name).is_none())
            .cloned()
            .collect();
        touched.extend(
            gone.iter()
                .filter_map(|name| objects.get(name))
                .map(|o| touches(&o)),
        );
        *objects = fresh;
        touched
    }

    /// An object was deleted: what the cache held of it.
    pub(super) fn deleted(&self, name: &str) -> Option<JsonObject> {
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        objects.remove(name)
    }
}

/// The watch behind one cache.
struct Feed {
    cluster: String,
    namespace: String,
    cache: std::sync::Weak<Cache>,
    news: News,
    metrics: DriverMetrics,
    /// The cluster's rate limit: each list takes its turn, and a 429's
    /// wait holds the cluster's other requests too.
    throttle: Arc<Throttle>,
}

impl Feed {
    async fn run(self, api: Api<DynamicObject>) {
        let mut retry = FIRST_RETRY;
        loop {
            self.throttle.take().await;
            // kube-runtime's watcher lists (in pages), then watches from the
            // list's resourceVersion, resuming after bookmarks and timeouts.
            // Its first error ends this stream: the cache is not current
            // until a new list.
            let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
            let mut listing: BTreeMap<String, JsonObject> = BTreeMap::new();
            while let Some(event) = events.next().await {
                let Some(cache) = self.cache.upgrade() else {
                    return;
                };
                match event {
                    Ok(watcher::Event::Init) => listing.clear(),
                    Ok(watcher::Event::InitApply(object)) => {
                        if let Some(object) = as_json(&object) {
                            listing.insert(name_of(&object), slim(object));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        self.metrics
                            .cluster_request(&self.cluster, "list", Some(200));
                        let listed = std::mem::take(&mut listing);
                        let touched = cache.replace(listed);
                        cache.current.send_replace(Health::Current);
                        retry = FIRST_RETRY;
                        self.tell(touched);
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        if let Some(object) = as_json(&object) {
                            let touched = touches(&object);
                            // Not news when it is the answer to this
                            // service's own write, kept already.
                            if cache.keep(object) {
                                self.tell(vec![touched]);
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        if let Some(object) = as_json(&object) {
                            cache.deleted(&name_of(&object));
                            self.tell(vec![touches(&object)]);
                        }
                    }
                    Err(error) => {
                        let code = error_code(&error);
                        self.metrics.cluster_request(&self.cluster, "watch", code);
                        if let Some(wait) = status_of(&error).and_then(Throttle::asked_by) {
                            self.throttle.retry_after(wait);
                            retry = retry.max(wait);
                        }
                        tracing::debug!(cluster = %self.cluster, namespace = %self.namespace, %error, "a watch failed; listing again");
                        // Readers waiting for a first list learn now that it
                        // failed; the others read the cluster until a new list.
                        cache.current.send_replace(Health::Broken);
                        break;
                    }
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    fn tell(&self, touched: Vec<Touched>) {
        tell(&self.news, (&self.cluster, &self.namespace), touched);
    }
}

/// Tells the driver what changed in a cluster's namespace.
fn tell(news: &News, (cluster, namespace): (&str, &str), touched: Vec<Touched>) {
    for Touched { names, release_uid } in touched {
        // Numbered only now: the change is in its cache already.
        let sequence = news.told.fetch_add(1, Ordering::SeqCst) + 1;
        // Nobody listening: the driver is not running.
        let _ = news.sender.send(ClusterChange {
            cluster: cluster.to_owned(),
            namespace: Some(namespace.to_owned()),
            names,
            release_uid,
            sequence,
        });
    }
}

/// What a change to one object concerns.
struct Touched {
    names: Vec<String>,
    release_uid: Option<String>,
}

/// The hosts of a routing object as written; none for others.
fn hosts_of(object: &JsonObject) -> impl Iterator<Item = &str> {
    hosts_in(object.get("spec"))
}

/// Whether a routing object's hosts name `service` of `namespace`.
pub(super) fn routes_for(object: &JsonObject, service: &str, namespace: &str) -> bool {
    spec_routes_for(object.get("spec"), service, namespace)
}

/// Whether a routing object's `spec` names `service` of `namespace` among
/// its hosts.
pub(super) fn spec_routes_for(spec: Option<&Value>, service: &str, namespace: &str) -> bool {
    hosts_in(spec).any(|host| names_service(host, service, namespace))
}

/// The names an object concerns: its own, and for Istio's routing objects
/// the services of their hosts (`reviews` of `reviews.default.svc...`).
fn touches(object: &JsonObject) -> Touched {
    let mut names = vec![name_of(object)];
    for host in hosts_of(object) {
        let service = host.split('.').next().unwrap_or(host).to_owned();
        if !names.contains(&service) {
            names.push(service);
        }
    }
    let release_uid = object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(RELEASE_UID_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Touched { names, release_uid }
}

/// The object without what the driver never reads.
pub(super) fn slim(mut object: JsonObject) -> JsonObject {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        if let Some(Value::Array(fields)) = metadata.get_mut("managedFields") {
            for entry in fields.iter_mut() {
                if let Value::Object(entry) = entry {
                    entry.retain(|key, _| key == "manager" || key == "operation");
                }
            }
        }
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    object
}

fn name_of(object: &JsonObject) -> String {
    crate::domain::object::name_of(object).to_owned()
}

/// Whether the version held (`held`, from [`Held::version`]) is at least
/// as new as `other`'s, by resourceVersion. The API server's versions are
/// etcd revisions, compared as numbers; any other form is taken as newer
/// (the later arrival wins).
fn newer_or_same(held: Option<Option<u64>>, other: &JsonObject) -> bool {
    matches!((held.flatten(), version_of(other)), (Some(a), Some(b)) if a >= b)
}

pub(super) fn as_json(object: &DynamicObject) -> Option<JsonObject> {
    match serde_json::to_value(object).ok()? {
        Value::Object(map) => Some(map),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            None
        }
    }
}

fn error_code(error: &watcher::Error) -> Option<u16> {
    status_of(error).map(|status| status.code)
}

/// The API server's answer behind a watch's failure, if it answered.
fn status_of(error: &watcher::Error) -> Option<&kube::core::Status> {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => {
            if let kube::Error::Api(status) = error {
                Some(status)
            } else {
                None
            }
        }
        watcher::Error::WatchError(status) => Some(status),
        watcher::Error::NoResourceVersion => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_)
            | Value::Array(_) => {
                unreachable!()
            }
        }
    }

    fn routing(name: &str, version: u64, host: &str) -> JsonObject {
        object(json!({
            "metadata": {"name": name, "resourceVersion": version.to_string()},
            "spec": {"hosts": [host]},
        }))
    }

    fn empty_cache() -> Cache {
        Cache {
            objects: RwLock::default(),
            listed_at: std::sync::Mutex::default(),
            listing: tokio::sync::Mutex::default(),
            current: tokio::sync::watch::Sender::new(Health::Current),
            _stop: CancellationToken::new().drop_guard(),
        }
    }

    #[test]
    fn a_relist_replaces_the_objects_and_tells_only_what_differs() {
        let cache = empty_cache();
        cache.keep(routing("same", 5, "a"));
        cache.keep(routing("changed", 6, "b"));
        cache.keep(routing("gone", 7, "c"));
        let listed: BTreeMap<String, JsonObject> = [
            ("same".to_owned(), routing("same", 5, "a")),
            ("changed".to_owned(), routing("changed", 9, "d")),
            ("new".to_owned(), routing("new", 10, "e")),
        ]
        .into();
        let touched = cache.replace(listed);
        let mut names: Vec<&str> = touched.iter().map(|t| t.names[0].as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["changed", "gone", "new"]);
        assert_eq!(cache.get("same"), Some(routing("same", 5, "a")));
        assert_eq!(cache.get("changed"), Some(routing("changed", 9, "d")));
        assert_eq!(cache.get("gone"), None);
        // The index follows: "changed" now names d, no longer b.
        assert!(cache.for_service("b", "default").is_empty());
        assert_eq!(cache.for_service("d", "default").len(), 1);
        assert!(cache.replace(BTreeMap::new()).len() == 3, "all three gone");
    }

    #[test]
    fn a_merged_list_adds_what_the_watch_had_not_brought_and_drops_what_it_lacks() {
        let cache = empty_cache();
        let t0 = Utc::now();
        assert!(!cache.listed_since(t0));
        // Held from the watch: one the list has newer, one it lacks (deleted
        // before it), one written after it (this service's own write).
        cache.keep(routing("old", 5, "a"));
        cache.keep(routing("gone", 6, "b"));
        cache.keep(routing("mine", 30, "c"));
        let touched = cache.merge(
            vec![routing("old", 12, "a"), routing("new", 15, "d")],
            Some(20),
            t0,
        );
        let mut names: Vec<String> = touched.into_iter().map(|t| t.names[0].clone()).collect();
        names.sort();
        assert_eq!(names, ["gone", "new", "old"]);
        assert_eq!(version_of(&cache.get("old").unwrap()), Some(12));
        assert!(cache.get("new").is_some());
        assert!(cache.get("gone").is_none(), "absent from a newer list");
        assert!(cache.get("mine").is_some(), "written after the list");
        assert!(cache.listed_since(t0));
        assert!(!cache.listed_since(t0 + chrono::TimeDelta::milliseconds(1)));
        // An older list changes nothing the cache holds newer, nor the time.
        let touched = cache.merge(
            vec![routing("old", 9, "a")],
            Some(10),
            t0 - chrono::TimeDelta::seconds(1),
        );
        assert_eq!(touched.len(), 0);
        assert_eq!(version_of(&cache.get("old").unwrap()), Some(12));
        assert!(cache.listed_since(t0));
    }

    #[test]
    fn kept_objects_lose_field_sets_and_last_applied_but_keep_their_managers() {
        let kept = slim(object(json!({"metadata": {
            "name": "reviews",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "meshrelease.io/release-uid": "u1",
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}],
        }})));
        assert_eq!(
            Value::Object(kept),
            json!({"metadata": {
                "name": "reviews",
                "annotations": {"meshrelease.io/release-uid": "u1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            }})
        );
    }

    #[test]
    fn a_routing_object_concerns_the_services_of_its_hosts() {
        let vs = object(
            json!({"metadata": {"name": "routes"}, "spec": {"hosts": ["reviews.default.svc.cluster.local", "ratings"]}}),
        );
        assert_eq!(touches(&vs).names, ["routes", "reviews", "ratings"]);
        assert!(routes_for(&vs, "reviews", "default"));
        assert!(!routes_for(&vs, "reviews", "prod"));
        let dr = object(json!({"metadata": {"name": "reviews"}, "spec": {"host": "reviews"}}));
        assert_eq!(touches(&dr).names, ["reviews"]);
        assert!(routes_for(&dr, "reviews", "default"));
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let at = |rv: &str| object(json!({"metadata": {"name": "x", "resourceVersion": rv}}));
        let held = |rv: &str| Some(version_of(&at(rv)));
        assert!(newer_or_same(held("10"), &at("9")));
        assert!(newer_or_same(held("10"), &at("10")));
        assert!(!newer_or_same(held("10"), &at("11")));
        assert!(!newer_or_same(None, &at("11")), "not held");
        // Versions that are not numbers: the later arrival wins.
        assert!(!newer_or_same(held("a"), &at("b")));
    }
}
