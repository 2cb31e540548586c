//! The binary on PostgreSQL over TLS, as `sslmode` says: `require` and
//! `verify-full` encrypt (as the server's own view of the connections
//! shows), `disable` does not, and `verify-full` refuses a server whose
//! certificate does not name the host connected to. Against the machine's
//! PostgreSQL, when it has SSL on.

use tokio_postgres::NoTls;

use crate::binary::start;
use crate::helpers::*;

/// The server's certificate file, when SSL is on and the file is readable
/// here (Debian's: the snakeoil certificate, made for `localhost`).
async fn server_certificate() -> Option<String> {
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").ok()?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        eprintln!("skipped: the test database has SSL off");
        return None;
    }
    let file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    if std::fs::read(&file).is_err() {
        eprintln!("skipped: the server's certificate {file} cannot be read here");
        return None;
    }
    Some(file)
}

/// Whether every connection named `application` is encrypted (and there
/// is one).
async fn encrypted(application: &str) -> bool {
    let url = std::env::var("MESHRELEASE_TEST_DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no connection of {application}");
    rows.iter().all(|row| row.get::<_, bool>(0))
}

async fn serves_with(url: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--database", url]);
    let status = crate::binary::create(&server.base, "over-tls", "reviews", "tls").await;
    assert_eq!(status, 200);
    let application = url.rsplit("application_name=").next().unwrap();
    let application = application.split('&').next().unwrap().to_owned();
    let encrypted = encrypted(&application).await;
    drop(server);
    encrypted
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "set MESHRELEASE_TEST_DATABASE_URL to run the PostgreSQL tests"
)]
async fn sslmode_decides_whether_and_how_postgresql_is_reached_over_tls() {
    let Some(certificate) = server_certificate().await else {
        return;
    };
    for (mode, tls) in [("require", true), ("prefer", true), ("disable", false)] {
        let (url, _schema) = fresh_schema().await.unwrap();
        assert_eq!(
            serves_with(&format!("{url}&sslmode={mode}")).await,
            tls,
            "sslmode={mode}"
        );
    }
    // verify-full: the certificate chains to the CA given (the server's own,
    // self-signed) and names the host: `localhost`, reached at 127.0.0.1.
    let (url, _schema) = fresh_schema().await.unwrap();
    assert!(url.contains("@127.0.0.1:"), "the test database URL: {url}");
    let verified = format!(
        "{}&hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={certificate}",
        url.replace("@127.0.0.1:", "@localhost:")
    );
    assert!(serves_with(&verified).await, "verify-full");

    // The same certificate does not name 127.0.0.1: verify-full refuses
    // to start, and says why.
    let (url, _schema) = fresh_schema().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = format!("{url}&sslmode=verify-full&sslrootcert={certificate}");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshrelease"))
            .args(["--listen", "127.0.0.1:0", "--database", &refused])
            .arg("--data-dir")
            .arg(dir.path())
            .env(
                "MESHRELEASE_MESHES",
                test_cli(std::path::Path::new(".")).meshes.unwrap(),
            )
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot start") && stderr.contains("certificate not valid for name"),
        "{stderr}"
    );
}
