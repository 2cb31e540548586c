//! A real Prometheus for the metric-check tests: Debian's `prometheus`
//! binary on 127.0.0.1 with its own configuration and a temporary TSDB,
//! scraping every second a small exporter in the test that serves Istio's
//! standard series (`istio_requests_total`, the request duration
//! histogram) for the workloads a test names, at the request rates, error
//! rates and latencies it sets.
//!
//! Prometheus takes seconds to start and scrape: one serves the whole test
//! binary (`shared`), and dies with it (its launcher reads the test's pipe
//! and stops it when the pipe closes). A test that stops Prometheus starts
//! its own (`PrometheusProcess::start`).
//!
//! The binary is `$MESHRELEASE_TEST_PROMETHEUS` (a path, or `1` for the
//! one on the PATH); without it these tests show as ignored.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Istio's default buckets for request durations, in milliseconds.
const BUCKETS: [f64; 13] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// What a workload receives, as its sidecars would report it.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub rps: f64,
    /// Fraction of the requests answered 503.
    pub errors: f64,
    /// Every request takes this long.
    pub latency_ms: f64,
}

impl Traffic {
    pub fn healthy() -> Self {
        Traffic {
            rps: 20.0,
            errors: 0.0,
            latency_ms: 20.0,
        }
    }
}

#[derive(Debug)]
struct Workload {
    traffic: Traffic,
    ok: f64,
    failed: f64,
    /// Cumulative counts per bucket (and +Inf last).
    buckets: [f64; BUCKETS.len() + 1],
    sum_ms: f64,
    last: Instant,
}

impl Workload {
    fn catch_up(&mut self) {
        let now = Instant::now();
        let requests = self.traffic.rps * (now - self.last).as_secs_f64();
        self.last = now;
        self.failed += requests * self.traffic.errors;
        self.ok += requests * (1.0 - self.traffic.errors);
        for (i, le) in BUCKETS.iter().enumerate() {
            if self.traffic.latency_ms <= *le {
                self.buckets[i] += requests;
            }
        }
        self.buckets[BUCKETS.len()] += requests;
        self.sum_ms += requests * self.traffic.latency_ms;
    }
}

/// The exporter: Istio's series for the workloads tests set, on a thread
/// of its own (tests come and go with their runtimes; it stays).
pub struct Exporter {
    workloads: Arc<Mutex<BTreeMap<(String, String), Workload>>>,
    pub address: SocketAddr,
}

impl Exporter {
    fn start() -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let workloads: Arc<Mutex<BTreeMap<(String, String), Workload>>> = Arc::default();
        let state = workloads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    // The request line and headers; the answer is the same
                    // for any path.
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let body = exposition(&mut state.lock().unwrap());
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Exporter { workloads, address }
    }

    /// From now on `workload` in `namespace` receives `traffic`.
    pub fn serve(&self, namespace: &str, workload: &str, traffic: Traffic) {
        let mut workloads = self.workloads.lock().unwrap();
        let entry = workloads
            .entry((namespace.to_owned(), workload.to_owned()))
            .or_insert_with(|| Workload {
                traffic,
                ok: 0.0,
                failed: 0.0,
                buckets: [0.0; BUCKETS.len() + 1],
                sum_ms: 0.0,
                last: Instant::now(),
            });
        entry.catch_up();
        entry.traffic = traffic;
    }
}

/// The text exposition of every workload's series, caught up to now. The
/// same requests are also reported by their source, all failed: a query
/// that forgot `reporter="destination"` would count them.
fn exposition(workloads: &mut BTreeMap<(String, String), Workload>) -> String {
    let mut out = String::from(
        "# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n",
    );
    for ((namespace, name), workload) in workloads.iter_mut() {
        workload.catch_up();
        let labels = |reporter: &str| {
            format!(
                "reporter=\"{reporter}\",destination_workload_namespace=\"{namespace}\",destination_workload=\"{name}\""
            )
        };
        let destination = labels("destination");
        out.push_str(&format!(
            "istio_requests_total{{{destination},response_code=\"200\"}} {}\n",
            workload.ok
        ));
        if workload.failed > 0.0 {
            out.push_str(&format!(
                "istio_requests_total{{{destination},response_code=\"503\"}} {}\n",
                workload.failed
            ));
        }
        out.push_str(&format!(
            "istio_requests_total{{{},response_code=\"503\"}} {}\n",
            labels("source"),
            workload.ok + workload.failed
        ));
        for (i, le) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{{destination},le=\"{le}\"}} {}\n",
                workload.buckets[i]
            ));
        }
        let count = workload.buckets[BUCKETS.len()];
        out.push_str(&format!(
            "istio_request_duration_milliseconds_bucket{{{destination},le=\"+Inf\"}} {count}\n\
             istio_request_duration_milliseconds_sum{{{destination}}} {}\n\
             istio_request_duration_milliseconds_count{{{destination}}} {count}\n",
            workload.sum_ms
        ));
    }
    out
}

/// A Prometheus process scraping `exporter` every second.
pub struct PrometheusProcess {
    port: u16,
    dir: PathBuf,
    launcher: Option<Child>,
    /// Whether its data outlives a stop (for `resume`); otherwise the
    /// launcher removes it.
    keep: bool,
}

/// The Prometheus binary the tests run.
fn binary() -> String {
    match std::env::var("MESHRELEASE_TEST_PROMETHEUS") {
        Ok(path) if !path.is_empty() && path != "1" => path,
        _ => "prometheus".into(),
    }
}

impl PrometheusProcess {
    /// Starts one (and waits until it has scraped the exporter once);
    /// `keep`: its data outlives a stop, until it is dropped.
    pub async fn start(exporter: &Exporter, keep: bool) -> PrometheusProcess {
        let dir = tempfile::Builder::new()
            .prefix("meshrelease-prometheus-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: istio\n    static_configs:\n      - targets: ['{}']\n",
                exporter.address
            ),
        )
        .unwrap();
        let port = {
            let free = TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().port()
        };
        let mut process = PrometheusProcess {
            port,
            dir,
            launcher: None,
            keep,
        };
        process.launch().await;
        process
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs the binary under a launcher that stops it (and removes its
    /// data) when the test process's pipe closes, however the test ends.
    async fn launch(&mut self) {
        let script = r#"dir=$1; shift
"$@" >"$dir/log" 2>&1 &
pid=$!
read -r _ignored
kill "$pid" 2>/dev/null
wait "$pid"
[ "$KEEP" = 1 ] || rm -rf "$dir""#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("launcher")
            .arg(&self.dir)
            .arg(binary())
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .env("KEEP", if self.keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        self.launcher = Some(child);
        self.until_scraped().await;
    }

    /// Waits (bounded) until Prometheus answers and has scraped the
    /// exporter.
    async fn until_scraped(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let answer = http
                .get(format!("{}/api/v1/query", self.url()))
                .query(&[("query", "up{job=\"istio\"} == 1")])
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(body) = answer.json::<serde_json::Value>().await
                && body["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        panic!(
            "Prometheus ({}) did not scrape the exporter within a minute; its log:\n{log}",
            binary()
        );
    }

    /// Stops it (its data stays, for `resume`).
    pub fn stop(&mut self) {
        if let Some(mut launcher) = self.launcher.take() {
            drop(launcher.stdin.take());
            let _ = launcher.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn resume(&mut self) {
        self.launch().await;
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The exporter every test of the binary shares.
pub fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(Exporter::start)
}

/// The Prometheus every test of the binary shares (started by the first
/// that asks; it stops when the test process exits).
pub async fn shared() -> String {
    static SHARED: tokio::sync::OnceCell<PrometheusProcess> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| PrometheusProcess::start(exporter(), false))
        .await
        .url()
}
