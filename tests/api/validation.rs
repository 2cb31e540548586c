//! Each rule of the contract, over REST: the field named, nothing stored.

use serde_json::{Value, json};

use crate::helpers::*;

/// Applies `change` to a valid body and returns the fields the 400 names.
async fn violations(app: &TestApp, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut body = release_body("rule-check", "reviews");
    change(&mut body);
    let (status, error) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["errorCode"], "ASM.01010001");
    detail_fields(&error)
}

/// A change to a valid release body.
type Change = Box<dyn FnOnce(&mut Value)>;

fn template(body: &mut Value) -> &mut Value {
    &mut body["spec"]["grayDeployments"][0]["template"]
}

#[tokio::test]
async fn release_level_rules() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Change)> = vec![
        ("kind", Box::new(|b| b["kind"] = json!("Deployment"))),
        (
            "apiVersion",
            Box::new(|b| b["apiVersion"] = json!("asm/v1")),
        ),
        (
            "metadata.meshID",
            Box::new(|b| b["metadata"]["meshID"] = json!("other-mesh")),
        ),
        (
            "metadata.name",
            Box::new(|b| b["metadata"]["name"] = json!("abc")),
        ),
        (
            "metadata.name",
            Box::new(|b| b["metadata"]["name"] = json!("a".repeat(65))),
        ),
        (
            "metadata.name",
            Box::new(|b| b["metadata"]["name"] = json!("9lives")),
        ),
        (
            "metadata.name",
            Box::new(|b| b["metadata"]["name"] = json!("ends-with-")),
        ),
        (
            "metadata.name",
            Box::new(|b| b["metadata"]["name"] = json!("Upper-case")),
        ),
        (
            "metadata.name",
            Box::new(|b| {
                b["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("name")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
        (
            "metadata.namespace",
            Box::new(|b| b["metadata"]["namespace"] = json!("prod")),
        ),
        (
            "metadata.namespace",
            Box::new(|b| {
                b["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("namespace")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
        (
            "spec.serviceName",
            Box::new(|b| b["spec"]["serviceName"] = json!("Reviews_Svc")),
        ),
        (
            "spec.serviceName",
            Box::new(|b| b["spec"]["serviceName"] = json!("")),
        ),
        (
            "spec.clusterID",
            Box::new(|b| b["spec"]["clusterID"] = json!("cluster-z")),
        ),
        (
            "spec.clusterID",
            Box::new(|b| b["spec"]["clusterID"] = json!("")),
        ),
        (
            "spec.deploymentName",
            Box::new(|b| b["spec"]["deploymentName"] = json!("reviews..v1")),
        ),
        (
            "spec.version",
            Box::new(|b| b["spec"]["version"] = json!("v2!")),
        ),
        (
            "spec.version",
            Box::new(|b| b["spec"]["version"] = json!("")),
        ),
        (
            "spec.type",
            Box::new(|b| b["spec"]["type"] = json!("linear")),
        ),
        ("spec.type", Box::new(|b| b["spec"]["type"] = json!(""))),
        (
            "spec.grayDeployments",
            Box::new(|b| b["spec"]["grayDeployments"] = json!([])),
        ),
        (
            "spec.grayDeployments",
            Box::new(|b| {
                let one = b["spec"]["grayDeployments"][0].clone();
                b["spec"]["grayDeployments"] = Value::Array(vec![one; 17]);
            }),
        ),
        (
            "spec.grayDeployments[0].clusterID",
            Box::new(|b| b["spec"]["grayDeployments"][0]["clusterID"] = json!("cluster-z")),
        ),
        (
            "spec.grayDeployments[0].template",
            Box::new(|b| {
                b["spec"]["grayDeployments"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("template")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
    ];
    for (field, change) in cases {
        let got = violations(&app, change).await;
        assert_eq!(
            got.first().map(String::as_str),
            Some(field),
            "expected {field}, got {got:?}"
        );
    }
}

#[tokio::test]
async fn deployment_template_rules() {
    let app = spawn_app().await;
    let t = "spec.grayDeployments[0].template";
    let cases: Vec<(String, Change)> = vec![
        (
            format!("{t}.apiVersion"),
            Box::new(|b| template(b)["apiVersion"] = json!("apps/v1beta1")),
        ),
        (
            format!("{t}.kind"),
            Box::new(|b| template(b)["kind"] = json!("StatefulSet")),
        ),
        (
            format!("{t}.metadata.name"),
            Box::new(|b| template(b)["metadata"]["name"] = json!("Not_Valid")),
        ),
        (
            format!("{t}.metadata.namespace"),
            Box::new(|b| template(b)["metadata"]["namespace"] = json!("elsewhere")),
        ),
        (
            format!("{t}.spec"),
            Box::new(|b| {
                template(b)
                    .as_object_mut()
                    .unwrap()
                    .remove("spec")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
        (
            format!("{t}.spec.replicas"),
            Box::new(|b| template(b)["spec"]["replicas"] = json!(-1)),
        ),
        (
            format!("{t}.spec.replicas"),
            Box::new(|b| template(b)["spec"]["replicas"] = json!(1.5)),
        ),
        (
            format!("{t}.spec.selector"),
            Box::new(|b| template(b)["spec"]["selector"] = json!({})),
        ),
        (
            format!("{t}.spec.selector"),
            Box::new(|b| {
                template(b)["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("selector")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
        (
            format!("{t}.spec.selector"),
            Box::new(|b| template(b)["spec"]["selector"]["matchLabels"]["app"] = json!("other")),
        ),
        (
            format!("{t}.spec.template.metadata.labels.version"),
            Box::new(|b| {
                template(b)["spec"]["template"]["metadata"]["labels"]["version"] = json!("v1")
            }),
        ),
        (
            format!("{t}.spec.template.spec.containers"),
            Box::new(|b| template(b)["spec"]["template"]["spec"]["containers"] = json!([])),
        ),
        (
            format!("{t}.spec.template.spec.containers[0].name"),
            Box::new(|b| {
                template(b)["spec"]["template"]["spec"]["containers"][0]["name"] = json!("")
            }),
        ),
        (
            format!("{t}.spec.template.spec.containers[0].image"),
            Box::new(|b| {
                template(b)["spec"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("image")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
    ];
    for (field, change) in cases {
        let got = violations(&app, change).await;
        assert_eq!(got, vec![field.clone()], "expected only {field}");
    }
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let app = spawn_app().await;
    let got = violations(&app, |b| {
        b["metadata"]["name"] = json!("x");
        b["spec"]["type"] = json!("linear");
        template(b)["spec"]["replicas"] = json!(-3);
        template(b)["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    })
    .await;
    assert_eq!(
        got,
        vec![
            "metadata.name",
            "spec.type",
            "spec.grayDeployments[0].template.spec.replicas",
            "spec.grayDeployments[0].template.spec.template.spec.containers[0].image",
        ]
    );
}

#[tokio::test]
async fn a_matching_version_label_and_selector_on_it_are_fine() {
    let app = spawn_app().await;
    let mut body = release_body("version-label", "reviews");
    template(&mut body)["spec"]["template"]["metadata"]["labels"]["version"] = json!("v2");
    template(&mut body)["spec"]["selector"]["matchLabels"]["version"] = json!("v2");
    template(&mut body)["metadata"]["name"] = json!("reviews-gray");
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["status"]["grayDeployments"][0]["metadata"]["name"],
        "reviews-gray"
    );
}

#[tokio::test]
async fn a_refused_release_is_not_stored() {
    let app = spawn_app().await;
    let mut body = release_body("half-valid", "reviews");
    template(&mut body)["spec"]["replicas"] = json!(-1);
    assert_eq!(app.create(&body).await.status(), 400);
    // Neither the name nor the service was taken.
    assert_eq!(
        app.create(&release_body("half-valid", "reviews"))
            .await
            .status(),
        200
    );
}
