//! Releases that run themselves: the loop that carries out their steps.
//! Every tick it looks at the Running releases with a strategy (on the
//! replica that drives), and after a write at those written; one whose round of checks is due gets a task of
//! its own that calls its webhooks, each bounded by its timeout, so that a
//! slow gate holds only its own release; the others are decided as time
//! passes (a pause that ends, a weight the clusters now hold). Every
//! decision is the domain's (`domain::progress`), written before the
//! traffic it implies is applied (the cluster driver applies it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::prometheus::Prometheus;
use super::webhooks::Webhooks;
use super::written::written_since;
use crate::domain::ports::{Leadership, Written};
use crate::domain::progress::metrics::{self, Sample};
use crate::domain::progress::{self, Decision, ProgressUpdate};
use crate::domain::strategy::{CheckResult, MetricCheck, Verdict, WebhookType};
use crate::domain::{DomainError, Release, ReleaseManager, ReleaseRef};
use crate::metrics::{DriverMetrics, ReasonLabels, VerdictLabels};

/// Attempts to store a decision that lost a race (to the cluster driver's
/// status write, most often): decided again each time on what is there.
const WRITE_ATTEMPTS: usize = 5;

pub struct Steps {
    pub manager: Arc<ReleaseManager>,
    pub leadership: Arc<dyn Leadership>,
    pub shutdown: CancellationToken,
    pub metrics: DriverMetrics,
    /// How often releases are looked at.
    pub tick: Duration,
    pub webhooks: Webhooks,
    pub prometheus: Prometheus,
}

/// Now, in milliseconds, as every time the service shows is.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now)
}

impl Steps {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let this = Arc::new(self);
        // Releases whose round of checks is under way.
        let busy: Arc<Mutex<HashSet<ReleaseRef>>> = Arc::default();
        let mut revisions = this.manager.store().revisions();
        let mut tick = tokio::time::interval(this.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The store revision looked at up to; `None`: every release is due
        // a look (at start, and after another replica drove).
        let mut seen: Option<u64> = None;
        loop {
            let written = tokio::select! {
                () = this.shutdown.cancelled() => return,
                changed = revisions.changed() => {
                    if changed.is_err() { return }
                    true
                }
                _ = tick.tick() => false,
            };
            let now_at = *revisions.borrow_and_update();
            if !this.leadership.hold().await {
                seen = None;
                continue;
            }
            // After a write, only the releases written (as written) are
            // looked at; every tick, all of them.
            let written = match seen {
                Some(from) if written => written_since(&this.manager, from, now_at).await,
                _ => None,
            };
            seen = Some(now_at);
            let releases = match written {
                Some(written) => this.read_running(written.into_values()).await,
                None => this.running().await,
            };
            for release in releases {
                let name = ReleaseRef::of(&release);
                if busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&name)
                {
                    continue;
                }
                let now = now();
                let due = progress::next_round(&release).is_some_and(|at| at <= now);
                if due {
                    busy.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone());
                    let this = this.clone();
                    let busy = busy.clone();
                    tokio::spawn(async move {
                        this.round(release).await;
                        busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                    });
                } else {
                    this.decide(release, None).await;
                }
            }
        }
    }

    /// The Running releases with a strategy, in the meshes this replica
    /// drives.
    async fn running(&self) -> Vec<Release> {
        let mut found = Vec::new();
        for mesh in self
            .manager
            .meshes()
            .iter()
            .filter(|m| self.manager.drives(m))
        {
            match self.manager.store().running_strategies(&mesh.id).await {
                Ok(releases) => found.extend(releases),
                Err(e) => {
                    tracing::warn!(mesh = %mesh.id, error = %e, "cannot read the releases whose strategies run")
                }
            }
        }
        found
    }

    /// Of the releases written, those that run a strategy as written, read
    /// as they are now (still Running with one).
    async fn read_running(&self, written: impl Iterator<Item = Written>) -> Vec<Release> {
        let mut found = Vec::new();
        for name in written.filter(|w| w.runs_strategy).map(|w| w.release) {
            match self.manager.read(&name).await {
                Ok(release) if progress::running(&release).is_some() => found.push(release),
                // Moved on since, or gone: the write that did it is news
                // of its own.
                Ok(_) | Err(DomainError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(release = %name.name, mesh = %name.mesh_id, error = %e, "cannot read a release whose strategy runs")
                }
            }
        }
        found
    }

    /// A round of checks: the gates first (confirm-rollout), then the rest
    /// and the metrics, all at once, each bounded by its timeout; then the
    /// decision.
    async fn round(&self, release: Release) {
        let plan = progress::round_plan(&release);
        let mut results = self.call_all(&plan.first, &release).await;
        if results.iter().all(|r| r.verdict == Verdict::Pass) {
            let (hooks, measured) = futures_util::future::join(
                self.call_all(&plan.webhooks, &release),
                futures_util::future::join_all(
                    plan.metrics
                        .iter()
                        .map(|check| self.measure(check, plan.interval, &release)),
                ),
            )
            .await;
            results.extend(hooks);
            results.extend(measured);
        }
        self.decide(release, Some(results)).await;
    }

    /// One metric check of `release` now: its queries sent at once to the
    /// mesh's Prometheus, the verdict the domain's.
    async fn measure(
        &self,
        check: &MetricCheck,
        interval: Duration,
        release: &Release,
    ) -> CheckResult {
        let now = now();
        let queries = match metrics::prepare(release, interval, check, now) {
            metrics::Prepared::NotYet(result) => return result,
            metrics::Prepared::Ask(queries) => queries,
        };
        let Some(mesh) = self.manager.meshes().shared(&release.mesh_id) else {
            let gone = Sample::Failed(format!(
                "the mesh {:?} is no longer configured",
                release.mesh_id
            ));
            let answers = metrics::Answers {
                value: gone,
                requests: None,
                original_requests: None,
            };
            return metrics::judge(check, &queries, &answers, now);
        };
        let ask = |query: Option<&String>| {
            let query = query.cloned();
            let mesh = mesh.clone();
            async move {
                match query {
                    Some(q) => Some(self.prometheus.query(&mesh, &q, now).await),
                    None => None,
                }
            }
        };
        let (value, requests, original_requests) = futures_util::future::join3(
            ask(Some(&queries.value)),
            ask(queries.requests.as_ref()),
            ask(queries.original_requests.as_ref()),
        )
        .await;
        let answers = metrics::Answers {
            value: value.unwrap_or(Sample::Empty),
            requests,
            original_requests,
        };
        metrics::judge(check, &queries, &answers, now)
    }

    async fn call_all(
        &self,
        hooks: &[crate::domain::strategy::Webhook],
        release: &Release,
    ) -> Vec<CheckResult> {
        let now = now();
        futures_util::future::join_all(
            hooks
                .iter()
                .map(|hook| self.webhooks.call(hook, release, None, now)),
        )
        .await
    }

    /// Decides on `release` (after a round, with its results) and stores
    /// the decision; a decision that lost a race is made again on what is
    /// there now, with the same results.
    async fn decide(&self, mut release: Release, round: Option<Vec<CheckResult>>) {
        let target = ReleaseRef::of(&release);
        for _ in 0..WRITE_ATTEMPTS {
            let now = now();
            let Some(decision) = progress::decide(&release, now, round.as_deref()) else {
                return;
            };
            let update = ProgressUpdate(decision);
            match self
                .manager
                .write_progress(&target, release.resource_version, &update)
                .await
            {
                Ok(written) => {
                    self.after(&release, &written, update.0, round.as_deref())
                        .await;
                    return;
                }
                Err(DomainError::Aborted(_)) => match self.manager.read(&target).await {
                    Ok(fresh) if progress::running(&fresh).is_some() => release = fresh,
                    Ok(_) | Err(_) => return,
                },
                Err(DomainError::NotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(release = %target.name, mesh = %target.mesh_id, error = %e, "cannot store a strategy's decision");
                    return;
                }
            }
        }
    }

    /// What follows a stored decision: the round's results kept, metrics,
    /// logs, and the news told to the event and post-rollout webhooks.
    async fn after(
        &self,
        before: &Release,
        written: &Release,
        decision: Decision,
        round: Option<&[CheckResult]>,
    ) {
        let status = &decision.status;
        if let Some(results) = round {
            let numbered: Vec<CheckResult> = results
                .iter()
                .cloned()
                .map(|mut r| {
                    r.round = status.round;
                    r
                })
                .collect();
            if let Err(e) = self.manager.record_checks(written, &numbered).await {
                tracing::warn!(release = %written.name, error = %e, "cannot keep a round's check results");
            }
            if let Some(verdict) = status.last_verdict.filter(|_| status.last_round.is_some()) {
                self.metrics
                    .rounds
                    .get_or_create(&VerdictLabels {
                        verdict: verdict.as_str().into(),
                    })
                    .inc();
            }
        }
        let previous_step = before
            .status
            .strategy
            .as_ref()
            .map_or(0, |s| s.current_step);
        if status.current_step > previous_step
            && let Some(started) = before
                .status
                .strategy
                .as_ref()
                .and_then(|s| s.step_start_time)
        {
            let took = (now() - started).to_std().unwrap_or_default();
            self.metrics.step_seconds.observe(took.as_secs_f64());
        }
        if decision.step == Some(crate::domain::phase::Move::Fail)
            && let Some(reason) = &status.outcome
        {
            self.metrics
                .rollbacks
                .get_or_create(&ReasonLabels {
                    reason: reason.clone().into(),
                })
                .inc();
            tracing::warn!(release = %written.name, mesh = %written.mesh_id, %reason, "a strategy rolled its release back");
        }
        self.tell(written, &decision.news).await;
    }

    /// The news, told to the `event` webhooks (and a rollback to the
    /// `post-rollout` ones), each in its own task: nothing waits for them.
    async fn tell(&self, release: &Release, news: &[progress::News]) {
        let Some(strategy) = &release.strategy else {
            return;
        };
        for item in news {
            tracing::info!(release = %release.name, mesh = %release.mesh_id, kind = item.kind.as_str(), message = %item.message, "strategy");
            for hook in strategy.webhooks(item.kind) {
                let hook = hook.clone();
                let webhooks = self.webhooks.clone();
                let release = release.clone();
                let message = item.message.clone();
                let manager = self.manager.clone();
                tokio::spawn(async move {
                    let mut result = webhooks.call(&hook, &release, Some(&message), now()).await;
                    // Recorded with the round it followed.
                    result.round = release.status.strategy.as_ref().map_or(0, |s| s.round);
                    if hook.kind == WebhookType::PostRollout || hook.kind == WebhookType::Event {
                        let _ = manager.record_checks(&release, &[result]).await;
                    }
                });
            }
        }
    }
}
