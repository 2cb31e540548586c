//! `mrctl traffic`, `end`, `cancel` and `delete`: one request each.

use anyhow::bail;
use meshrelease_wire::asm::v2 as pb;

use crate::api::Api;
use crate::cli::{Takeover, TrafficArgs};
use crate::errors::ServerResult as _;
use crate::output;

pub async fn set(api: &Api, mesh: &str, namespace: &str, args: &TrafficArgs) -> anyhow::Result<()> {
    let policy = policy(args)?;
    let release = api
        .set_traffic(mesh, namespace, &args.name, policy, args.dry_run)
        .await
        .via(&api.server)?;
    let desired = output::traffic(
        release
            .spec
            .as_ref()
            .and_then(|s| s.traffic_policy.as_ref()),
    );
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    println!(
        "release.asm/v2/{} traffic set to {desired}{suffix}",
        args.name
    );
    Ok(())
}

/// The policy the flags describe: a weight, or one match rule whose parts
/// must all hold.
fn policy(args: &TrafficArgs) -> anyhow::Result<pb::TrafficPolicy> {
    let weight = match args.takeover {
        Some(Takeover::Gray) => Some(100),
        Some(Takeover::Original) => Some(0),
        None => args.weight,
    };
    if let Some(weight) = weight {
        return Ok(pb::TrafficPolicy {
            weight: Some(weight),
            r#match: Vec::new(),
        });
    }
    let mut rule = pb::MatchRule::default();
    for (flag, values, exact) in [
        ("--header", &args.header, true),
        ("--header-regex", &args.header_regex, false),
    ] {
        for value in values {
            let Some((name, text)) = value.split_once('=').filter(|(n, _)| !n.is_empty()) else {
                bail!("{flag} takes NAME=VALUE, not {value:?}");
            };
            rule.headers.push(pb::StringMatch {
                name: name.to_ascii_lowercase(),
                exact: exact.then(|| text.to_owned()),
                regex: (!exact).then(|| text.to_owned()),
            });
        }
    }
    if let Some(regex) = &args.cookie_regex {
        rule.cookie = Some(pb::CookieMatch {
            regex: regex.clone(),
        });
    }
    Ok(pb::TrafficPolicy {
        weight: None,
        r#match: vec![rule],
    })
}

/// `end` and `cancel` (an action), or `delete` (none).
pub async fn finish(
    api: &Api,
    mesh: &str,
    namespace: &str,
    name: &str,
    action: &str,
) -> anyhow::Result<()> {
    let release = match api.delete(mesh, namespace, name, action).await {
        // `delete` sends no action: the server's word for "not over" names
        // a field this command does not have. Say it in mrctl's words.
        Err(status) if action.is_empty() && status.code() == tonic::Code::InvalidArgument => {
            let details = tonic_types::StatusExt::get_error_details(&status);
            if details
                .bad_request()
                .is_some_and(|bad| bad.field_violations.iter().any(|v| v.field == "action"))
            {
                bail!(
                    "release {name:?} is not over, so its record cannot be removed yet: \
                     `mrctl cancel {name}` (the original version keeps all traffic) or \
                     `mrctl end {name}` (the gray version takes over) first"
                );
            }
            return Err(status).via(&api.server).map_err(Into::into);
        }
        answer => answer.via(&api.server)?,
    };
    let phase = release.status.as_ref().map_or("", |s| s.phase.as_str());
    match action {
        "" => println!("release.asm/v2/{name} deleted"),
        _ => println!("release.asm/v2/{name} {phase}"),
    }
    Ok(())
}
