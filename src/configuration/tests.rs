//! Loading the configuration end to end: each layer, and errors that
//! name the key.

use std::path::Path;

use super::*;
use crate::domain::istio::IstioApi;
use crate::domain::mesh::OriginalOnEnd;

fn load(toml: &str, cli: Cli) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let secret = dir.path().join("sdk-client.sk");
    std::fs::write(&secret, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc\n").unwrap();
    set_private(&secret);
    let toml = toml.replace("secrets/sdk-client.sk", secret.to_str().unwrap());
    std::fs::write(&path, toml).unwrap();
    Settings::load(&Cli {
        config: Some(path),
        ..cli
    })
}

const GOOD: &str = r#"
    listen = "127.0.0.1:9000"
    data_dir = "./d"
    [[meshes]]
    id = "demo-mesh"
    clusters = ["cluster-a", "cluster-b"]
    [[tokens]]
    subject = "bot"
    sha256 = "6a3ef6f1c5e5a6a8f2c1e1c4f3c3e0c2a1b4d7e8f9a0b1c2d3e4f5a6b7c8d9e0"
    allow = [{ actions = ["asm:mesh:*"], meshes = ["*"] }]
    [[credentials]]
    subject = "sdk-client"
    access_key = "QTWAOYTTINDUT2QVKYUC"
    secret_key_file = "secrets/sdk-client.sk"
    allow = [{ actions = ["asm:mesh:*"], meshes = ["*"] }]
"#;

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn secret_keys_are_read_from_the_named_file_and_must_be_private() {
    let s = load(GOOD, Cli::default()).unwrap();
    assert_eq!(
        s.credentials[0].secret_key,
        b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
    );
    // The key never shows in debug output.
    assert!(!format!("{:?}", s.credentials).contains("MFyf"));

    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.sk");
    std::fs::write(&open, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(
        &GOOD.replace(
            "secret_key_file = \"secrets/sdk-client.sk\"",
            &format!("secret_key_file = {:?}", open.to_str().unwrap()),
        ),
        Cli::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("credentials[0].secret_key_file") && err.contains("chmod 600"),
        "{err}"
    );

    let err = load(
        &GOOD.replace(
            "secret_key_file = \"secrets/sdk-client.sk\"",
            "secret_key_env = \"MESHRELEASE_TEST_UNSET_VARIABLE\"",
        ),
        Cli::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("credentials[0].secret_key_env"), "{err}");
}

#[test]
fn relative_paths_in_the_file_are_the_files_directorys_and_in_flags_the_working_directorys() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("secrets")).unwrap();
    let secret = conf.join("secrets/sdk-client.sk");
    std::fs::write(&secret, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc\n").unwrap();
    set_private(&secret);
    std::fs::write(conf.join("a.kubeconfig"), "apiVersion: v1\n").unwrap();
    let file = conf.join("meshrelease.toml");
    std::fs::write(
        &file,
        GOOD.replace("data_dir = \"./d\"", "data_dir = \"state\"")
            + "[[clusters]]\nid = \"cluster-a\"\nkubeconfig = \"a.kubeconfig\"\n",
    )
    .unwrap();
    // Run from elsewhere: the file's relative paths still name its files.
    let s = Settings::load(&Cli {
        config: Some(file.clone()),
        ..Cli::default()
    })
    .unwrap();
    assert_eq!(s.data_dir, conf.join("state"));
    assert_eq!(s.clusters[0].kubeconfig, Some(conf.join("a.kubeconfig")));
    assert_eq!(
        s.credentials[0].secret_key,
        b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
    );
    // A flag's (or the environment's) path is the working directory's.
    let s = Settings::load(&Cli {
        config: Some(file),
        data_dir: Some(PathBuf::from("elsewhere")),
        ..Cli::default()
    })
    .unwrap();
    assert_eq!(s.data_dir, PathBuf::from("elsewhere"));
    // And with no file, the default is the working directory's ./data.
    assert_eq!(
        Settings::load(&Cli::default()).unwrap().data_dir,
        PathBuf::from("./data")
    );
}

#[test]
fn the_database_password_comes_from_a_private_file_and_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.password");
    std::fs::write(&file, "s3cret-pw\n").unwrap();
    set_private(&file);
    let cli = |path: &Path| Cli {
        database: Some("postgres://app@127.0.0.1:5432/releases".into()),
        database_password_file: Some(path.to_owned()),
        ..Cli::default()
    };
    let s = Settings::load(&cli(&file)).unwrap();
    assert_eq!(s.database_password, Some(Password("s3cret-pw".into())));
    assert!(!format!("{s:?}").contains("s3cret"), "the password shows");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Settings::load(&cli(&file)).unwrap_err().to_string();
    assert!(
        err.contains("database_password_file") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn conditions_and_mesh_attributes_are_read_and_checked() {
    let toml = r#"
        [[meshes]]
        id = "m"
        clusters = ["c"]
        enterprise_project_id = "ep-1"
        tags = { env = "prod" }
        [[tokens]]
        subject = "bot"
        sha256 = "6a3ef6f1c5e5a6a8f2c1e1c4f3c3e0c2a1b4d7e8f9a0b1c2d3e4f5a6b7c8d9e0"
        allow = [{ actions = ["asm:mesh:*"], meshes = ["*"], conditions = { StringEquals = { "g:EnterpriseProjectId" = ["ep-1", "ep-2"], "g:ResourceTag/env" = "prod" } } }]
    "#;
    let s = load(toml, Cli::default()).unwrap();
    assert_eq!(s.meshes[0].enterprise_project_id, "ep-1");
    assert_eq!(s.meshes[0].tags["env"], "prod");
    assert_eq!(s.tokens[0].principal.statements[0].conditions.len(), 2);
    let err = |toml: String| load(&toml, Cli::default()).unwrap_err().to_string();
    assert!(
        err(toml.replace("StringEquals", "StringLike"))
            .contains("tokens[0].allow[0].conditions.StringLike")
    );
    assert!(err(toml.replace("g:ResourceTag/env", "g:Tag/env")).contains("unknown key"));
    // Without a project, a mesh is in the default project "0".
    let s = load(
        &toml.replace("enterprise_project_id = \"ep-1\"", ""),
        Cli::default(),
    )
    .unwrap();
    assert_eq!(s.meshes[0].enterprise_project_id, "0");
}

#[test]
fn the_contract_shape_is_accepted() {
    let s = load(GOOD, Cli::default()).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(s.meshes[0].clusters.len(), 2);
    assert_eq!(s.tokens[0].principal.statements[0].actions, None);
    assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
}

#[test]
fn flags_win_over_the_file() {
    let s = load(
        GOOD,
        Cli {
            listen: Some("127.0.0.1:0".into()),
            meshes: Some(r#"[{ id = "m2", clusters = ["c"] }]"#.into()),
            ..Cli::default()
        },
    )
    .unwrap();
    assert_eq!(s.listen.port(), 0);
    assert_eq!(s.meshes[0].id, "m2");
}

#[test]
fn mesh_cluster_settings_are_read_and_checked() {
    let mesh = |extra: &str| format!("[[meshes]]\nid = \"m\"\nclusters = [\"a\", \"b\"]\n{extra}");
    let s = load(
        &mesh("istio_config_cluster = \"b\"\nistio_api_version = \"v1\"\noriginal_on_end = \"scale-to-zero\""),
        Cli::default(),
    )
    .unwrap();
    assert_eq!(s.meshes[0].istio_config_cluster.as_deref(), Some("b"));
    assert_eq!(s.meshes[0].istio_api, IstioApi::V1);
    assert_eq!(s.meshes[0].original_on_end, OriginalOnEnd::ScaleToZero);
    let s = load(&mesh(""), Cli::default()).unwrap();
    assert_eq!(s.meshes[0].istio_api, IstioApi::V1beta1);
    assert_eq!(s.meshes[0].original_on_end, OriginalOnEnd::Delete);
    let err = |extra: &str| load(&mesh(extra), Cli::default()).unwrap_err().to_string();
    assert!(err("istio_config_cluster = \"z\"").contains("meshes[0].istio_config_cluster"));
    assert!(err("istio_api_version = \"v1alpha3\"").contains("meshes[0].istio_api_version"));
    assert!(err("original_on_end = \"keep\"").contains("meshes[0].original_on_end"));
}

#[test]
fn a_wrong_type_names_the_key_and_the_file() {
    let err = load("max_connections = \"many\"", Cli::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_connections") && err.contains("c.toml"),
        "{err}"
    );
}

#[test]
fn errors_name_the_key() {
    let err = |toml: &str| load(toml, Cli::default()).unwrap_err().to_string();
    assert!(err("listen = \"nowhere\"").contains("listen:"));
    assert!(err("bogus = 1").contains("bogus"));
    assert!(err(&GOOD.replace("6a3e", "zz3e")).contains("tokens[0].sha256"));
    assert!(
        err(&GOOD.replace(
            "asm:mesh:*\"], meshes = [\"*\"] }]\n    [[cred",
            "asm:mesh:nope\"], meshes = [\"*\"] }]\n    [[cred"
        ))
        .contains("tokens[0].allow[0].actions[0]")
    );
    assert!(err("[[meshes]]\nid = \"m\"\nclusters = []").contains("meshes[0].clusters"));
    assert!(err("log_format = \"xml\"").contains("log_format"));
}

#[test]
fn cors_is_off_unless_origins_are_named_and_each_must_be_an_origin() {
    let cors = |toml: &str, cli: Cli| load(toml, cli).map(|s| s.cors);
    assert_eq!(cors("", Cli::default()).unwrap(), CorsOrigins::Off);
    assert_eq!(
        cors(
            "cors_allowed_origins = [\"https://console.example.com\", \"http://127.0.0.1:3000\"]",
            Cli::default()
        )
        .unwrap(),
        CorsOrigins::List(vec![
            "https://console.example.com".into(),
            "http://127.0.0.1:3000".into()
        ])
    );
    assert_eq!(
        cors("cors_allowed_origins = [\"*\"]", Cli::default()).unwrap(),
        CorsOrigins::Any
    );
    // Flags (comma-separated) replace the file's list.
    let flags = Cli {
        cors_allowed_origins: Some(vec!["https://a.example".into()]),
        ..Cli::default()
    };
    assert_eq!(
        cors("cors_allowed_origins = [\"*\"]", flags).unwrap(),
        CorsOrigins::List(vec!["https://a.example".into()])
    );
    for (bad, key) in [
        ("[\"*\", \"https://a.example\"]", "cors_allowed_origins:"),
        ("[\"https://a.example/\"]", "cors_allowed_origins[0]"),
        (
            "[\"https://a.example\", \"https://b.example/app\"]",
            "cors_allowed_origins[1]",
        ),
        ("[\"ftp://a.example\"]", "cors_allowed_origins[0]"),
        ("[\"a.example\"]", "cors_allowed_origins[0]"),
    ] {
        let err = cors(&format!("cors_allowed_origins = {bad}"), Cli::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn the_prometheus_token_comes_from_a_private_file_never_shows_and_needs_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("prom-token");
    std::fs::write(&token, "eyJhbGciOi.prom-token\n").unwrap();
    set_private(&token);
    let with = |keys: &str| {
        GOOD.replace(
            "clusters = [\"cluster-a\", \"cluster-b\"]",
            &format!("clusters = [\"cluster-a\", \"cluster-b\"]\n    {keys}"),
        )
    };
    let keys = format!(
        "prometheus_url = \"http://prometheus.istio-system:9090\"\n    prometheus_token_file = {:?}",
        token.to_str().unwrap()
    );
    let s = load(&with(&keys), Cli::default()).unwrap();
    let read = s.meshes[0].prometheus_token.as_ref().expect("a token");
    assert_eq!(read.expose(), "eyJhbGciOi.prom-token", "trimmed, whole");
    assert!(!format!("{:?}", s.meshes).contains("prom-token"));

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = load(&with(&keys), Cli::default()).unwrap_err().to_string();
    assert!(
        err.contains("meshes[0].prometheus_token_file") && err.contains("chmod 600"),
        "{err}"
    );
    set_private(&token);
    let alone = format!("prometheus_token_file = {:?}", token.to_str().unwrap());
    let err = load(&with(&alone), Cli::default()).unwrap_err().to_string();
    assert!(
        err.contains("meshes[0].prometheus_token_file") && err.contains("prometheus_url"),
        "{err}"
    );
}

#[test]
fn a_clusters_rate_limit_defaults_to_50_and_100_and_must_be_positive() {
    let cluster = |extra: &str| format!("[[clusters]]\nid = \"a\"\n{extra}");
    let s = load(&cluster(""), Cli::default()).unwrap();
    assert_eq!(
        s.clusters[0].limit,
        crate::driver::Limit {
            qps: 50.0,
            burst: 100
        }
    );
    let s = load(&cluster("qps = 7.5\nburst = 3"), Cli::default()).unwrap();
    assert_eq!(
        s.clusters[0].limit,
        crate::driver::Limit { qps: 7.5, burst: 3 }
    );
    let err = |extra: &str| {
        load(&cluster(extra), Cli::default())
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("qps = 0").contains("clusters[0].qps"),
        "{}",
        err("qps = 0")
    );
    assert!(err("qps = -1").contains("clusters[0].qps"));
    assert!(err("burst = 0").contains("clusters[0].burst"));
}
