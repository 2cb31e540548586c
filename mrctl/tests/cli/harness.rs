//! A service on 127.0.0.1:0 driving two simulated clusters, and the real
//! `mrctl` binary run against it as a pipeline would run it.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use meshrelease::configuration::{Cli, Settings};
use meshrelease::startup::Application;
use serde_json::Value;
use simcluster::resources::VIRTUAL_SERVICES;
use simcluster::{Config, SimCluster};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const TOKEN: &str = "pipeline-token";
/// May only read.
pub const READER_TOKEN: &str = "reader-token";
pub const MESH: &str = "demo-mesh";

/// How long one mrctl run may take before the test fails instead of hanging.
const RUN_LIMIT: Duration = Duration::from_secs(120);

pub struct World {
    pub a: SimCluster,
    pub b: SimCluster,
    pub dir: Arc<TempDir>,
    pub server: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn sha(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Cluster-a holds `reviews-v1` and `ratings-v1` with their Services and
/// the Istio objects; gray Deployments go to cluster-b.
pub async fn world() -> World {
    let config = Config {
        ready_delay: Duration::from_millis(50),
        ..Config::default()
    };
    let a = SimCluster::start(config.clone()).await.unwrap();
    let b = SimCluster::start(config).await.unwrap();
    for service in ["reviews", "ratings"] {
        a.put_original(service, 1).await;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("a.kubeconfig"), a.kubeconfig("cluster-a")).unwrap();
    std::fs::write(path("b.kubeconfig"), b.kubeconfig("cluster-b")).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
log_level = "warn"
resync_interval_ms = 100
drain_timeout_secs = 2

[[clusters]]
id = "cluster-a"
kubeconfig = "{a}"

[[clusters]]
id = "cluster-b"
kubeconfig = "{b}"

[[meshes]]
id = "{MESH}"
clusters = ["cluster-a", "cluster-b"]
istio_config_cluster = "cluster-a"
# Nothing listens there: metric checks answer Error, and say why.
prometheus_url = "http://127.0.0.1:1/"

[[tokens]]
subject = "pipeline"
sha256 = "{token}"
allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}]

[[tokens]]
subject = "reader"
sha256 = "{reader}"
allow = [{{ actions = ["asm:mesh:getRelease", "asm:mesh:listReleases"], meshes = ["*"] }}]
"#,
        data = path("data"),
        a = path("a.kubeconfig"),
        b = path("b.kubeconfig"),
        token = sha(TOKEN),
        reader = sha(READER_TOKEN),
    );
    std::fs::write(path("server.toml"), config).unwrap();
    let (server, stop) = serve(&dir, None, None).await.unwrap();
    World {
        a,
        b,
        dir,
        server,
        stop: Some(stop),
    }
}

/// The service of `dir`'s configuration, on `listen` if given, with its
/// data in `data` if given; answers its address and its stop switch.
async fn serve(
    dir: &TempDir,
    listen: Option<String>,
    data: Option<PathBuf>,
) -> anyhow::Result<(String, oneshot::Sender<()>)> {
    let settings = Settings::load(&Cli {
        config: Some(dir.path().join("server.toml")),
        listen,
        data_dir: data,
        ..Cli::default()
    })?;
    let app = Application::build(settings).await?;
    let server = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok((server, stop))
}

impl World {
    /// Stops the service (as on SIGTERM); `mrctl` runs meanwhile find
    /// nobody at its address.
    pub fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Starts the service again at the same address: on its own data, or
    /// on a new data directory (a new store) when `fresh`.
    pub async fn start_server(&mut self, fresh: bool) {
        let address = self.server.trim_start_matches("http://").to_owned();
        let data = fresh.then(|| self.dir.path().join("data-fresh"));
        // The old listener may take a moment to close.
        for attempt in 0.. {
            match serve(&self.dir, Some(address.clone()), data.clone()).await {
                Ok((_, stop)) => {
                    self.stop = Some(stop);
                    return;
                }
                Err(e) if attempt < 50 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the service did not start again at {address}: {e:#}"),
            }
        }
    }

    /// `mrctl` with this world's server, token and mesh in its environment,
    /// and a configuration file of its own (none of the user's).
    pub fn command(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("mrctl").unwrap();
        command
            .env_clear()
            .env("MESHRELEASE_SERVER", &self.server)
            .env("MESHRELEASE_TOKEN", TOKEN)
            .env("MESHRELEASE_MESH", MESH)
            .env("MRCTL_CONFIG", self.dir.path().join("mrctl.yaml"))
            .timeout(RUN_LIMIT);
        command
    }

    /// Starts `mrctl ARGS` (one that runs until stopped, as `watch`), its
    /// standard output a pipe.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("mrctl"))
            .env_clear()
            .env("MESHRELEASE_SERVER", &self.server)
            .env("MESHRELEASE_TOKEN", TOKEN)
            .env("MESHRELEASE_MESH", MESH)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `mrctl ARGS` to the end.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.command(), args).await
    }

    pub async fn run_with(&self, mut command: assert_cmd::Command, args: &[&str]) -> Run {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || command.args(&args).output())
            .await
            .unwrap()
            .unwrap();
        Run(output)
    }

    /// A manifest file in the world's directory.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The release as `mrctl get -o json` prints it.
    pub async fn release(&self, name: &str) -> Value {
        let run = self.run(&["get", "releases", name, "-o", "json"]).await;
        run.success();
        serde_json::from_str(&run.stdout()).unwrap()
    }

    /// Waits (bounded) until the release as read satisfies `check`.
    pub async fn until(&self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            last = self.release(name).await;
            if check(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("release {name} never got there: {last}");
    }

    /// The weights of the `reviews` VirtualService's route, by subset.
    pub async fn reviews_routes(&self) -> Vec<(String, i64)> {
        let vs = self
            .a
            .get(VIRTUAL_SERVICES, "default", "reviews")
            .await
            .unwrap_or(Value::Null);
        vs["spec"]["http"][0]["route"]
            .as_array()
            .map(|routes| {
                routes
                    .iter()
                    .map(|r| {
                        (
                            r["destination"]["subset"].as_str().unwrap_or("").to_owned(),
                            r["weight"].as_i64().unwrap_or(100),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One finished run of mrctl.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts exit 0 and gives the standard output.
    pub fn success(&self) -> String {
        assert_eq!(self.code(), 0, "{self}");
        self.stdout()
    }

    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(self.code(), code, "{self}");
        self.stderr()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
}

/// A canary manifest for `service` (reviews or ratings), its gray
/// Deployment in cluster-b.
pub fn manifest(name: &str, service: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: asm/v2
kind: Release
metadata:
  name: {name}
spec:
  serviceName: {service}
  clusterID: cluster-a
  deploymentName: {service}-v1
  version: v2
  type: canary{extra_spec}
  grayDeployments:
    - clusterID: cluster-b
      template:
        spec:
          replicas: 2
          selector:
            matchLabels: {{app: {service}}}
          template:
            metadata:
              labels: {{app: {service}}}
            spec:
              containers:
                - name: {service}
                  image: {service}:2
"#
    )
}
