//! Writes the transcoder's method table: one typed entry per RPC that
//! carries a `google.api.http` option, so that no REST handler is written by
//! hand. It reads the descriptor set that `meshrelease-wire` compiled from
//! `proto/` (its path arrives as `DEP_MESHRELEASE_WIRE_DESCRIPTOR`).

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_reflect::{DescriptorPool, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    // The PostgreSQL tests run when a database is named, and show as ignored
    // (not as passed) when none is.
    println!("cargo:rustc-check-cfg=cfg(pg_tests)");
    println!("cargo:rerun-if-env-changed=MESHRELEASE_TEST_DATABASE_URL");
    if std::env::var_os("MESHRELEASE_TEST_DATABASE_URL").is_some() {
        println!("cargo:rustc-cfg=pg_tests");
    }
    // The metric-check tests run a real Prometheus when one is named.
    println!("cargo:rustc-check-cfg=cfg(prometheus_tests)");
    println!("cargo:rerun-if-env-changed=MESHRELEASE_TEST_PROMETHEUS");
    if std::env::var_os("MESHRELEASE_TEST_PROMETHEUS").is_some() {
        println!("cargo:rustc-cfg=prometheus_tests");
    }
    build_info();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = std::env::var("DEP_MESHRELEASE_WIRE_DESCRIPTOR")?;
    println!("cargo:rerun-if-changed={descriptor}");
    let encoded = std::fs::read(&descriptor)?;
    let pool = DescriptorPool::decode(encoded.as_slice())?;
    std::fs::write(out_dir.join("transcode_methods.rs"), method_table(&pool)?)?;
    Ok(())
}

/// Rust source for `fn transcoded_methods`, one entry per annotated RPC
/// (unary or server-streaming).
fn method_table(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google.api.http is not in the descriptor set")?;
    let mut services = String::new();
    for service in pool.services() {
        let mut entries = String::new();
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            if !matches!(options.get_extension(&http).as_ref(), Value::Message(_)) {
                return Err(format!("{}: malformed google.api.http", method.full_name()).into());
            }
            if method.is_client_streaming() {
                return Err(format!(
                    "{}: client-streaming RPCs cannot carry google.api.http here",
                    method.full_name()
                )
                .into());
            }
            // The streaming wrapper has one more type to infer: the stream.
            let (kind, wrap, inferred) = if method.is_server_streaming() {
                ("ServerStreaming", "server_streaming_method", "_, _, _")
            } else {
                ("Unary", "unary_method", "_, _")
            };
            writeln!(
                entries,
                "        (\"{full}\", crate::transcode::MethodCall::{kind}(crate::transcode::{wrap}::<{req}, {resp}, {inferred}>(service.clone(), |s, r| async move {{ {trait_path}::{rpc}(&*s, r).await }}))),",
                full = method.full_name(),
                req = rust_type(method.input().full_name()),
                resp = rust_type(method.output().full_name()),
                trait_path = server_trait(service.package_name(), service.name()),
                rpc = snake_case(method.name()),
            )?;
        }
        if entries.is_empty() {
            continue;
        }
        writeln!(
            services,
            "/// The transcodable methods of `{full}`, keyed by full method name.\n\
             pub fn {fn_name}_methods<S: {trait_path}>(service: std::sync::Arc<S>) -> Vec<(&'static str, crate::transcode::MethodCall)> {{\n    vec![\n{entries}    ]\n}}\n",
            full = service.full_name(),
            fn_name = snake_case(service.name()),
            trait_path = server_trait(service.package_name(), service.name()),
        )?;
    }
    Ok(services)
}

/// Messages whose Rust type is written by hand (see the extern paths above).
const HAND_WRITTEN: &[(&str, &str)] = &[
    ("asm.v2.ReleaseList", "crate::pb::list::ReleaseList"),
    (
        "asm.v2.ReleaseCheckList",
        "crate::pb::list::ReleaseCheckList",
    ),
];

fn rust_type(full_name: &str) -> String {
    if let Some((_, path)) = HAND_WRITTEN.iter().find(|(name, _)| *name == full_name) {
        return (*path).to_owned();
    }
    let mut parts: Vec<&str> = full_name.split('.').collect();
    let name = parts.pop().unwrap_or_default();
    let mut path = String::from("crate::pb");
    for part in parts {
        path.push_str("::");
        path.push_str(part);
    }
    format!("{path}::{name}")
}

fn server_trait(package: &str, service: &str) -> String {
    let module = package.replace('.', "::");
    format!(
        "crate::pb::{module}::{}_server::{service}",
        snake_case(service)
    )
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The commit built and its date, for `--version`, `/metrics` and the
/// start-up log (`unknown` outside a git checkout). The commit's date, not
/// the build's: two builds of one commit are alike.
fn build_info() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let date = git(&["log", "-1", "--format=%cs"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESHRELEASE_COMMIT={commit}");
    println!("cargo:rustc-env=MESHRELEASE_COMMIT_DATE={date}");
    // A new commit (or checkout) rebuilds; paths that do not exist are left
    // out (cargo would take them as changed at every build).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
