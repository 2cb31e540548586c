//! The read side: a few threads, each with its own read-only connection,
//! taking reads from one queue in turn. Reads see the last commit (WAL
//! readers never block the writer, nor each other).
//!
//! Threads of their own rather than tokio's blocking pool: a burst of
//! rounds once made dozens of blocking threads wait for one connection,
//! each allocating in its own arena, and the memory they freed stayed
//! with the process (BENCHMARKS.md). Here a read waits in the queue, not
//! as a thread.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::schema::open_connection;
use crate::store::StoreError;

/// Reads under way at once: enough for two cores, and few enough threads.
pub(super) const READERS: usize = 2;

type Read = Box<dyn FnOnce(&mut Connection) + Send>;

pub(super) struct Readers {
    queue: Mutex<Option<mpsc::Sender<Read>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Readers {
    /// Opens `count` read connections to the database at `path`, each
    /// with its thread.
    pub(super) fn open(path: &Path, count: usize) -> anyhow::Result<Self> {
        let (queue, reads) = mpsc::channel::<Read>();
        let reads = Arc::new(Mutex::new(reads));
        let mut threads = Vec::new();
        for i in 0..count {
            let mut conn = open_connection(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            let reads = reads.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    loop {
                        // One thread waits for the next read; the others
                        // wait for their turn to.
                        let next = reads.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            Ok(read) => read(&mut conn),
                            // The store closed.
                            Err(mpsc::RecvError) => return,
                        }
                    }
                })
                .context("starting a SQLite reader thread")?;
            threads.push(thread);
        }
        Ok(Readers {
            queue: Mutex::new(Some(queue)),
            threads: Mutex::new(threads),
        })
    }

    /// Runs `read` on one of the read connections, in its turn.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let closed = || StoreError::Unavailable("the store is closed".into());
        let (answer, answered) = oneshot::channel();
        {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let queue = queue.as_ref().ok_or_else(closed)?;
            queue
                .send(Box::new(move |conn: &mut Connection| {
                    // The caller may have gone: nobody to answer.
                    let _ = answer.send(read(conn));
                }))
                .map_err(|_| closed())?;
        }
        answered.await.map_err(|_| closed())?
    }

    /// Lets the reads queued finish, then stops the threads.
    pub(super) async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
