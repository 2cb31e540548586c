//! The real binary: configuration errors, signals, and durability across a
//! SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

pub struct Server {
    pub child: Child,
    pub base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// Copies stderr into `log` until the process's stderr closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A server process does not outlive its test, also when the test panics.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits (up to a minute) until the log has had `needle` `times` times,
    /// and returns the log so far.
    pub async fn wait_for_log(&self, needle: &str, times: usize) -> String {
        for _ in 0..600 {
            let log = self.log.lock().unwrap().clone();
            if log.matches(needle).count() >= times {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the log never had {needle:?} {times} times:\n{}",
            self.log.lock().unwrap()
        );
    }

    /// Sends the process a signal (`HUP`, `TERM`, ...), as `kill -s` does.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Kills the process and returns all it logged: the reader is joined
    /// first, so no line still in the pipe is missed.
    pub fn kill_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        self.log.lock().unwrap().clone()
    }
}

/// Starts the binary on port 0 and waits for its `listening` line.
pub fn start(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    start_with_env(data_dir, extra, &[])
}

/// As [`start`], with more environment variables.
pub fn start_with_env(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let cli = test_cli(data_dir);
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshrelease"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--log-format",
            "text",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("MESHRELEASE_MESHES", cli.meshes.unwrap())
        .env("MESHRELEASE_TOKENS", cli.tokens.unwrap())
        .envs(env.iter().copied());
    spawn(command)
}

/// Starts the binary on a configuration file alone (nothing from this
/// process's environment), which must listen on port 0 and log as text.
pub fn start_with_config(config: &std::path::Path) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshrelease"));
    command.arg("--config").arg(config).env_clear();
    spawn(command)
}

/// Runs `command`, copies its stderr, and waits for its `listening` line.
fn spawn(mut command: Command) -> Server {
    let mut child = command
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let (false, Some(at)) = (sent, line.find("address=")) {
                let address: String = line[at + 8..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(address);
                sent = true;
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server never said where it listens");
    Server {
        child,
        reader: Some(reader),
        base: format!("http://{address}"),
        log,
    }
}

pub async fn create(base: &str, name: &str, service: &str, request_id: &str) -> u16 {
    http_client()
        .post(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases"
        ))
        .header("X-Auth-Token", TOKEN)
        .header("X-Request-Id", request_id)
        .json(&release_body(name, service))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn what_was_acknowledged_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    for i in 0..10 {
        assert_eq!(
            create(&server.base, &format!("kept-{i}"), &format!("svc-{i}"), "r").await,
            200
        );
    }
    server.child.kill().unwrap(); // SIGKILL: no drain, no close
    server.child.wait().unwrap();

    let mut server = start(dir.path(), &[]);
    for i in 0..10 {
        // Each name is still taken: the create was on disk before its 200.
        assert_eq!(
            create(
                &server.base,
                &format!("kept-{i}"),
                &format!("other-{i}"),
                "r"
            )
            .await,
            409,
            "kept-{i}"
        );
    }
    assert_eq!(
        create(&server.base, "new-after-restart", "fresh", "r").await,
        200
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    assert_eq!(
        create(&server.base, "before-stop", "reviews", "req-sigterm-1").await,
        200
    );
    // A request in flight when the signal comes: its body is half sent.
    let body = serde_json::to_vec(&release_body("in-flight", "ratings")).unwrap();
    let (half, rest) = body.split_at(body.len() / 2);
    let (rest, half) = (
        bytes::Bytes::copy_from_slice(rest),
        bytes::Bytes::copy_from_slice(half),
    );
    let (send, chunks) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    send.send(Ok(half)).await.unwrap();
    let in_flight = tokio::spawn(
        http_client()
            .post(format!(
                "{}/v2/meshes/{MESH}/namespaces/default/releases",
                server.base
            ))
            .header("X-Auth-Token", TOKEN)
            .header("Content-Type", "application/json")
            .header("Content-Length", body.len())
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(chunks),
            ))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Not ready any more, but still finishing what it started.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = http_client()
        .get(format!("{}/readyz", server.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        ready.as_ref().map_or(true, |r| r.status() == 503),
        "ready while draining: {ready:?}"
    );
    send.send(Ok(rest)).await.unwrap();
    drop(send);
    let answer = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("the request in flight was answered")
        .unwrap()
        .expect("the request in flight was not cut off");
    assert_eq!(answer.status(), 200, "the request in flight completed");

    let (status, server) = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    let log = server.kill_and_read_log();
    assert!(log.contains("stopped"), "{log}");

    // It was stored: a new process on the same data has it.
    let server = start(dir.path(), &[]);
    let read = http_client()
        .get(format!(
            "{}/v2/meshes/{MESH}/namespaces/default/releases/in-flight",
            server.base
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    server.kill_and_read_log();
}

#[tokio::test]
async fn every_log_line_of_a_request_names_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    assert_eq!(
        create(&server.base, "logged", "reviews", "req-log-check-7").await,
        200
    );
    let log = server.kill_and_read_log();
    // Every line the request caused names its id: each is logged inside the
    // request's span, which names its path too.
    let of_the_request: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("path=/v2/meshes/demo-mesh/namespaces/default/releases"))
        .collect();
    assert!(
        of_the_request
            .iter()
            .any(|l| l.contains("request done status=200")),
        "{log}"
    );
    for line in &of_the_request {
        assert!(
            line.contains("request_id=req-log-check-7"),
            "a line without the request id: {line}"
        );
    }
    assert!(!log.contains(TOKEN), "a token was logged");
}

#[test]
fn a_bad_configuration_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[[meshes]]\nid = \"m\"\nclusters = []\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("meshes[0].clusters"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .env("MESHRELEASE_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen:"));
}

/// A create whose body is `size` bytes (the release, then spaces).
async fn create_of_size(base: &str, size: usize) -> u16 {
    let mut body = release_body("padded", "reviews").to_string();
    body.push_str(&" ".repeat(size - body.len()));
    http_client()
        .post(format!(
            "{base}/v2/meshes/{MESH}/namespaces/default/releases"
        ))
        .header("X-Auth-Token", TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_environment_beats_the_file_and_a_flag_beats_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("service.toml");
    std::fs::write(
        &config,
        "max_body_bytes = 1024\n[[meshes]]\nid = \"file-mesh\"\nclusters = [\"c\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let data = tempfile::tempdir().unwrap();
    let env = [("MESHRELEASE_MAX_BODY_BYTES", "65536")];
    let server = start_with_env(data.path(), &["--config", &config], &env);
    // MESHRELEASE_MESHES (set by `start`) replaced the file's meshes.
    let (status, _) = json_of(
        http_client()
            .get(format!("{}/v2/meshes/file-mesh/releases", server.base))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "the file's mesh is gone");
    // 4 KB is over the file's 1024 bytes, under the environment's 65536.
    assert_eq!(create_of_size(&server.base, 4096).await, 200);
    server.kill_and_read_log();

    let data = tempfile::tempdir().unwrap();
    let server = start_with_env(
        data.path(),
        &["--config", &config, "--max-body-bytes", "2048"],
        &env,
    );
    assert_eq!(
        create_of_size(&server.base, 4096).await,
        413,
        "the flag's 2048 bytes"
    );
    assert_eq!(create_of_size(&server.base, 1500).await, 200);
    server.kill_and_read_log();
}

#[tokio::test]
async fn a_second_signal_exits_at_once_while_a_request_holds_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--drain-timeout-secs",
            "60",
            "--body-read-timeout-secs",
            "120",
        ],
    );
    // A request whose body never finishes: the drain would wait for it.
    let (send, chunks) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    send.send(Ok(bytes::Bytes::from_static(b"{\"metadata\":")))
        .await
        .unwrap();
    let stuck = tokio::spawn(
        http_client()
            .post(format!(
                "{}/v2/meshes/{MESH}/namespaces/default/releases",
                server.base
            ))
            .header("X-Auth-Token", TOKEN)
            .header("Content-Type", "application/json")
            .header("Content-Length", 4096)
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(chunks),
            ))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    let signal = || {
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal();
    let mut server = server;
    let waited = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    });
    let (status, server) = tokio::time::timeout(Duration::from_secs(30), waited)
        .await
        .expect("the second signal ended the process, not the 60 s drain")
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let log = server.kill_and_read_log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("second shutdown signal; exiting now"), "{log}");
    drop(send);
    let _ = stuck.await;
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        version.starts_with(&format!(
            "meshrelease {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    // Built in a git checkout, it names the commit checked out.
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        && head.status.success()
    {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(version.contains(&head), "{version} does not name {head}");
    }
}

/// The binary allocates with jemalloc, built to give freed memory back at
/// once (`.cargo/config.toml`): without it a burst of releases leaves the
/// process twice as large per release (BENCHMARKS.md). jemalloc prints its
/// settings at exit when asked to by `_RJEM_MALLOC_CONF`.
#[test]
fn the_binary_allocates_with_jemalloc_returning_memory_at_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stats = String::from_utf8_lossy(&output.stderr);
    for setting in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 0",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(stats.contains(setting), "{setting} not in: {stats}");
    }
}

#[test]
fn check_config_validates_says_what_it_resolved_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:0\"\n[[meshes]]\nid = \"m\"\nclusters = [\"c\"]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--config")
        .arg(&good)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("1 meshes"), "{stdout}");
    assert!(stdout.contains("store sqlite in"), "{stdout}");
    // It only checked: no database was created.
    assert!(
        !dir.path().join(meshrelease::store::DATABASE_FILE).exists(),
        "--check-config opened the store"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nstore = \"etcd\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("store:"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_start_up_log_and_metrics_say_what_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let metrics = http_client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert_eq!(value("meshrelease_build_info{"), 1.0);
    assert!(
        metrics.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{metrics}"
    );
    assert!(value("meshrelease_process_resident_memory_bytes") > 1e6);
    assert!(value("meshrelease_process_open_fds") >= 4.0);
    assert!(value("meshrelease_process_threads") >= 2.0);
    assert!(value("meshrelease_process_cpu_seconds") >= 0.0);

    let log = server.kill_and_read_log();
    let listening = log
        .lines()
        .find(|l| l.contains("listening"))
        .unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    for field in [
        "version=\"0.1.0 (commit ",
        "address=127.0.0.1:",
        "store=sqlite in ",
        "config=(none",
    ] {
        assert!(listening.contains(field), "{field} is not in: {listening}");
    }
}

#[tokio::test]
async fn the_shutdown_delay_turns_readiness_off_and_keeps_serving_before_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--shutdown-delay-secs", "5"]);
    let ready = |base: String| async move {
        http_client()
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(ready(server.base.clone()).await.unwrap(), 200);
    let signalled = std::time::Instant::now();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // At once: not ready (a load balancer stops sending), but a new
    // connection is still accepted and its request served.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while ready(server.base.clone()).await.unwrap() != 503 {
        assert!(std::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        create(&server.base, "during-delay", "reviews", "req-delay-1").await,
        200
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the checks above took the whole delay; nothing was proved"
    );
    // Then it drains and exits, cleanly, once the delay is over.
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(5),
        "exited before the delay was over"
    );
}

#[tokio::test]
async fn the_audit_trail_has_a_record_per_change_and_per_refusal_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = start(dir.path(), &["--audit-log", audit.to_str().unwrap()]);
    let releases = format!(
        "{}/v2/meshes/{MESH}/namespaces/default/releases",
        server.base
    );
    let post = |token: &'static str, name: &'static str| {
        http_client()
            .post(releases.clone())
            .header("X-Auth-Token", token)
            .header("X-Request-Id", format!("req-audit-{name}"))
            .json(&release_body(name, name))
            .send()
    };
    assert_eq!(post(TOKEN, "audited").await.unwrap().status(), 200);
    assert_eq!(post(DENIED_TOKEN, "denied").await.unwrap().status(), 403);
    assert_eq!(post("not-a-token", "unknown").await.unwrap().status(), 401);
    // A read changes nothing and is allowed: no record.
    let read = http_client()
        .get(format!("{releases}/audited"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // A cancel over gRPC.
    let mut grpc = meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient::connect(
        server.base.clone(),
    )
    .await
    .unwrap();
    grpc.delete_release(authed(meshrelease::pb::asm::v2::DeleteReleaseRequest {
        mesh_id: MESH.into(),
        namespace: "default".into(),
        name: "audited".into(),
        action: "cancel".into(),
    }))
    .await
    .unwrap();

    // Records are written as they happen; read them when all four are there.
    let mut records = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        records = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>();
        if records.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [TOKEN, DENIED_TOKEN, "not-a-token"] {
        assert!(
            !text.contains(secret),
            "the audit trail holds a token:\n{text}"
        );
    }
    // Each record flattened: its fields and those of the spans it was in.
    let flat: Vec<serde_json::Map<String, serde_json::Value>> = records
        .iter()
        .map(|r| {
            let mut all = r["fields"].as_object().cloned().unwrap_or_default();
            for span in r["spans"].as_array().into_iter().flatten() {
                all.extend(span.as_object().cloned().unwrap_or_default());
            }
            all
        })
        .collect();
    let summary: Vec<(String, String, String)> = flat
        .iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            (text("rpc"), text("subject"), text("outcome"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("CreateRelease".into(), "tester".into(), "OK".into()),
            (
                "CreateRelease".into(),
                "denied".into(),
                "PERMISSION_DENIED".into()
            ),
            (String::new(), String::new(), "UNAUTHENTICATED".into()),
            ("DeleteRelease".into(), "tester".into(), "OK".into()),
        ],
        "{text}"
    );
    let created = &flat[0];
    assert_eq!(created["request_id"], "req-audit-audited");
    assert_eq!(created["mesh"], MESH);
    assert_eq!(created["namespace"], "default");
    assert_eq!(created["release"], "audited");
    assert!(
        created["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{created:?}"
    );
    assert_eq!(flat[2]["request_id"], "req-audit-unknown");
    assert!(records.iter().all(|r| r["timestamp"].is_string()));
    drop(server);
}
