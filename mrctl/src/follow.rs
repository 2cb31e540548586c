//! A watch that survives the service restarting: it resumes after the last
//! change it saw (or starts over when that is older than the service keeps,
//! or from a store the service no longer has), and says when the service
//! stops answering and when it is back, so that nobody reads a stale table
//! as live.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use meshrelease_wire::asm::v2 as pb;
use tonic::{Code, Status, Streaming};

use crate::api::Api;
use crate::errors::{ServerError, ServerResult as _};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What following gives next.
#[derive(Debug)]
pub enum Followed {
    /// A change; the current releases come first, as ADDED.
    Event(Box<pb::WatchEvent>),
    /// The service stopped answering at `since` (why, in its words or the
    /// connection's); the follower keeps trying.
    Lost { since: DateTime<Utc>, why: String },
    /// The service answers again, after an outage that began at `since`.
    Back { since: DateTime<Utc> },
    /// The service could not resume after the last change seen (too old,
    /// or it is a store it never had): the current releases follow again,
    /// as ADDED, and anything shown before may be gone.
    Restarted,
}

pub struct Follower<'a> {
    api: &'a Api,
    mesh: String,
    namespace: Option<String>,
    stream: Option<Streaming<pb::WatchEvent>>,
    /// The resourceVersion of the last change seen, to resume after.
    last: String,
    /// Whether a stream was ever open: a first failure is the user's to
    /// see (a wrong address, a bad token), a later one is the service
    /// restarting and is retried.
    connected: bool,
    retry: Duration,
    /// When the service stopped answering, while it does not.
    lost: Option<DateTime<Utc>>,
    /// What to say before the next event, in order.
    news: VecDeque<Followed>,
}

impl<'a> Follower<'a> {
    pub fn new(api: &'a Api, mesh: &str, namespace: Option<&str>) -> Self {
        Self {
            api,
            mesh: mesh.to_owned(),
            namespace: namespace.map(str::to_owned),
            stream: None,
            last: String::new(),
            connected: false,
            retry: FIRST_RETRY,
            lost: None,
            news: VecDeque::new(),
        }
    }

    /// The next change, or news of the connection.
    pub async fn next(&mut self) -> Result<Followed, ServerError> {
        loop {
            if let Some(news) = self.news.pop_front() {
                return Ok(news);
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let opened = self
                        .api
                        .watch(&self.mesh, self.namespace.as_deref(), &self.last)
                        .await;
                    match opened {
                        Ok(stream) => {
                            self.connected = true;
                            if let Some(since) = self.lost.take() {
                                self.stream = Some(stream);
                                return Ok(Followed::Back { since });
                            }
                            self.stream.insert(stream)
                        }
                        Err(status) => {
                            self.recover(status).await?;
                            continue;
                        }
                    }
                }
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.last = event.resource_version.clone();
                    self.retry = FIRST_RETRY;
                    return Ok(Followed::Event(Box::new(event)));
                }
                Ok(None) => {
                    // The service ended the stream (it is stopping): resume.
                    self.stream = None;
                    self.pause().await;
                }
                Err(status) => {
                    self.stream = None;
                    self.recover(status).await?;
                }
            }
        }
    }

    async fn recover(&mut self, status: Status) -> Result<(), ServerError> {
        match status.code() {
            // Too old to resume from, or from a store the service no longer
            // has: start over from the current state.
            Code::OutOfRange if !self.last.is_empty() => {
                self.last.clear();
                if let Some(since) = self.lost.take() {
                    self.news.push_back(Followed::Back { since });
                }
                self.news.push_back(Followed::Restarted);
                Ok(())
            }
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                if self.connected =>
            {
                if self.lost.is_none() {
                    let since = Utc::now();
                    self.lost = Some(since);
                    self.news.push_back(Followed::Lost {
                        since,
                        why: status.message().to_owned(),
                    });
                }
                self.pause().await;
                Ok(())
            }
            Code::Ok
            | Code::OutOfRange
            | Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => Err(status).via(&self.api.server),
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.retry).await;
        self.retry = (self.retry * 2).min(LAST_RETRY);
    }
}

/// What to tell a person when the service stops answering.
pub fn lost_line(since: DateTime<Utc>, why: &str) -> String {
    format!(
        "mrctl: the service is not reachable since {} ({why}); still trying, and what is shown may be out of date",
        since.format("%H:%M:%S UTC")
    )
}

/// What to tell a person when it answers again.
pub fn back_line(since: DateTime<Utc>) -> String {
    let away = (Utc::now() - since).num_seconds().max(0);
    format!(
        "mrctl: the service answers again (it was away {away}s); following from where it stopped"
    )
}
