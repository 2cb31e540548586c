//! `mrctl get` and `mrctl watch`: releases as tables, JSON, YAML or names.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};

use meshrelease_wire::asm::v2 as pb;
use meshrelease_wire::list::ReleaseList;

use crate::api::Api;
use crate::cli::{Format, GetArgs, WatchArgs};
use crate::errors::ServerResult as _;
use crate::follow::{self, Followed, Follower};
use crate::output;

pub async fn get(api: &Api, mesh: &str, namespace: &str, args: &GetArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        let release = api.get(mesh, namespace, name).await.via(&api.server)?;
        return print_one(&release, args.output);
    }
    let releases = api
        .list(pb::ListReleasesRequest {
            mesh_id: mesh.to_owned(),
            namespace: if args.all_namespaces {
                String::new()
            } else {
                namespace.to_owned()
            },
            service_name: args.service.clone().unwrap_or_default(),
            phase: args.phase.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .via(&api.server)?;
    match args.output {
        Some(Format::Json | Format::Yaml) => {
            let list = ReleaseList {
                kind: "ReleaseList".into(),
                api_version: "asm/v2".into(),
                metadata: Some(pb::ListMeta::default()),
                items: releases,
            };
            print!(
                "{}",
                if args.output == Some(Format::Json) {
                    output::json(&list)?
                } else {
                    output::yaml(&list)?
                }
            );
        }
        Some(Format::Name) => {
            for release in &releases {
                println!("{}", output::qualified(release));
            }
        }
        Some(Format::Wide) | None => {
            if releases.is_empty() {
                match args.all_namespaces {
                    true => eprintln!("No releases found in mesh {mesh:?}."),
                    false => {
                        eprintln!("No releases found in mesh {mesh:?}, namespace {namespace:?}.")
                    }
                }
                return Ok(());
            }
            let wide = args.output == Some(Format::Wide);
            let mut rows = vec![output::header(wide, args.all_namespaces)];
            rows.extend(
                releases
                    .iter()
                    .map(|r| output::row(r, wide, args.all_namespaces)),
            );
            print!("{}", output::table(&rows));
        }
    }
    Ok(())
}

fn print_one(release: &pb::Release, format: Option<Format>) -> anyhow::Result<()> {
    match format {
        Some(Format::Json) => print!("{}", output::json(release)?),
        Some(Format::Yaml) => print!("{}", output::yaml(release)?),
        Some(Format::Name) => println!("{}", output::qualified(release)),
        Some(Format::Wide) | None => {
            let wide = format == Some(Format::Wide);
            print!(
                "{}",
                output::table(&[
                    output::header(wide, false),
                    output::row(release, wide, false)
                ])
            );
        }
    }
    Ok(())
}

/// `mrctl watch`: on a terminal a table redrawn on every change; elsewhere
/// a row (or, with `-o json|yaml`, the event) per change. Ends on Ctrl-C.
pub async fn watch(api: &Api, mesh: &str, namespace: &str, args: &WatchArgs) -> anyhow::Result<()> {
    let scope = if args.all_namespaces {
        None
    } else {
        Some(namespace)
    };
    let mut follower = Follower::new(api, mesh, scope);
    let live = args.output.is_none_or(|f| f == Format::Wide) && std::io::stdout().is_terminal();
    let wide = args.output == Some(Format::Wide);
    let mut shown: BTreeMap<(String, String), pb::Release> = BTreeMap::new();
    let mut header_printed = false;
    // While the service does not answer: the line that says so, on top of
    // the live table (and on stderr otherwise).
    let mut outage: Option<String> = None;
    if live {
        // Something on the screen at once, even with no release to show.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "\x1b[H\x1b[2J{}(no releases yet: waiting for changes)",
            live_table(&shown, wide, args.all_namespaces)
        )?;
        out.flush()?;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let followed = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            followed = follower.next() => followed?,
        };
        let event = match followed {
            Followed::Event(event) => *event,
            Followed::Lost { since, why } => {
                let line = follow::lost_line(since, &why);
                eprintln!("{line}");
                if live {
                    let mut out = std::io::stdout().lock();
                    write!(
                        out,
                        "\x1b[H\x1b[2J{line}\n\n{}",
                        live_table(&shown, wide, args.all_namespaces)
                    )?;
                    out.flush()?;
                }
                outage = Some(line);
                continue;
            }
            Followed::Back { since } => {
                eprintln!("{}", follow::back_line(since));
                outage = None;
                if live {
                    let mut out = std::io::stdout().lock();
                    write!(
                        out,
                        "\x1b[H\x1b[2J{}",
                        live_table(&shown, wide, args.all_namespaces)
                    )?;
                    out.flush()?;
                }
                continue;
            }
            // The current releases follow again: what was shown may be gone.
            Followed::Restarted => {
                shown.clear();
                continue;
            }
        };
        let Some(release) = event.release.clone() else {
            continue;
        };
        let metadata = release.metadata.clone().unwrap_or_default();
        if args.name.as_ref().is_some_and(|n| *n != metadata.name) {
            continue;
        }
        let mut out = std::io::stdout().lock();
        match args.output {
            Some(Format::Json) => writeln!(out, "{}", serde_json::to_string(&event)?)?,
            Some(Format::Yaml) => write!(out, "---\n{}", output::yaml(&event)?)?,
            Some(Format::Name) => {
                writeln!(out, "{} {}", event.r#type, output::qualified(&release))?
            }
            Some(Format::Wide) | None if live => {
                let key = (metadata.namespace.clone(), metadata.name.clone());
                if event.r#type == "DELETED" {
                    shown.remove(&key);
                } else {
                    shown.insert(key, release);
                }
                // Home, clear the screen, redraw.
                let banner = outage
                    .as_ref()
                    .map(|l| format!("{l}\n\n"))
                    .unwrap_or_default();
                write!(
                    out,
                    "\x1b[H\x1b[2J{banner}{}",
                    live_table(&shown, wide, args.all_namespaces)
                )?;
            }
            Some(Format::Wide) | None => {
                let mut header = output::header(wide, args.all_namespaces);
                header.insert(0, "EVENT".to_owned());
                let mut row = output::row(&release, wide, args.all_namespaces);
                row.insert(0, event.r#type.clone());
                // Each row stands alone (no later row can widen the columns).
                let rows = if header_printed {
                    vec![row]
                } else {
                    vec![header, row]
                };
                header_printed = true;
                write!(out, "{}", output::table(&rows))?;
            }
        }
        out.flush()?;
    }
}

/// The table a live watch redraws.
fn live_table(
    shown: &BTreeMap<(String, String), pb::Release>,
    wide: bool,
    namespaces: bool,
) -> String {
    let mut rows = vec![output::header(wide, namespaces)];
    rows.extend(shown.values().map(|r| output::row(r, wide, namespaces)));
    output::table(&rows)
}
