//! AK/SK signed REST requests (`SDK-HMAC-SHA256`): accepted when every
//! signed part is intact, 401 naming the reason otherwise.

use std::path::Path;

use chrono::{TimeDelta, Utc};
use meshrelease::auth::signature;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

pub(crate) const AK: &str = "QTWAOYTTINDUT2QVKYUC";
pub(crate) const SK: &str = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc";
/// May only read, in demo-mesh.
pub(crate) const READER_AK: &str = "READERAK0000000000AB";
pub(crate) const READER_SK: &str = "reader-secret-key-0123456789";

pub(crate) fn secret_file(dir: &Path, name: &str, key: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn spawn_signed_app() -> TestApp {
    let secrets = tempfile::tempdir().unwrap();
    let full = secret_file(secrets.path(), "full.sk", SK);
    let reader = secret_file(secrets.path(), "reader.sk", READER_SK);
    // The keys are read at start-up; the files may go afterwards.
    spawn_app_with(|cli| {
        cli.credentials = Some(format!(
            r#"[
              {{ subject = "sdk-client", access_key = "{AK}", secret_key_file = "{full}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}] }},
              {{ subject = "sdk-reader", access_key = "{READER_AK}", secret_key_file = "{reader}", allow = [{{ actions = ["asm:mesh:getRelease", "asm:mesh:listReleases"], meshes = ["{MESH}"] }}] }}
            ]"#
        ));
    })
    .await
}

/// A request as a client would sign it, before any tampering.
pub(crate) struct Signed {
    method: &'static str,
    path_and_query: String,
    body: Vec<u8>,
    date: String,
    nonce: Option<String>,
    pub(crate) ak: &'static str,
    pub(crate) sk: &'static str,
    /// Signed with X-Sdk-Date among the signed headers.
    sign_date: bool,
    /// The Host signed and sent, when not the server's own address (as
    /// behind a load balancer).
    host: Option<&'static str>,
}

impl Signed {
    pub(crate) fn new(
        method: &'static str,
        path_and_query: impl Into<String>,
        body: Option<&Value>,
    ) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            body: body
                .map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
            date: Utc::now().format(signature::DATE_FORMAT).to_string(),
            nonce: None,
            ak: AK,
            sk: SK,
            sign_date: true,
            host: None,
        }
    }

    /// Signed and sent with `host` as its Host, whichever server gets it.
    pub(crate) fn behind(mut self, host: &'static str) -> Self {
        self.host = Some(host);
        self
    }

    /// The Authorization value for this request as signed.
    fn authorization(&self, host: &str) -> String {
        let (path, query) = match self.path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path_and_query.as_str(), None),
        };
        let mut headers = vec![("host".to_owned(), host.to_owned())];
        if !self.body.is_empty() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        if self.sign_date {
            headers.push(("x-sdk-date".into(), self.date.clone()));
        }
        if let Some(nonce) = &self.nonce {
            headers.push(("x-sdk-nonce".into(), nonce.clone()));
        }
        let names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        let canonical = signature::canonical_request(
            self.method,
            path,
            query,
            &names,
            |name| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            },
            &hex::encode(Sha256::digest(&self.body)),
        )
        .unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        let signature = signature::sign(
            self.sk.as_bytes(),
            &signature::string_to_sign(&self.date, &canonical),
        );
        format!(
            "SDK-HMAC-SHA256 Access={}, SignedHeaders={}, Signature={}",
            self.ak,
            sorted.join(";"),
            hex::encode(signature)
        )
    }

    /// Sends it as signed, with `tamper` changing what is sent afterwards.
    async fn send_with(
        &self,
        app: &TestApp,
        tamper: impl FnOnce(&mut reqwest::Request),
    ) -> (u16, Value) {
        self.send_to_with(&app.http, &app.base, tamper).await
    }

    /// Sends it as signed to the server at `base` (`http://host:port`).
    pub(crate) async fn send_to(&self, base: &str) -> (u16, Value) {
        self.send_to_with(&http_client(), base, |_| {}).await
    }

    async fn send_to_with(
        &self,
        http: &reqwest::Client,
        base: &str,
        tamper: impl FnOnce(&mut reqwest::Request),
    ) -> (u16, Value) {
        let host = self
            .host
            .unwrap_or_else(|| base.trim_start_matches("http://"));
        let mut builder = http
            .request(
                self.method.parse().unwrap(),
                format!("{base}{}", self.path_and_query),
            )
            .header("Host", host)
            .header("Authorization", self.authorization(host))
            .header("X-Sdk-Date", &self.date);
        if !self.body.is_empty() {
            builder = builder
                .header("Content-Type", "application/json")
                .body(self.body.clone());
        }
        if let Some(nonce) = &self.nonce {
            builder = builder.header("X-Sdk-Nonce", nonce);
        }
        let mut request = builder.build().unwrap();
        tamper(&mut request);
        let response = http.execute(request).await.unwrap();
        json_of(response).await
    }

    pub(crate) async fn send(&self, app: &TestApp) -> (u16, Value) {
        self.send_with(app, |_| {}).await
    }
}

pub(crate) fn releases_path(namespace: &str) -> String {
    format!("/v2/meshes/{MESH}/namespaces/{namespace}/releases")
}

pub(crate) fn assert_unauthenticated(answer: &(u16, Value), says: &str) {
    assert_eq!(answer.0, 401, "{answer:?}");
    assert_eq!(answer.1["errorCode"], "ASM.01000001");
    let message = answer.1["errorMsg"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test]
async fn signed_requests_create_get_and_list() {
    let app = spawn_signed_app().await;
    let body = release_body("signed", "reviews");
    let (status, created) = Signed::new("POST", releases_path("default"), Some(&body))
        .send(&app)
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, got) = Signed::new("GET", format!("{}/signed", releases_path("default")), None)
        .send(&app)
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, created);
    // Query parameters are signed in canonical order, whatever order they come in.
    let (status, list) = Signed::new(
        "GET",
        format!("{}?serviceName=reviews&limit=5", releases_path("default")),
        None,
    )
    .send(&app)
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "signed");
}

#[tokio::test]
async fn a_signed_caller_is_held_to_its_own_policy() {
    let app = spawn_signed_app().await;
    let mut request = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("r", "s")),
    );
    request.ak = READER_AK;
    request.sk = READER_SK;
    let (status, body) = request.send(&app).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["errorMsg"].as_str().unwrap().contains("sdk-reader"));
}

#[tokio::test]
async fn any_changed_byte_is_refused_without_revealing_the_signature() {
    let app = spawn_signed_app().await;
    let body = release_body("tampered", "reviews");
    let signed = Signed::new("POST", releases_path("default"), Some(&body));
    let mismatch = "does not match";
    let tamper = |bytes: &mut Vec<u8>| {
        let at = bytes.iter().position(|b| *b == b'v').unwrap();
        bytes[at] = b'w';
    };
    // What the server expects for the tampered request: the signature a
    // client would need, which the answer must not hand out.
    let mut as_received = Signed::new("POST", releases_path("default"), Some(&body));
    as_received.date = signed.date.clone();
    tamper(&mut as_received.body);
    let wanted = as_received.authorization(&app.address.to_string());
    let wanted = wanted.rsplit('=').next().unwrap().to_owned();
    let sent = signed.authorization(&app.address.to_string());
    let sent = sent.rsplit('=').next().unwrap().to_owned();
    assert_ne!(wanted, sent);

    let answer = signed
        .send_with(&app, |r| {
            let mut bytes = r.body().unwrap().as_bytes().unwrap().to_vec();
            tamper(&mut bytes);
            *r.body_mut() = Some(bytes.into());
        })
        .await;
    assert_unauthenticated(&answer, mismatch);
    let said = answer.1.to_string();
    assert!(
        !said.contains(&wanted),
        "the expected signature leaked: {said}"
    );
    assert!(
        !said.contains(&wanted[..16]),
        "part of the expected signature leaked: {said}"
    );

    let answer = signed
        .send_with(&app, |r| {
            *r.url_mut() = format!("{}{}", app.base, releases_path("other"))
                .parse()
                .unwrap();
        })
        .await;
    assert_unauthenticated(&answer, mismatch);

    let answer = signed
        .send_with(&app, |r| r.url_mut().set_query(Some("dryRun=true")))
        .await;
    assert_unauthenticated(&answer, mismatch);

    let answer = signed
        .send_with(&app, |r| *r.method_mut() = reqwest::Method::PUT)
        .await;
    assert_unauthenticated(&answer, mismatch);

    let answer = signed
        .send_with(&app, |r| {
            r.headers_mut().insert(
                "content-type",
                "application/json; charset=utf-8".parse().unwrap(),
            );
        })
        .await;
    assert_unauthenticated(&answer, mismatch);

    // Nothing was created by any of them.
    let (status, _) = Signed::new(
        "GET",
        format!("{}/tampered", releases_path("default")),
        None,
    )
    .send(&app)
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dates_keys_and_missing_parts_each_get_their_own_401() {
    let app = spawn_signed_app().await;
    let path = releases_path("default");

    let mut stale = Signed::new("GET", path.clone(), None);
    stale.date = (Utc::now() - TimeDelta::minutes(16))
        .format(signature::DATE_FORMAT)
        .to_string();
    assert_unauthenticated(&stale.send(&app).await, "more than 15 minutes");

    let mut future = Signed::new("GET", path.clone(), None);
    future.date = (Utc::now() + TimeDelta::minutes(16))
        .format(signature::DATE_FORMAT)
        .to_string();
    assert_unauthenticated(&future.send(&app).await, "more than 15 minutes");

    let mut unknown = Signed::new("GET", path.clone(), None);
    unknown.ak = "UNKNOWNAK00000000000";
    assert_unauthenticated(&unknown.send(&app).await, "is not known");

    let answer = Signed::new("GET", path.clone(), None)
        .send_with(&app, |r| {
            r.headers_mut().remove("x-sdk-date");
        })
        .await;
    assert_unauthenticated(&answer, "X-Sdk-Date is missing");

    let mut unsigned_date = Signed::new("GET", path.clone(), None);
    unsigned_date.sign_date = false;
    assert_unauthenticated(
        &unsigned_date.send(&app).await,
        "X-Sdk-Date must be among the SignedHeaders",
    );

    let answer = Signed::new("GET", path.clone(), None)
        .send_with(&app, |r| {
            r.headers_mut()
                .insert("authorization", "SDK-HMAC-SHA256 Access=x".parse().unwrap());
        })
        .await;
    assert_unauthenticated(&answer, "SignedHeaders");
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let app = spawn_signed_app().await;
    let mut request = Signed::new("GET", releases_path("default"), None);
    request.nonce = Some(uuid::Uuid::new_v4().to_string());
    assert_eq!(request.send(&app).await.0, 200);
    assert_unauthenticated(&request.send(&app).await, "replay");
    // A fresh nonce is fine.
    request.nonce = Some(uuid::Uuid::new_v4().to_string());
    assert_eq!(request.send(&app).await.0, 200);

    // A nonce the signature does not cover could be swapped by anyone.
    let answer = Signed::new("GET", releases_path("default"), None)
        .send_with(&app, |r| {
            r.headers_mut()
                .insert("x-sdk-nonce", "not-signed".parse().unwrap());
        })
        .await;
    assert_unauthenticated(&answer, "X-Sdk-Nonce must be among the SignedHeaders");
}

#[tokio::test]
async fn a_token_and_a_signature_together_are_refused() {
    let app = spawn_signed_app().await;
    let signed = Signed::new("GET", releases_path("default"), None);
    // Each alone is fine.
    assert_eq!(signed.send(&app).await.0, 200);
    let (status, _) = json_of(
        app.http
            .get(format!("{}{}", app.base, releases_path("default")))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    // Both: neither identity is picked.
    let answer = signed
        .send_with(&app, |r| {
            r.headers_mut()
                .insert("x-auth-token", TOKEN.parse().unwrap());
        })
        .await;
    assert_unauthenticated(&answer, "not both");
}

#[tokio::test]
async fn grpc_keeps_token_authentication() {
    let app = spawn_signed_app().await;
    let mut request = tonic::Request::new(grpc_request("g", "reviews"));
    request.metadata_mut().insert(
        "authorization",
        Signed::new("POST", "/", None)
            .authorization("x")
            .parse()
            .unwrap(),
    );
    let status = app.grpc().await.create_release(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("x-auth-token"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_signed_body_over_the_limit_is_413_before_it_is_read_whole() {
    let app = spawn_signed_app().await;
    let mut request = Signed::new("POST", releases_path("default"), None);
    request.body = vec![b' '; 5 * 1024 * 1024];
    let (status, body) = request.send(&app).await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test]
async fn an_access_key_has_its_own_rate_limit_and_it_refills() {
    let secrets = tempfile::tempdir().unwrap();
    let full = secret_file(secrets.path(), "full.sk", SK);
    // One request per 4 s, one at once.
    let app = spawn_app_with(|cli| {
        cli.credentials = Some(format!(
            r#"[{{ subject = "sdk-client", access_key = "{AK}", secret_key_file = "{full}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 0.25, burst = 1 }} }}]"#
        ));
    })
    .await;
    let list = |n: u32| {
        Signed::new(
            "GET",
            format!("{}?limit={n}", releases_path("default")),
            None,
        )
    };
    assert_eq!(list(1).send(&app).await.0, 200);
    let (status, refused) = list(2).send(&app).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["errorCode"], "ASM.01010008");
    // A token caller is not slowed by the access key's limit.
    assert_eq!(app.get("nothing-here").await.status(), 404);
    // The bucket refills at its rate: after 4 s, one more request goes.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let (status, answer) = list(3).send(&app).await;
    assert_eq!(status, 200, "refilled: {answer}");
    assert_eq!(list(4).send(&app).await.0, 429, "and only one");
}

#[tokio::test]
async fn a_signed_write_is_carried_out_once_and_reads_may_repeat() {
    let app = spawn_signed_app().await;
    let create = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("once", "reviews")),
    );
    assert_eq!(create.send(&app).await.0, 200);
    let replay = create.send(&app).await;
    assert_unauthenticated(&replay, "replay");
    assert!(
        replay.1["errorMsg"]
            .as_str()
            .unwrap()
            .contains("sign it again"),
        "{replay:?}"
    );
    // Signed again (another second, another signature), it runs: here it
    // is refused for what it asks, not as a replay.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("once", "reviews")),
    )
    .send(&app)
    .await;
    assert_eq!(again.0, 409, "{again:?}");

    // A PATCH that moved traffic, replayed after someone moved it back,
    // changes nothing.
    app.drive_to_running("once").await;
    let path = format!("{}/once", releases_path("default"));
    let to_100 = Signed::new(
        "PATCH",
        path.clone(),
        Some(&serde_json::json!({"spec": {"trafficPolicy": {"weight": 100}}})),
    );
    let (status, patched) = to_100.send(&app).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["trafficPolicy"]["weight"], 100);
    let back = app
        .patch(
            "once",
            &serde_json::json!({"spec": {"trafficPolicy": {"weight": 0}}}),
        )
        .await;
    assert_eq!(back.status(), 200);
    assert_unauthenticated(&to_100.send(&app).await, "replay");
    let (_, now) = json_of(app.get("once").await).await;
    assert_eq!(now["spec"]["trafficPolicy"]["weight"], 0, "{now}");

    // Reads may repeat, byte for byte.
    let read = Signed::new("GET", path, None);
    for _ in 0..3 {
        assert_eq!(read.send(&app).await.0, 200);
    }
}

#[tokio::test]
async fn a_write_refused_before_it_ran_may_be_sent_again_as_is() {
    let secrets = tempfile::tempdir().unwrap();
    let full = secret_file(secrets.path(), "full.sk", SK);
    let reader = secret_file(secrets.path(), "reader.sk", READER_SK);
    // Two requests a second, one at once.
    let app = spawn_app_with(|cli| {
        cli.credentials = Some(format!(
            r#"[
              {{ subject = "sdk-client", access_key = "{AK}", secret_key_file = "{full}", allow = [{{ actions = ["asm:mesh:*"], meshes = ["*"] }}], rate_limit = {{ requests_per_second = 2, burst = 1 }} }},
              {{ subject = "sdk-reader", access_key = "{READER_AK}", secret_key_file = "{reader}", allow = [{{ actions = ["asm:mesh:getRelease"], meshes = ["{MESH}"] }}] }}
            ]"#
        ));
    })
    .await;
    // 429: the limit is used up by a read; the SDK's retry of the very
    // same create then goes through, once.
    let create = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("retried", "reviews")),
    );
    assert_eq!(
        Signed::new("GET", releases_path("default"), None)
            .send(&app)
            .await
            .0,
        200
    );
    assert_eq!(create.send(&app).await.0, 429);
    let mut answer = (0, Value::Null);
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        answer = create.send(&app).await;
        if answer.0 != 429 {
            break;
        }
    }
    assert_eq!(answer.0, 200, "{answer:?}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_unauthenticated(&create.send(&app).await, "replay");

    // 400 (bad input) and 403 (not allowed) do not use a signature up.
    let mut bad = release_body("bad", "reviews");
    bad["spec"]["type"] = "sideways".into();
    let bad = Signed::new("POST", releases_path("default"), Some(&bad));
    let mut forbidden = Signed::new(
        "POST",
        releases_path("default"),
        Some(&release_body("not-mine", "ratings")),
    );
    forbidden.ak = READER_AK;
    forbidden.sk = READER_SK;
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(bad.send(&app).await.0, 400);
        assert_eq!(forbidden.send(&app).await.0, 403);
    }
}
