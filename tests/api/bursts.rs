//! Bursts of new connections, as a fleet of CI jobs or clients reconnecting
//! after a deploy open them: the listen queue holds them (no SYN dropped,
//! so none waits a second for a retransmit), and over the connection cap
//! they are refused at once rather than left hanging.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::helpers::*;

/// The kernel's count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in /proc/net/netstat, as `nstat` shows).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .map(|(_, value)| value.parse().unwrap())
        .unwrap()
}

/// What one connection of a burst saw: how long the connect took, and the
/// status line of the answer (empty when the server closed it unanswered).
async fn one_request(address: SocketAddr) -> (Duration, String) {
    let began = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let connected = began.elapsed();
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (connected, status)
}

/// Opens `count` connections at once, each sending one request; gives what
/// each saw, once all are done (bounded: none may hang).
async fn burst(address: SocketAddr, count: usize) -> Vec<(Duration, String)> {
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        tasks.spawn(one_request(address));
    }
    tokio::time::timeout(REQUEST_TIMEOUT, tasks.join_all())
        .await
        .expect("every connection of the burst ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_connections_is_queued_accepted_and_answered() {
    let app = spawn_app().await;
    let overflows = listen_overflows();
    let seen = burst(app.address, 2000).await;
    let answered = seen.iter().filter(|(_, s)| s == "HTTP/1.1 200 OK").count();
    assert_eq!(answered, 2000, "every connection is answered");
    let slowest = seen.iter().map(|(c, _)| *c).max().unwrap();
    // A dropped SYN is retransmitted after a second: no connect took that.
    assert!(
        slowest < Duration::from_millis(900),
        "the slowest connect took {slowest:?}: a SYN was dropped and retransmitted"
    );
    assert_eq!(
        listen_overflows(),
        overflows,
        "the kernel dropped connections for a full listen queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_connection_cap_is_refused_at_once_not_left_hanging() {
    let app = spawn_app_with(|cli| cli.max_connections = Some(50)).await;
    // Fill the cap with connections that have been served and stay open.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: held\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(stream);
    }
    let seen = burst(app.address, 500).await;
    let answered = seen.iter().filter(|(_, s)| !s.is_empty()).count();
    assert_eq!(
        answered, 0,
        "over the cap, no connection is served: {seen:?}"
    );
    // The cap frees as connections close, and new ones are served again.
    drop(held);
    for attempt in 0.. {
        let (_, status) = one_request(app.address).await;
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(attempt < 100, "never served again after the cap freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
