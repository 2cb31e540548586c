//! Hostile clients: an HTTP/2 rapid-reset flood, more streams than allowed,
//! oversized header blocks, headers and bodies that trickle, and thousands of
//! idle connections. Each ends with a second client proving the server still
//! answers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix.
fn hpack_int(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128 + 128) as u8);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields (no indexing, no Huffman).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(name.len(), 7, 0, &mut out);
        out.extend_from_slice(name.as_bytes());
        hpack_int(value.len(), 7, 0, &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn create_request_headers(app: &TestApp) -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v2/meshes/demo-mesh/namespaces/default/releases"),
        (":authority", &app.address.to_string()),
        ("content-type", "application/json"),
        ("x-auth-token", TOKEN),
    ])
}

/// What the server sent on a raw HTTP/2 connection.
#[derive(Debug, Default)]
struct Seen {
    resets: Vec<(u32, u32)>,
    goaway: Option<u32>,
    headers_on: Vec<u32>,
    /// Streams answered `:status: 200`.
    ok_on: Vec<u32>,
    closed: bool,
}

/// Whether an HPACK header block starts with `:status: 200`: the static
/// table's entry 8 (`0x88`), after any dynamic table size updates.
fn says_200(block: &[u8]) -> bool {
    block
        .iter()
        .find(|b| **b & 0xe0 != 0x20)
        .is_some_and(|b| *b == 0x88)
}

/// A raw HTTP/2 connection: preface and SETTINGS sent, the server's SETTINGS
/// read and acknowledged.
async fn raw_h2(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    loop {
        let (kind, flags, _, _) = read_frame(&mut stream).await.expect("SETTINGS");
        if kind == SETTINGS && flags & ACK == 0 {
            stream
                .write_all(&frame(SETTINGS, ACK, 0, &[]))
                .await
                .unwrap();
            return stream;
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

/// Reads what the server sends for up to `wait`, or until it closes.
async fn collect(stream: &mut TcpStream, wait: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read_frame(stream)).await {
            Err(_) => return seen,
            Ok(None) => {
                seen.closed = true;
                return seen;
            }
            Ok(Some((kind, _, id, payload))) => match kind {
                RST_STREAM => seen
                    .resets
                    .push((id, u32::from_be_bytes(payload[..4].try_into().unwrap()))),
                GOAWAY => seen.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                HEADERS => {
                    seen.headers_on.push(id);
                    if says_200(&payload) {
                        seen.ok_on.push(id);
                    }
                }
                _ => {}
            },
        }
    }
}

async fn still_serving(app: &TestApp, name: &str) {
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        app.create(&release_body(name, name)),
    )
    .await
    .expect("the server did not answer a second client");
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn a_rapid_reset_flood_is_cut_off_and_others_are_served() {
    let app = spawn_app().await;
    let mut flood = raw_h2(&app).await;
    let headers = create_request_headers(&app);
    let mut sent = 0u32;
    let mut batch = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_HEADERS, id, &headers));
        batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        if batch.len() > 64 * 1024 {
            if flood.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
        sent = i + 1;
    }
    let _ = flood.write_all(&batch).await;
    let seen = collect(&mut flood, Duration::from_secs(10)).await;
    // The flood connection is told to go away (ENHANCE_YOUR_CALM, 0xb) or closed.
    assert!(
        seen.goaway.is_some() || seen.closed,
        "the server accepted {sent} reset streams without a GOAWAY: {seen:?}"
    );
    still_serving(&app, "after-reset-flood").await;
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let app = spawn_app_with(|cli| cli.max_concurrent_streams = Some(8)).await;
    let mut stream = raw_h2(&app).await;
    let headers = create_request_headers(&app);
    // Nine requests whose bodies never come: eight may be open at once.
    for i in 0..9u32 {
        stream
            .write_all(&frame(HEADERS, END_HEADERS, 2 * i + 1, &headers))
            .await
            .unwrap();
    }
    let seen = collect(&mut stream, Duration::from_secs(3)).await;
    let ninth = 17;
    assert!(
        seen.resets.iter().any(|(id, _)| *id == ninth) || seen.goaway.is_some(),
        "the ninth stream was not refused: {seen:?}"
    );
    assert!(
        !seen.resets.iter().any(|(id, _)| *id < ninth),
        "a stream within the limit was refused: {seen:?}"
    );
    still_serving(&app, "after-too-many-streams").await;
}

#[tokio::test]
async fn a_header_block_over_the_limit_is_refused() {
    let app = spawn_app().await;
    // The 200 detector sees a 200: a small request for /healthz.
    let mut small = raw_h2(&app).await;
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/healthz"),
        (":authority", &app.address.to_string()),
    ]);
    small
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let seen = collect(&mut small, Duration::from_secs(2)).await;
    assert_eq!(seen.ok_on, [1], "{seen:?}");

    let mut stream = raw_h2(&app).await;
    let big = "x".repeat(100 * 1024);
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/healthz"),
        (":authority", &app.address.to_string()),
        ("x-padding", &big),
    ]);
    // HEADERS then CONTINUATIONs, 16 KiB each (the default frame size).
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags = if last { END_HEADERS | END_STREAM } else { 0 };
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        if stream
            .write_all(&frame(kind, flags, 1, chunk))
            .await
            .is_err()
        {
            break;
        }
    }
    let seen = collect(&mut stream, Duration::from_secs(5)).await;
    // A 431 answer, a stream reset or the connection closed: never a 200.
    assert!(seen.ok_on.is_empty(), "answered 200: {seen:?}");
    let refused = !seen.resets.is_empty() || seen.goaway.is_some() || seen.closed;
    let answered = seen.headers_on.contains(&1);
    assert!(refused || answered, "{seen:?}");
    if answered {
        // The only answer a request for /healthz gets besides 200 here is 431;
        // check it over HTTP/1, whose status line is plain text.
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "y".repeat(100 * 1024)
        );
        let answer = app.raw_http(&head).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
    still_serving(&app, "after-big-headers").await;
}

#[tokio::test]
async fn http1_headers_one_byte_a_second_are_cut_off() {
    let app = spawn_app_with(|cli| cli.header_read_timeout_secs = Some(2)).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: example\r\nX-Slow: 0123456789\r\n\r\n";
    let started = Instant::now();
    let mut closed_after = None;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // The server closes the connection when the deadline passes.
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("the server answered a request it never fully received"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let closed_after = closed_after.expect("the slow client was never cut off");
    assert!(closed_after < Duration::from_secs(20), "{closed_after:?}");
    still_serving(&app, "after-slow-headers").await;
}

#[tokio::test]
async fn a_body_that_trickles_forever_is_cut_off_with_408() {
    let app = spawn_app_with(|cli| cli.body_read_timeout_secs = Some(2)).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /v2/meshes/{MESH}/namespaces/default/releases HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // One task reads everything the server says, at once, while the other
    // trickles: the answer is read before a late byte can reset the
    // connection.
    let (mut from_server, mut to_server) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = from_server.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    let trickle = tokio::spawn(async move {
        // A byte every 200 ms, until the server hangs up.
        while to_server.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the trickling body was never cut off")
        .unwrap();
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("ASM.01010009"), "{answer}");
    still_serving(&app, "after-trickle").await;
}

#[tokio::test]
async fn a_grpc_message_that_never_completes_is_deadline_exceeded() {
    let app = spawn_app_with(|cli| cli.body_read_timeout_secs = Some(1)).await;
    let (sender, body) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    // A gRPC frame header promising 1000 bytes, then nothing more.
    sender
        .send(Ok(bytes::Bytes::from_static(&[0, 0, 0, 3, 232])))
        .await
        .unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        h2.post(format!("{}/asm.v2.ReleaseService/CreateRelease", app.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-auth-token", TOKEN)
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(body),
            ))
            .send(),
    )
    .await
    .expect("no answer")
    .unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(s) => s.to_str().unwrap().to_owned(),
        None => {
            let mut response = response;
            while response.chunk().await.unwrap().is_some() {}
            panic!("no trailers-only status");
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    drop(sender);
    still_serving(&app, "after-grpc-trickle").await;
}

#[tokio::test]
async fn idle_connections_are_bounded_and_closed() {
    let app = spawn_app_with(|cli| {
        cli.max_connections = Some(200);
        cli.idle_timeout_secs = Some(3);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect(app.address).await {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    async fn still_open(idle: &mut [TcpStream]) -> usize {
        let mut open = 0;
        for stream in idle {
            let mut buf = [0u8; 16];
            match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                Ok(Ok(_)) | Err(_) => open += 1,
            }
        }
        open
    }
    // Those beyond the limit are closed at once: soon after, at most the
    // limit are open (and some are: the cap, not the idle timeout, did it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = still_open(&mut idle).await;
    assert!(
        (1..=200).contains(&open),
        "{open} of {} connections open at once, with a limit of 200",
        idle.len()
    );
    // The rest are closed by the idle timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let open = still_open(&mut idle).await;
    assert_eq!(
        open,
        0,
        "{open} of {} idle connections are still open",
        idle.len()
    );
    still_serving(&app, "after-idle-connections").await;
}
