//! What the process is and uses, read from `/proc/self` when `/metrics` is
//! scraped: build, resident memory, open descriptors, CPU time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Linux's clock ticks per second for `/proc/*/stat` times (USER_HZ, 100
/// on every architecture Linux ships for servers).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    commit_date: &'static str,
}

pub(super) struct Process {
    resident: Gauge,
    descriptors: Gauge,
    cpu_seconds: Gauge<f64, AtomicU64>,
    threads: Gauge,
}

impl Process {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("MESHRELEASE_COMMIT"),
                commit_date: env!("MESHRELEASE_COMMIT_DATE"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The version and commit running (always 1)",
            build,
        );
        let process = Process {
            resident: Gauge::default(),
            descriptors: Gauge::default(),
            cpu_seconds: Gauge::default(),
            threads: Gauge::default(),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            process.resident.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process (connections included)",
            process.descriptors.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time the process has used, user and system, in seconds",
            process.cpu_seconds.clone(),
        );
        registry.register(
            "process_threads",
            "Threads of the process",
            process.threads.clone(),
        );
        process
    }

    /// Reads `/proc/self` (figures that cannot be read stay as they were).
    pub(super) fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            };
            if let Some(kib) = field("VmRSS:") {
                self.resident.set(kib * 1024);
            }
            if let Some(threads) = field("Threads:") {
                self.threads.set(threads);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.descriptors
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            // Fields after the command, which is in parentheses and may
            // hold spaces: state is the 3rd field, utime the 14th, stime 15th.
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                self.cpu_seconds.set((user + system) / TICKS_PER_SECOND);
            }
        }
    }
}
