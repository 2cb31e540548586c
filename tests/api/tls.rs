//! TLS on the one listener, through the real binary: gRPC and REST with
//! ALPN `h2` and `http/1.1`, client certificates (mutual TLS), and
//! certificates re-read on SIGHUP, with certificates made here.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use meshrelease::pb::asm::v2 as pb;
use meshrelease::pb::asm::v2::release_service_client::ReleaseServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::binary::{Server, start_with_config};
use crate::helpers::*;
use crate::reload::config;

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Issued {
        self.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes the server's certificate and key (0600) into `dir`.
fn install(dir: &Path, server: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, &server.cert).unwrap();
    std::fs::write(&key, &server.key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// The server on TLS, with client certificates of `client_ca` required
/// when given.
fn start_tls(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> (Server, String) {
    let (cert, key) = install(dir, &ca.server());
    let mut more = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(client_ca) = client_ca {
        let path = dir.join("clients-ca.crt");
        std::fs::write(&path, client_ca.pem()).unwrap();
        more.push_str(&format!(
            "tls_client_ca_file = {:?}\n",
            path.display().to_string()
        ));
    }
    let path = dir.join("meshrelease.toml");
    std::fs::write(&path, config(TOKEN, &[MESH], &more)).unwrap();
    let server = start_with_config(&path);
    let https = server.base.replace("http://", "https://");
    (server, https)
}

/// A REST client that trusts `ca` alone, HTTP/1.1 only or HTTP/2 by ALPN,
/// presenting `identity` when given.
fn rest_client(ca: &Ca, http1_only: bool, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .timeout(REQUEST_TIMEOUT);
    if http1_only {
        builder = builder.http1_only();
    }
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert, identity.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn grpc_client(
    https: &str,
    ca: &Ca,
    identity: Option<&Issued>,
) -> Result<ReleaseServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let channel = Channel::from_shared(https.to_owned())
        .unwrap()
        .tls_config(tls)?
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await?;
    Ok(ReleaseServiceClient::new(channel))
}

async fn list_status(
    client: &reqwest::Client,
    https: &str,
) -> Result<(u16, http::Version), reqwest::Error> {
    let response = client
        .get(format!("{https}/v2/meshes/{MESH}/releases"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.version()))
}

/// `meshrelease --config PATH --check-config`, with nothing from this
/// process's environment.
fn check_config(path: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_meshrelease"))
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .env_clear()
        .output()
        .unwrap()
}

#[tokio::test]
async fn grpc_and_rest_are_served_over_tls_with_alpn_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (server, https) = start_tls(dir.path(), &ca, None);
    assert!(
        server
            .wait_for_log("scheme=https", 1)
            .await
            .contains("scheme=https"),
        "the start-up line says TLS"
    );

    // REST, HTTP/2 chosen by ALPN, and HTTP/1.1 for a client that offers
    // only that.
    let (status, version) = list_status(&rest_client(&ca, false, None), &https)
        .await
        .unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    let (status, version) = list_status(&rest_client(&ca, true, None), &https)
        .await
        .unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_11));

    // gRPC over TLS.
    let mut grpc = grpc_client(&https, &ca, None).await.unwrap();
    grpc.create_release(authed(grpc_request("over-tls", "reviews")))
        .await
        .unwrap();

    // A client that does not trust the server's CA is refused, and so is
    // plaintext on the TLS port.
    let stranger = Ca::new("another CA");
    assert!(
        list_status(&rest_client(&stranger, false, None), &https)
            .await
            .is_err()
    );
    let plaintext = http_client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await;
    assert!(
        plaintext.is_err() || !plaintext.unwrap().status().is_success(),
        "plaintext must not be served on the TLS listener"
    );
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let (_server, https) = start_tls(dir.path(), &ca, Some(&clients));
    let member = clients.client("release-pipeline");

    // No certificate, or one from another CA: the handshake fails.
    assert!(
        list_status(&rest_client(&ca, false, None), &https)
            .await
            .is_err()
    );
    let outsider = Ca::new("other clients").client("release-pipeline");
    assert!(
        list_status(&rest_client(&ca, false, Some(&outsider)), &https)
            .await
            .is_err()
    );
    let refused = match grpc_client(&https, &ca, None).await {
        Err(_) => true,
        Ok(mut client) => client
            .list_releases(authed(pb::ListReleasesRequest {
                mesh_id: MESH.into(),
                ..Default::default()
            }))
            .await
            .is_err(),
    };
    assert!(refused, "gRPC without a client certificate must fail");

    // With one: served, over both protocols (the token is still required).
    assert_eq!(
        list_status(&rest_client(&ca, false, Some(&member)), &https)
            .await
            .unwrap()
            .0,
        200
    );
    let mut grpc = grpc_client(&https, &ca, Some(&member)).await.unwrap();
    grpc.list_releases(authed(pb::ListReleasesRequest {
        mesh_id: MESH.into(),
        ..Default::default()
    }))
    .await
    .unwrap();
}

#[tokio::test]
async fn sighup_rereads_the_certificates_for_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let (server, https) = start_tls(dir.path(), &old_ca, None);
    let mut open = grpc_client(&https, &old_ca, None).await.unwrap();
    let list = || {
        authed(pb::ListReleasesRequest {
            mesh_id: MESH.into(),
            ..Default::default()
        })
    };
    open.list_releases(list()).await.unwrap();

    // The certificate is renewed under the same file names, by another CA.
    let new_ca = Ca::new("new CA");
    install(dir.path(), &new_ca.server());
    server.signal("HUP");
    server.wait_for_log("configuration reloaded", 1).await;

    // New connections get the new certificate ...
    assert_eq!(
        list_status(&rest_client(&new_ca, false, None), &https)
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        list_status(&rest_client(&old_ca, false, None), &https)
            .await
            .is_err()
    );
    // ... and the connection opened before goes on.
    open.list_releases(list()).await.unwrap();
}

#[tokio::test]
async fn a_bad_certificate_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = install(dir.path(), &ca.server());
    let cases = [
        // A certificate file that holds no certificate.
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                key.display().to_string(),
                key.display().to_string()
            ),
            "tls_cert_file",
        ),
        // A key without its certificate.
        (
            format!("tls_key_file = {:?}\n", key.display().to_string()),
            "tls_cert_file",
        ),
        // A key others may read.
        ("".to_owned(), "tls_key_file"),
    ];
    for (i, (more, key_named)) in cases.into_iter().enumerate() {
        let more = if more.is_empty() {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            )
        } else {
            more
        };
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, config(TOKEN, &[MESH], &more)).unwrap();
        let output = check_config(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(key_named),
            "case {i} must name {key_named}: {stderr}"
        );
    }
}

#[test]
fn check_config_says_whether_the_listener_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = install(dir.path(), &ca.server());
    let clients = dir.path().join("clients-ca.crt");
    std::fs::write(&clients, Ca::new("clients").pem()).unwrap();
    let files = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    for (more, says) in [
        (String::new(), "(plaintext)"),
        (files.clone(), "(TLS)"),
        (
            format!(
                "{files}tls_client_ca_file = {:?}\n",
                clients.display().to_string()
            ),
            "(TLS, client certificates required)",
        ),
    ] {
        let path = dir.path().join("meshrelease.toml");
        std::fs::write(&path, config(TOKEN, &[MESH], &more)).unwrap();
        let output = check_config(&path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains(says), "{says}: {stdout}");
    }
}
