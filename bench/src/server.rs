//! The real server binary, started on a free loopback port with the
//! benchmark's mesh and token, and what `/proc` says of it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::Digest as _;
use tokio::process::{Child, Command};

use crate::workload::{MESH, TOKEN};

/// `meshrelease` next to this executable, unless named.
pub(crate) fn binary(named: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match named {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .join("meshrelease"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: run `cargo build --release` first, or pass --server-binary",
        binary.display()
    );
    Ok(binary)
}

pub(crate) struct Server {
    child: Child,
    pub(crate) address: std::net::SocketAddr,
}

impl Server {
    /// Starts the binary and returns once `/readyz` answers 200.
    pub(crate) async fn start(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(binary, data_dir, &[]).await
    }

    /// As [`Server::start`], with more (or overriding) environment.
    pub(crate) async fn start_with(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_on(binary, data_dir, env, None).await
    }

    /// As [`Server::start_with`], on CPU `cpu` only when given (`taskset`).
    pub(crate) async fn start_on(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, String)],
        cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let sha = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", &cpu.to_string()]).arg(binary);
                taskset
            }
            None => Command::new(binary),
        };
        // Its logs (stderr) and its audit records (stdout) both go to the
        // file: phase moves are logs, cluster changes are audit records.
        let log = match std::env::var_os("BENCH_SERVER_LOG") {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("BENCH_SERVER_LOG: {}", path.to_string_lossy()))?,
            ),
            None => None,
        };
        let child = command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            // `BENCH_SERVER_LOG=FILE`: the server logs at info level (each
            // cluster change, each phase a release moves to) into FILE, to
            // follow what the slowest releases waited for.
            .args(["--log-level", if log.is_some() { "info" } else { "warn" }])
            .env(
                "MESHRELEASE_MESHES",
                format!(r#"[{{ id = "{MESH}", clusters = ["cluster-a", "cluster-b"] }}]"#),
            )
            .env(
                "MESHRELEASE_TOKENS",
                format!(
                    r#"[{{ subject = "bench", sha256 = "{sha}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }}]"#
                ),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(match &log {
                Some(file) => Stdio::from(file.try_clone().context("BENCH_SERVER_LOG")?),
                None => Stdio::null(),
            })
            .stderr(match log {
                Some(file) => Stdio::from(file),
                None => Stdio::inherit(),
            })
            .kill_on_drop(true)
            .spawn()?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{address}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(Self { child, address });
            }
            anyhow::ensure!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Releases stored, by walking the list with the largest page.
    pub(crate) async fn count(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("http://{}/metrics", self.address))
            .await?
            .text()
            .await?;
        // Creates answered OK over gRPC: every one stored a release.
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with(
                    "meshrelease_requests_total{rpc=\"asm.v2.ReleaseService/CreateRelease\"",
                ) && l.contains("code=\"OK\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Open file descriptors.
    pub(crate) fn descriptors(&self) -> anyhow::Result<usize> {
        let pid = self.child.id().context("the server has exited")?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// A figure of `/metrics`: the sum of the samples of `name` whose labels
    /// contain `labels`.
    pub(crate) async fn metric(&self, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.address))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The CPU time the server has used so far (user and system, all its
    /// threads), from `/proc/PID/stat` in clock ticks of 1/100 s (Linux's
    /// `USER_HZ` on every architecture it runs the benchmark on).
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("the server has exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis, from the state
        // (field 3): utime is field 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .context("an unreadable /proc/PID/stat")?
            .1
            .split(' ')
            .collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            Ok(fields.get(i).context("a short /proc/PID/stat")?.parse()?)
        };
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// (resident, peak resident) in KiB.
    pub(crate) fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await?;
        Ok(())
    }
}
