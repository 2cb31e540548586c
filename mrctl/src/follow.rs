//! A watch that survives the service restarting: it resumes after the last
//! change it saw (or starts over when that is older than the service keeps).

use std::time::Duration;

use meshrelease_wire::asm::v2 as pb;
use tonic::{Code, Status, Streaming};

use crate::api::Api;
use crate::errors::{ServerError, ServerResult as _};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

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
        }
    }

    /// The next change: the current releases come first (as ADDED).
    pub async fn next(&mut self) -> Result<pb::WatchEvent, ServerError> {
        loop {
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
                    return Ok(event);
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
            // Too old to resume from: start over from the current state.
            Code::OutOfRange if !self.last.is_empty() => {
                self.last.clear();
                Ok(())
            }
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                if self.connected =>
            {
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
