//! `mrctl` as pipelines and people use it, against the real service driving
//! simulated clusters.

#![allow(unreachable_pub)]

mod harness;

use std::io::{BufRead as _, BufReader};
use std::time::Duration;

use harness::{MESH, READER_TOKEN, manifest, world};
use serde_json::Value;

fn phase(release: &Value) -> &str {
    release["status"]["phase"].as_str().unwrap_or("")
}

fn never_ready_in_time(text: &str) -> String {
    text.replace(
        "replicas: 2\n",
        "replicas: 2\n          progressDeadlineSeconds: 1\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_applies_waits_promotes_and_ends() {
    let world = world().await;
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    let out = world.run(&["apply", "-f", &file]).await.success();
    assert_eq!(out, "release.asm/v2/reviews-canary created\n");

    world
        .run(&[
            "wait",
            "reviews-canary",
            "--for=condition=GrayReady",
            "--timeout=1m",
        ])
        .await
        .success();
    let run = world
        .run(&[
            "wait",
            "reviews-canary",
            "--for=phase=Running",
            "--timeout=1m",
        ])
        .await;
    let out = run.success();
    assert!(
        out.ends_with("release.asm/v2/reviews-canary condition met\n"),
        "{run}"
    );
    // Not a terminal: progress comes as plain lines, not rewritten in place.
    assert!(!out.contains('\r'), "{run}");

    let run = world
        .run(&[
            "promote",
            "reviews-canary",
            "--steps",
            "20,50,100",
            "--interval",
            "200ms",
            "--end",
        ])
        .await;
    let out = run.success();
    for step in [
        "step 1/3: 20% of requests go to the gray version",
        "step 2/3: 50% of requests go to the gray version",
        "step 3/3: 100% of requests go to the gray version",
        "release.asm/v2/reviews-canary Ended: the gray version took over",
    ] {
        assert!(out.contains(step), "{step:?} missing: {run}");
    }
    let ended = world.release("reviews-canary").await;
    assert_eq!(phase(&ended), "Ended", "{ended}");
    assert_eq!(ended["status"]["traffic"]["weight"], 100);
    assert_eq!(world.reviews_routes().await, vec![("v2".to_owned(), 100)]);

    let run = world.run(&["describe", "release", "reviews-canary"]).await;
    let out = run.success();
    let history: Vec<&str> = out
        .split("Phase History:\n")
        .nth(1)
        .and_then(|rest| rest.split("Conditions:").next())
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        history,
        ["Pending", "Deploying", "Running", "Ending", "Ended"],
        "{run}"
    );
    for line in [
        "Phase:            Ended",
        "Applied:        weight 100% to the gray version",
        "GrayReady",
        "cluster-b   default     reviews-v1-v2   2/2",
    ] {
        assert!(out.contains(line), "{line:?} missing: {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_format_reads_back() {
    let world = world().await;
    let text = format!(
        "{}---\n{}",
        manifest("reviews-canary", "reviews", ""),
        manifest("ratings-canary", "ratings", "")
    );
    let file = world.file("two.yaml", &text);
    world.run(&["apply", "-f", &file]).await.success();

    let json: Value = serde_json::from_str(
        &world
            .run(&["get", "releases", "-o", "json"])
            .await
            .success(),
    )
    .unwrap();
    assert_eq!(json["kind"], "ReleaseList");
    let mut names: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ratings-canary", "reviews-canary"]);
    assert_eq!(json["items"][0]["metadata"]["meshID"], MESH);

    let yaml = world
        .run(&["get", "releases", "ratings-canary", "-o", "yaml"])
        .await
        .success();
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml["spec"]["serviceName"], "ratings");
    assert_eq!(from_yaml["apiVersion"], "asm/v2");

    let names = world
        .run(&["get", "releases", "-o", "name"])
        .await
        .success();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "release.asm/v2/ratings-canary",
            "release.asm/v2/reviews-canary"
        ]
    );

    world
        .until("reviews-canary", |r| phase(r) == "Running")
        .await;
    let table = world
        .run(&["get", "releases", "-o", "wide"])
        .await
        .success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SERVICE",
            "TYPE",
            "VERSION",
            "PHASE",
            "TRAFFIC",
            "STEP",
            "WAITING",
            "AGE",
            "GRAY-READY",
            "CLUSTER",
            "DEPLOYMENT",
            "GENERATION"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("reviews-canary "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[1..8],
        ["reviews", "canary", "v2", "Running", "0%", "-", "-"]
    );
    assert_eq!(row[9..], ["2/2", "cluster-a", "reviews-v1", "1/1"]);

    let all = world.run(&["get", "releases", "-A"]).await.success();
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    let none = world.run(&["get", "releases", "-n", "elsewhere"]).await;
    assert_eq!(none.success(), "");
    assert!(none.stderr().contains("No releases found"), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_is_reported_field_by_field_and_the_others_still_apply() {
    let world = world().await;
    let bad = r#"metadata: {name: bad-one}
spec: {serviceName: Bad_Name, clusterID: nowhere, deploymentName: reviews-v1, version: v2, type: sideways, grayDeployments: []}
"#;
    let text = format!(
        "{}---\n{bad}---\n{}",
        manifest("first-one", "reviews", ""),
        manifest("third-one", "ratings", "")
    );
    let file = world.file("mixed.yaml", &text);
    let run = world.run(&["apply", "-f", &file]).await;
    let err = run.fails_with(1);
    assert_eq!(
        run.stdout(),
        "release.asm/v2/first-one created\nrelease.asm/v2/third-one created\n"
    );
    assert!(
        err.contains("mixed.yaml: document 2: Error from server (BadRequest)"),
        "{run}"
    );
    assert!(err.contains("[ASM.01010001]"), "{run}");
    for violation in [
        "\n  spec.serviceName: ",
        "\n  spec.clusterID: \"nowhere\" is not a cluster of mesh \"demo-mesh\"",
        "\n  spec.type: must be \"canary\" or \"blue-green\"",
        "\n  spec.grayDeployments: ",
    ] {
        assert!(err.contains(violation), "{violation:?} missing: {run}");
    }
    let names = world
        .run(&["get", "releases", "-o", "name"])
        .await
        .success();
    assert!(!names.contains("bad-one"), "{names}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_read_applies_nothing() {
    let world = world().await;
    let text = format!(
        "{}---\n{}",
        manifest("first-one", "reviews", ""),
        manifest("second-one", "ratings", "\n  trafficPolicy: {weight: lots}")
    );
    let file = world.file("broken.yaml", &text);
    let run = world.run(&["apply", "-f", &file]).await;
    let err = run.fails_with(1);
    assert!(
        err.contains("broken.yaml: document 2: spec.trafficPolicy.weight: "),
        "{run}"
    );
    assert_eq!(run.stdout(), "");
    let names = world
        .run(&["get", "releases", "-o", "name"])
        .await
        .success();
    assert_eq!(names, "", "nothing was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_again_updates_or_says_unchanged_and_reads_stdin_and_json() {
    let world = world().await;
    let text = manifest("reviews-canary", "reviews", "");
    let file = world.file("canary.yaml", &text);
    world.run(&["apply", "-f", &file]).await.success();
    let again = world.run(&["apply", "-f", &file]).await.success();
    assert_eq!(again, "release.asm/v2/reviews-canary unchanged\n");

    // A new image, as JSON, from standard input.
    let mut release: Value = serde_yaml_ng::from_str(&text).unwrap();
    release["spec"]["grayDeployments"][0]["template"]["spec"]["template"]["spec"]["containers"]
        [0]["image"] = "reviews:3".into();
    let mut command = world.command();
    command.write_stdin(serde_json::to_string(&release).unwrap());
    let run = world.run_with(command, &["apply", "-f", "-"]).await;
    assert_eq!(run.success(), "release.asm/v2/reviews-canary configured\n");
    let stored = world.release("reviews-canary").await;
    assert_eq!(stored["metadata"]["generation"], 2);
    assert_eq!(
        stored["spec"]["grayDeployments"][0]["template"]["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "reviews:3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_release_and_its_planned_objects_and_stores_nothing() {
    let world = world().await;
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    let run = world
        .run(&["apply", "-f", &file, "--dry-run", "-o", "json"])
        .await;
    let would_be: Value = serde_json::from_str(&run.success()).unwrap();
    assert!(
        run.stderr()
            .contains("release.asm/v2/reviews-canary created (dry run)"),
        "{run}"
    );
    assert_eq!(would_be["metadata"]["name"], "reviews-canary");
    let plan = would_be["status"]["plan"].as_array().expect("a plan");
    assert!(
        plan.iter().any(|p| p["clusterID"] == "cluster-b"
            && p["action"] == "apply"
            && p["object"]["kind"] == "Deployment"
            && p["object"]["metadata"]["name"] == "reviews-v1-v2"),
        "{plan:?}"
    );
    let yaml = world
        .run(&["apply", "-f", &file, "--dry-run"])
        .await
        .success();
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let planned = |release: &Value| -> Vec<(String, String, String)> {
        release["status"]["plan"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["clusterID"].as_str().unwrap().to_owned(),
                    p["action"].as_str().unwrap().to_owned(),
                    p["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(planned(&from_yaml), planned(&would_be));
    // With the clusters connected: the routing too, each change accepted by
    // its cluster's own dry run, and said so.
    assert!(
        plan.iter().any(|p| p["object"]["kind"] == "VirtualService"),
        "{plan:?}"
    );
    assert!(plan.iter().all(|p| p["dryRun"] == "accepted"), "{plan:?}");
    assert!(run.stderr().contains("nothing was written"), "{run}");
    // A change a cluster would refuse (an admission webhook): named, and
    // exit 1, with nothing stored.
    world
        .b
        .faults()
        .deny_writes(Some("images must come from registry.internal"));
    let run = world.run(&["apply", "-f", &file, "--dry-run"]).await;
    let refused = run.fails_with(1);
    assert!(
        refused.contains("apply Deployment reviews-v1-v2 in cluster-b: refused: ")
            && refused.contains("registry.internal"),
        "{run}"
    );
    world.b.faults().deny_writes(None);
    assert_eq!(
        world
            .run(&["get", "releases", "-o", "name"])
            .await
            .success(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_when_reached_1_when_failed_or_impossible_2_on_timeout() {
    let world = world().await;
    world.b.faults().set_never_ready(true);
    let doomed = world.file(
        "doomed.yaml",
        &never_ready_in_time(&manifest("doomed", "reviews", "")),
    );
    let slow = world.file("slow.yaml", &manifest("slow", "ratings", ""));
    world
        .run(&["apply", "-f", &doomed, "-f", &slow])
        .await
        .success();

    let run = world
        .run(&["wait", "doomed", "--for=phase=Running", "--timeout=1m"])
        .await;
    let err = run.fails_with(1);
    assert!(
        err.contains("release \"doomed\" failed (ProgressDeadlineExceeded"),
        "{run}"
    );
    assert!(
        run.stdout()
            .contains("Waiting for release \"doomed\" to be Running: "),
        "{run}"
    );

    let run = world
        .run(&["wait", "slow", "--for=phase=Running", "--timeout=1s"])
        .await;
    let err = run.fails_with(2);
    assert!(
        err.contains("timed out after 1s waiting for release \"slow\" to be Running"),
        "{run}"
    );
    assert!(err.contains("0 of 2 gray replicas ready"), "{run}");

    // Failed can still be waited for, and is reached.
    world
        .run(&["wait", "doomed", "--for=phase=Failed", "--timeout=10s"])
        .await
        .success();
    let run = world.run(&["wait", "nowhere", "--for=phase=Running"]).await;
    assert!(run.fails_with(1).contains("not found"), "{run}");
    // A --for that does not read is a usage error (64), as documented.
    let run = world.run(&["wait", "slow", "--for=phase=Done"]).await;
    assert!(run.fails_with(64).contains("is not a phase"), "{run}");
    let run = world.run(&["wait", "slow", "--for=Running"]).await;
    assert!(
        run.fails_with(64).contains("did you mean phase=Running?"),
        "{run}"
    );
    // The connection came from the environment: the usage line does not
    // list it as if it had to be typed.
    let run = world.run(&["delete"]).await;
    let usage = run.fails_with(64);
    assert!(usage.contains("Usage: mrctl delete <NAME>"), "{run}");
    assert!(!usage.contains("--server"), "{run}");
    // A release that is not over: said once, in mrctl's words.
    let run = world.run(&["delete", "slow"]).await;
    let refused = run.fails_with(1);
    assert!(
        refused.contains("`mrctl cancel slow`") && refused.contains("`mrctl end slow`"),
        "{run}"
    );
    assert!(!refused.contains("action"), "{run}");
    assert_eq!(refused.matches("not over").count(), 1, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_stops_when_the_release_fails_midway() {
    let world = world().await;
    let file = world.file("canary.yaml", &manifest("stormed", "reviews", ""));
    world.run(&["apply", "-f", &file]).await.success();
    let command = world.command();
    let promote = {
        let args = [
            "promote",
            "stormed",
            "--steps",
            "10,50,100",
            "--interval",
            "2s",
        ];
        let mut command = command;
        command.args(args);
        tokio::task::spawn_blocking(move || command.output())
    };
    // Step 1 is in the clusters: from now on no write gets through.
    for _ in 0..600 {
        if world
            .reviews_routes()
            .await
            .contains(&("v2".to_owned(), 10))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.a.faults().conflict_next(u32::MAX);
    let run = harness::Run(promote.await.unwrap().unwrap());
    let err = run.fails_with(1);
    assert!(run.stdout().contains("step 1/3: 10%"), "{run}");
    assert!(!run.stdout().contains("step 2/3"), "{run}");
    assert!(err.contains("release \"stormed\" failed"), "{run}");
    assert!(err.contains("did not clear after 8 tries"), "{run}");
    assert_eq!(phase(&world.release("stormed").await), "Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_cancels_a_failed_release_when_asked() {
    let world = world().await;
    world.b.faults().set_never_ready(true);
    let file = world.file(
        "doomed.yaml",
        &never_ready_in_time(&manifest("doomed", "reviews", "")),
    );
    world.run(&["apply", "-f", &file]).await.success();
    let run = world
        .run(&[
            "promote",
            "doomed",
            "--steps",
            "50,100",
            "--cancel-on-failure",
            "--timeout",
            "1m",
        ])
        .await;
    let err = run.fails_with(1);
    assert!(err.contains("rolling it back and canceling it"), "{run}");
    assert!(err.contains("release.asm/v2/doomed Canceled"), "{run}");
    assert!(
        err.contains("release \"doomed\" failed (ProgressDeadlineExceeded"),
        "{run}"
    );
    assert_eq!(phase(&world.release("doomed").await), "Canceled");
    assert!(
        world
            .b
            .get(
                simcluster::resources::DEPLOYMENTS,
                "default",
                "reviews-v1-v2"
            )
            .await
            .is_none(),
        "the gray Deployment is gone"
    );
    assert!(
        !world
            .reviews_routes()
            .await
            .iter()
            .any(|(subset, _)| subset == "v2"),
        "no route to the gray version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_end_cancel_and_delete() {
    let world = world().await;
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    world.run(&["apply", "-f", &file]).await.success();
    world
        .until("reviews-canary", |r| phase(r) == "Running")
        .await;

    let out = world
        .run(&[
            "traffic",
            "reviews-canary",
            "--header",
            "X-User=alice",
            "--header-regex",
            "x-group=^beta$",
            "--cookie-regex",
            "^(.*;)?canary=1(;.*)?$",
        ])
        .await
        .success();
    assert_eq!(
        out,
        "release.asm/v2/reviews-canary traffic set to match (1 rule)\n"
    );
    let release = world.release("reviews-canary").await;
    let rule = &release["spec"]["trafficPolicy"]["match"][0];
    assert_eq!(
        rule["headers"][0],
        serde_json::json!({"name": "x-user", "exact": "alice"})
    );
    assert_eq!(
        rule["headers"][1],
        serde_json::json!({"name": "x-group", "regex": "^beta$"})
    );
    assert_eq!(rule["cookie"]["regex"], "^(.*;)?canary=1(;.*)?$");

    let run = world.run(&["end", "reviews-canary"]).await;
    assert!(
        run.fails_with(1).contains("Error from server"),
        "end needs 100% first: {run}"
    );

    let dry = world
        .run(&[
            "traffic",
            "reviews-canary",
            "--takeover",
            "gray",
            "--dry-run",
        ])
        .await
        .success();
    assert_eq!(
        dry,
        "release.asm/v2/reviews-canary traffic set to 100% (dry run)\n"
    );
    assert_eq!(
        world.release("reviews-canary").await["spec"]["trafficPolicy"]["weight"],
        Value::Null
    );

    world
        .run(&["traffic", "reviews-canary", "--takeover", "gray"])
        .await
        .success();
    world
        .until("reviews-canary", |r| {
            r["status"]["traffic"]["weight"] == 100
        })
        .await;
    assert_eq!(
        world.run(&["end", "reviews-canary"]).await.success(),
        "release.asm/v2/reviews-canary Ending\n"
    );
    world
        .run(&[
            "wait",
            "reviews-canary",
            "--for=phase=Ended",
            "--timeout=1m",
        ])
        .await
        .success();
    // What an end did: the original is shown deleted, never as still ready.
    let described = world
        .run(&["describe", "release", "reviews-canary"])
        .await
        .success();
    assert!(
        described
            .lines()
            .any(|l| l.contains("cluster-a") && l.contains("reviews-v1 ") && l.contains("deleted")),
        "the original is not shown deleted:\n{described}"
    );
    assert_eq!(
        world.run(&["delete", "reviews-canary"]).await.success(),
        "release.asm/v2/reviews-canary deleted\n"
    );
    let gone = world.run(&["get", "releases", "reviews-canary"]).await;
    assert!(
        gone.fails_with(1).contains("Error from server (NotFound)"),
        "{gone}"
    );

    let file = world.file("ratings.yaml", &manifest("ratings-canary", "ratings", ""));
    world.run(&["apply", "-f", &file]).await.success();
    world
        .until("ratings-canary", |r| phase(r) == "Running")
        .await;
    world.run(&["cancel", "ratings-canary"]).await.success();
    world
        .run(&[
            "wait",
            "ratings-canary",
            "--for=phase=Canceled",
            "--timeout=1m",
        ])
        .await
        .success();
    // What a cancel did: the gray Deployment is shown deleted, not ready.
    let wide = world
        .run(&["get", "releases", "ratings-canary", "-o", "wide"])
        .await
        .success();
    assert!(
        wide.lines().nth(1).is_some_and(|l| l.contains("deleted")),
        "{wide}"
    );
    let described = world
        .run(&["describe", "release", "ratings-canary"])
        .await
        .success();
    assert!(
        described
            .lines()
            .any(|l| l.contains("ratings-v1-v2") && l.contains("deleted")),
        "{described}"
    );
    assert!(
        !described.contains("every gray Deployment is ready"),
        "{described}"
    );

    // Flags that cannot go together are a usage error, never a timeout's 2.
    let run = world
        .run(&[
            "traffic",
            "ratings-canary",
            "--weight",
            "20",
            "--takeover",
            "gray",
        ])
        .await;
    run.fails_with(64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_line_per_change_when_not_on_a_terminal() {
    let world = world().await;
    let mut child = world.spawn(&["watch", "-o", "json"]);
    let stdout = child.stdout.take().unwrap();
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    world.run(&["apply", "-f", &file]).await.success();
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let phase = event["release"]["status"]["phase"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            seen.push((
                event["type"].as_str().unwrap_or("").to_owned(),
                phase.clone(),
            ));
            if phase == "Running" {
                break;
            }
        }
        seen
    });
    let seen = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .expect("the watch showed Running within a minute")
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        seen.first().map(|(t, _)| t.as_str()),
        Some("ADDED"),
        "{seen:?}"
    );
    let phases: Vec<&str> = seen.iter().map(|(_, p)| p.as_str()).collect();
    for phase in ["Pending", "Deploying", "Running"] {
        assert!(phases.contains(&phase), "{phase} missing: {seen:?}");
    }

    // Without -o: a header, then a row per change (EVENT first).
    let mut child = world.spawn(&["watch", "reviews-canary"]);
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines)
        .await
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[..3], ["EVENT", "NAME", "SERVICE"], "{lines:?}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..6],
        [
            "ADDED",
            "reviews-canary",
            "reviews",
            "canary",
            "v2",
            "Running"
        ],
        "{lines:?}"
    );
}

/// Reads lines of `from` on a thread, into a channel.
fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// Waits (bounded) for a line containing `needle`; answers it.
async fn line_with(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        match lines.try_recv() {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("no line with {needle:?} within a minute; saw: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_says_when_the_service_is_gone_and_comes_back_and_starts_over_on_a_new_store() {
    let mut world = world().await;
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    world.run(&["apply", "-f", &file]).await.success();
    let mut child = world.spawn(&["watch", "-o", "name"]);
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    line_with(&stdout, "reviews-canary").await;

    // The service stops: mrctl says so on stderr, with the time.
    world.stop_server();
    let lost = line_with(&stderr, "not reachable since").await;
    assert!(lost.contains("UTC"), "{lost}");
    // It comes back on its own data: mrctl says so and follows on.
    world.start_server(false).await;
    line_with(&stderr, "answers again").await;
    let file = world.file("ratings.yaml", &manifest("ratings-canary", "ratings", ""));
    world.run(&["apply", "-f", &file]).await.success();
    line_with(&stdout, "ratings-canary").await;

    // Gone again, and back on a new data directory: the resume point is
    // not one the new store gave, so mrctl starts over from what it holds.
    world.stop_server();
    line_with(&stderr, "not reachable since").await;
    world.start_server(true).await;
    line_with(&stderr, "answers again").await;
    let file = world.file("details.yaml", &manifest("fresh-canary", "reviews", ""));
    world.run(&["apply", "-f", &file]).await.success();
    line_with(&stdout, "ADDED release.asm/v2/fresh-canary").await;
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_environment_then_the_context_and_the_token_is_never_printed()
{
    let world = world().await;
    let token_file = world.file("token", &format!("{}\n", harness::TOKEN));
    // A context with everything, and no environment at all.
    let mut bare = world.command();
    bare.env_remove("MESHRELEASE_SERVER")
        .env_remove("MESHRELEASE_TOKEN")
        .env_remove("MESHRELEASE_MESH");
    let run = world
        .run_with(
            bare,
            &[
                "config",
                "set-context",
                "ci",
                "--set-server",
                &world.server,
                "--set-mesh",
                MESH,
                "--set-token-file",
                &token_file,
            ],
        )
        .await;
    assert_eq!(run.success(), "Context \"ci\" created.\n");
    let mut bare = world.command();
    bare.env_remove("MESHRELEASE_SERVER")
        .env_remove("MESHRELEASE_TOKEN")
        .env_remove("MESHRELEASE_MESH");
    let run = world.run_with(bare, &["get", "releases"]).await;
    assert!(
        run.fails_with(1).contains(
            "no mesh given: pass --mesh, set MESHRELEASE_MESH, or set one in the context"
        ),
        "no current context yet: {run}"
    );
    world.run(&["config", "use-context", "ci"]).await.success();
    let mut bare = world.command();
    bare.env_remove("MESHRELEASE_SERVER")
        .env_remove("MESHRELEASE_TOKEN")
        .env_remove("MESHRELEASE_MESH");
    let run = world.run_with(bare, &["get", "releases"]).await;
    assert!(
        run.success().is_empty()
            && run
                .stderr()
                .contains("No releases found in mesh \"demo-mesh\""),
        "{run}"
    );

    // The environment beats the context, and a flag beats the environment.
    let mut reader = world.command();
    reader.env("MESHRELEASE_TOKEN", READER_TOKEN);
    let file = world.file("canary.yaml", &manifest("reviews-canary", "reviews", ""));
    let run = world.run_with(reader, &["apply", "-f", &file]).await;
    assert!(
        run.fails_with(1).contains("Error from server (Forbidden)"),
        "{run}"
    );
    let mut reader = world.command();
    reader.env("MESHRELEASE_TOKEN", READER_TOKEN);
    world
        .run_with(reader, &["apply", "-f", &file, "--token-file", &token_file])
        .await
        .success();
    let mut wrong_mesh = world.command();
    wrong_mesh.env("MESHRELEASE_MESH", "no-such-mesh");
    let run = world
        .run_with(
            wrong_mesh,
            &["get", "releases", "--mesh", MESH, "-o", "name"],
        )
        .await;
    assert_eq!(run.success(), "release.asm/v2/reviews-canary\n");

    // A bad token: refused, with a hint, and never echoed.
    let run = world
        .run(&["get", "releases", "--token", "s3cr3t-wrong"])
        .await;
    let err = run.fails_with(1);
    assert!(err.contains("Error from server (Unauthorized)"), "{run}");
    assert!(
        !err.contains("s3cr3t-wrong") && !run.stdout().contains("s3cr3t-wrong"),
        "{run}"
    );
    std::fs::write(
        world.dir.path().join("mrctl.yaml"),
        format!(
            "current-context: ci\ncontexts:\n- name: ci\n  server: {}\n  token: inline-s3cr3t\n",
            world.server
        ),
    )
    .unwrap();
    let view = world.run(&["config", "view"]).await.success();
    assert!(
        view.contains("token: REDACTED") && !view.contains("inline-s3cr3t"),
        "{view}"
    );
    let help = world.run(&["get", "--help"]).await.success();
    assert!(!help.contains(harness::TOKEN), "{help}");
    let contexts = world.run(&["config", "get-contexts"]).await.success();
    assert!(
        contexts.lines().nth(1).unwrap().starts_with("*         ci"),
        "{contexts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_bash_zsh_and_fish() {
    let world = world().await;
    for shell in ["bash", "zsh", "fish"] {
        let script = world.run(&["completion", shell]).await.success();
        assert!(
            script.contains("promote") && script.contains("cancel-on-failure"),
            "{shell}: {script}"
        );
    }
    world.run(&["completion", "tcsh"]).await.fails_with(64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_address_speaks_tls() {
    let world = world().await;
    // A listener that records what the client's first bytes are.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 3];
        socket.read_exact(&mut head).await.unwrap();
        head
    });
    let server = format!("https://localhost:{}", address.port());
    let run = world
        .run(&[
            "get",
            "releases",
            "--server",
            &server,
            "--request-timeout",
            "2s",
        ])
        .await;
    run.fails_with(1);
    let head = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .unwrap()
        .unwrap();
    // A TLS record of type handshake (22), version 3.x: a ClientHello.
    assert_eq!(head[..2], [0x16, 0x03], "{run}");
    let run = world
        .run(&["get", "releases", "--server", "ftp://example"])
        .await;
    assert!(
        run.fails_with(1)
            .contains("must start with http:// (plaintext) or https:// (TLS)"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_runs_itself_is_paused_resumed_promoted_aborted_and_retried() {
    let world = world().await;
    let strategy = "
  strategy:
    steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 50
      - pause: {duration: 1h}
      - setWeight: 80
      - pause: {}
      - setWeight: 100
    analysis: {interval: 1s}";
    // Every state the actions are taken in is a wait (a pause), so that no
    // round can move the release on between an action and the next.
    let file = world.file("runs.yaml", &manifest("runs-itself", "reviews", strategy));
    world.run(&["apply", "-f", &file]).await.success();
    world
        .until("runs-itself", |r| {
            r["status"]["strategy"]["pauseReason"] == "WaitingForResume"
        })
        .await;
    let table = world
        .run(&["get", "releases", "runs-itself"])
        .await
        .success();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[6..8], ["2/7", "WaitingForResume"], "{table}");

    let out = world.run(&["resume", "runs-itself"]).await.success();
    assert!(
        out.starts_with("release.asm/v2/runs-itself resumed: Running, step 3/7"),
        "{out}"
    );
    world
        .until("runs-itself", |r| {
            r["status"]["strategy"]["currentStep"] == 3
        })
        .await;
    let out = world.run(&["pause", "runs-itself"]).await.success();
    assert!(
        out.contains("paused") && out.contains("(PausedByUser)"),
        "{out}"
    );
    let described = world
        .run(&["describe", "release", "runs-itself"])
        .await
        .success();
    assert!(described.contains("Strategy:"), "{described}");
    assert!(described.contains("->     4/7 pause 1h"), "{described}");
    assert!(described.contains("done 1/7 setWeight 20"), "{described}");
    assert!(
        described.contains("Waiting:        PausedByUser"),
        "{described}"
    );

    let out = world.run(&["promote", "runs-itself"]).await.success();
    assert!(out.contains("promoted: Running, step 5/7"), "{out}");
    let out = world.run(&["abort", "runs-itself"]).await.success();
    assert!(out.contains("aborted: Failed"), "{out}");
    world
        .run(&[
            "wait",
            "runs-itself",
            "--for=condition=Failed",
            "--timeout=1m",
        ])
        .await
        .success();
    let out = world.run(&["retry", "runs-itself"]).await.success();
    assert!(out.contains("retried: Running, step 1/7"), "{out}");
    world
        .until("runs-itself", |r| {
            r["status"]["strategy"]["pauseReason"] == "WaitingForResume"
        })
        .await;
    let out = world
        .run(&["promote", "runs-itself", "--full"])
        .await
        .success();
    assert!(out.contains("promoted in full"), "{out}");
    world
        .run(&["wait", "runs-itself", "--for=phase=Ended", "--timeout=1m"])
        .await
        .success();

    // Without a strategy, the service says what to do instead.
    let file = world.file("plain.yaml", &manifest("plain-one", "ratings", ""));
    world.run(&["apply", "-f", &file]).await.success();
    let refused = world.run(&["pause", "plain-one"]).await;
    assert!(refused.fails_with(1).contains("spec.strategy"), "{refused}");
    // --full and --steps do not go together.
    world
        .run(&["promote", "plain-one", "--full", "--steps", "10,100"])
        .await
        .fails_with(64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_what_each_check_decided_on_and_the_query_it_sent() {
    let world = world().await;
    let strategy = "
  strategy:
    steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 100
    analysis:
      interval: 1s
      metrics:
        - {name: success-rate, builtin: successRate, min: 99}";
    let file = world.file("judged.yaml", &manifest("judged", "reviews", strategy));
    world.run(&["apply", "-f", &file]).await.success();
    // The mesh's Prometheus is not there: the check says so, and holds.
    world
        .until("judged", |r| {
            r["status"]["strategy"]["checks"][0]["verdict"] == "Error"
        })
        .await;
    let described = world
        .run(&["describe", "release", "judged"])
        .await
        .success();
    let header = described
        .lines()
        .find(|l| l.contains("VERDICT"))
        .unwrap_or_else(|| panic!("{described}"));
    for column in [
        "NAME", "TYPE", "VALUE", "BOUNDS", "REQUESTS", "ROUND", "MESSAGE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = described
        .lines()
        .find(|l| l.trim_start().starts_with("success-rate") && l.contains("Error"))
        .unwrap_or_else(|| panic!("{described}"));
    assert!(row.contains("99.."), "the threshold: {row}");
    assert!(
        row.contains("Prometheus is not reachable at http://127.0.0.1:1/"),
        "{row}"
    );
    assert!(
        described.contains("Queries (as sent to Prometheus):")
            && described.contains(
                r#"success-rate: 100 * (sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="default",destination_workload="reviews-v1-v2",response_code!~"5.."}"#
            ),
        "{described}"
    );
}
