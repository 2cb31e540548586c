//! `mrctl apply`: each release of the manifests is created, or updated when
//! it exists. A document the server refuses is reported and the rest still
//! go (as kubectl does); the exit code says that one failed.

use meshrelease_wire::asm::v2 as pb;
use tonic::Status;

use crate::api::Api;
use crate::cli::{ApplyArgs, DocFormat};
use crate::config::Connection;
use crate::errors::{Reported, ServerResult as _};
use crate::manifest::{self, Document};
use crate::output;

pub async fn run(api: &Api, connection: &Connection, args: &ApplyArgs) -> anyhow::Result<()> {
    let documents = manifest::read_all(&args.files)?;
    let mut failed = 0;
    let mut printed = 0;
    for document in documents {
        let origin = document.origin.clone();
        match apply_one(api, connection, document, args.dry_run).await {
            Ok((release, verb)) => {
                let name = release.metadata.as_ref().map_or("", |m| m.name.as_str());
                if args.dry_run {
                    if printed > 0 && args.output == DocFormat::Yaml {
                        println!("---");
                    }
                    print!(
                        "{}",
                        match args.output {
                            DocFormat::Yaml => output::yaml(&release)?,
                            DocFormat::Json => output::json(&release)?,
                        }
                    );
                    printed += 1;
                    let status = release.status.as_ref();
                    let message = status.map_or("", |s| s.plan_message.as_str());
                    eprintln!("release.asm/v2/{name} {verb} (dry run): {message}");
                    // What a cluster's own dry run refused would fail for
                    // real: said, and the exit code says so too.
                    let refused: Vec<_> = status
                        .map(|s| {
                            s.plan
                                .iter()
                                .filter(|p| p.dry_run.starts_with("refused"))
                                .collect()
                        })
                        .unwrap_or_default();
                    for planned in &refused {
                        let object = serde_json::to_value(&planned.object).unwrap_or_default();
                        let text =
                            |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                        eprintln!(
                            "  {} {} {} in {}: {}",
                            planned.action,
                            text(&object["kind"]),
                            text(&object["metadata"]["name"]),
                            planned.cluster_id,
                            planned.dry_run
                        );
                    }
                    if !refused.is_empty() {
                        failed += 1;
                    }
                } else {
                    println!("release.asm/v2/{name} {verb}");
                }
            }
            Err(error) => {
                failed += 1;
                match error.downcast_ref::<crate::errors::ServerError>() {
                    Some(server) => eprintln!("{origin}: {server}"),
                    None => eprintln!("{origin}: error: {error:#}"),
                }
            }
        }
    }
    if failed > 0 {
        return Err(Reported.into());
    }
    Ok(())
}

/// Creates or updates one release; says which (`created`, `configured`,
/// `unchanged`).
async fn apply_one(
    api: &Api,
    connection: &Connection,
    document: Document,
    dry_run: bool,
) -> anyhow::Result<(pb::Release, &'static str)> {
    let mut release = document.release;
    let metadata = release.metadata.get_or_insert_with(Default::default);
    let namespace = pick(
        "namespace",
        &metadata.namespace,
        Some(connection.namespace.as_str()),
    )?;
    // As kubectl does: a manifest without a namespace goes to the chosen one.
    metadata.namespace.clone_from(&namespace);
    let metadata = metadata.clone();
    let mesh = pick("mesh", &metadata.mesh_id, connection.mesh.as_deref())?;
    let existing = api
        .find(&mesh, &namespace, &metadata.name)
        .await
        .via(&api.server)?;
    match existing {
        None => {
            let created = api
                .create(pb::CreateReleaseRequest {
                    mesh_id: mesh,
                    namespace,
                    release: Some(release),
                    dry_run,
                })
                .await
                .via(&api.server)?;
            Ok((created, "created"))
        }
        Some(current) => {
            let updated = api
                .update(pb::UpdateReleaseRequest {
                    mesh_id: mesh,
                    namespace,
                    name: metadata.name.clone(),
                    release: Some(release),
                    dry_run,
                })
                .await
                .map_err(|status| over_hint(status, &current))
                .via(&api.server)?;
            let generation = |r: &pb::Release| r.metadata.as_ref().map_or(0, |m| m.generation);
            let verb = if generation(&updated) == generation(&current) {
                "unchanged"
            } else {
                "configured"
            };
            Ok((updated, verb))
        }
    }
}

/// The manifest's mesh or namespace, else the connection's.
fn pick(what: &str, in_manifest: &str, from_connection: Option<&str>) -> anyhow::Result<String> {
    match (in_manifest, from_connection) {
        ("", Some(value)) => Ok(value.to_owned()),
        ("", None) => Err(anyhow::anyhow!(
            "no {what}: the manifest names none and none is set (--{what}, MESHRELEASE_{})",
            what.to_uppercase()
        )),
        (value, _) => Ok(value.to_owned()),
    }
}

/// A release that is over keeps its name: say so instead of only refusing.
fn over_hint(status: Status, current: &pb::Release) -> Status {
    let phase = current.status.as_ref().map_or("", |s| s.phase.as_str());
    if matches!(phase, "Ended" | "Canceled") && status.code() == tonic::Code::FailedPrecondition {
        let name = current.metadata.as_ref().map_or("", |m| m.name.as_str());
        return Status::with_details(
            status.code(),
            format!(
                "{} (release {name:?} is {phase}; `mrctl delete {name}` removes its record so that the name can be used again)",
                status.message()
            ),
            status.details().to_vec().into(),
        );
    }
    status
}
