//! The binary's commands as a newcomer uses them: `check-config` and `demo`.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{process::Command, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

#[test]
fn check_config_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen:\n  address: not-an-address\n  tls: {cert_file: missing.crt, key_file: missing.key}\n  header_read_timeout: soon\n  max_concurrent_streams: 100000\n\
         authentication:\n  client_certificates:\n    ca_files: []\n\
         upstream:\n  url: http://plain:80\n  ca_file: nope.crt\n  credentials: {token_file: none.token}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "listen.address",
        "listen.tls.cert_file",
        "listen.tls.key_file",
        "listen.header_read_timeout",
        "listen.max_concurrent_streams",
        "authentication.client_certificates.ca_files",
        "upstream.ca_file",
        "upstream.credentials.token_file",
        "upstream.url",
    ] {
        assert!(
            text.contains(&format!(": {key}: ")),
            "{key} not reported:\n{text}"
        );
    }
    assert!(text.contains("hint:"), "{text}");
}

/// `--reload-poll` is `0s` or 100ms–24h: a nanosecond would re-read every watched file in a
/// tight loop, a huge value overflowed the reload task's timer (a panic, and SIGHUP then did
/// nothing). Refused before anything starts, naming the flag.
#[test]
fn an_unusable_reload_poll_is_refused_at_once() {
    for bad in ["1ns", "10ms", "500000000000y", "25h"] {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--config",
                "/nonexistent.yaml",
                "--reload-poll",
                bad,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--reload-poll"), "{bad}: {err}");
        assert!(err.contains("between 100ms and 24h"), "{bad}: {err}");
    }
}

/// The shipped rule that keeps tenants from picking nodes (`podSpec.nodeName`, a pod placed
/// past the scheduler) covers every kind whose pod template the API server turns into pods —
/// a ReplicationController or PodTemplate left out would be a way around it — in the annotated
/// example and in the demo.
#[test]
fn the_shipped_node_rule_covers_every_pod_bearing_kind() {
    let (_dir, demo) = demo_config();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/portcullis.yaml"),
    )
    .unwrap();
    for (which, text) in [("config/portcullis.yaml", example), ("demo", demo)] {
        let file = portcullis::config::parse(&text).unwrap();
        let rule = file
            .sanitize
            .unwrap()
            .field_rules
            .into_iter()
            .find(|r| r.deny.iter().any(|d| d == "podSpec.nodeName"))
            .unwrap_or_else(|| panic!("{which}: no rule denies podSpec.nodeName"));
        for kind in [
            "pods",
            "podtemplates",
            "replicationcontrollers",
            "replicasets",
            "deployments",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
        ] {
            assert!(
                rule.resources.iter().any(|r| r == kind || r == "*"),
                "{which}: {kind} not covered by {:?}",
                rule.resources
            );
        }
    }
}

/// First contact: the annotated example checked on a fresh clone, before `demo --write-only`
/// has written the files it points at, says in its first line what to run; after it, passes.
#[test]
fn the_annotated_example_says_what_to_run_first_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in ["portcullis.yaml", "audit-policy.yaml"] {
        std::fs::copy(repo.join("config").join(f), config_dir.join(f)).unwrap();
    }
    let example = config_dir.join("portcullis.yaml");
    let check = || {
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&example)
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("portcullis-demo, which does not exist")
            && first.contains("cargo run --release -- demo --write-only"),
        "{text}"
    );

    let demo = Command::new(BIN)
        .current_dir(dir.path())
        .args(["demo", "--write-only"])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(": ok"), "{text}");
}

#[test]
fn check_config_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "listen:\n  address: 127.0.0.1:1\n  tls: {cert_file: a, key_file: b, ciphers: all}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listen.tls.ciphers: unknown field `ciphers`"),
        "{text}"
    );
}

/// The demo's files in `dir` (the config's upstream an unreachable URL), for config tests.
fn demo_files(
    dir: &std::path::Path,
    ca: &portcullis_sandbox::pki::Ca,
) -> portcullis_sandbox::demo::Files {
    portcullis_sandbox::demo::write(
        dir,
        ca,
        "https://127.0.0.1:1",
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

/// The demo's files in a fresh folder (the config's upstream an unreachable URL) and its config
/// text, for tests of config variants.
fn demo_config() -> (tempfile::TempDir, String) {
    portcullis::server::tls::install_crypto_provider();
    let ca = portcullis_sandbox::pki::Ca::new("test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = demo_files(dir.path(), &ca);
    let demo = std::fs::read_to_string(&files.config).unwrap();
    (dir, demo)
}

#[test]
fn in_cluster_upstream_reads_service_account_files() {
    portcullis::server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = portcullis_sandbox::pki::Ca::new("t").unwrap();
    let sa = dir.path().join("sa");
    std::fs::create_dir(&sa).unwrap();
    std::fs::write(sa.join("ca.crt"), &ca.cert.cert_pem).unwrap();
    std::fs::write(sa.join("token"), "sa-token").unwrap();
    let files = demo_files(dir.path(), &ca);
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    common::replace_upstream_source(&mut text, "  in_cluster: true\n");
    let sa_dir = sa.to_string_lossy().into_owned();
    let env = move |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_string()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
        "PORTCULLIS_SERVICE_ACCOUNT_DIR" => Some(sa_dir.clone()),
        _ => None,
    };
    let cfg = portcullis::config::load_str(&text, dir.path(), &env).unwrap();
    assert_eq!(
        cfg.upstream.endpoints[0].to_string(),
        "https://10.96.0.1:443/"
    );
    assert!(
        matches!(&cfg.upstream.token, portcullis::config::UpstreamToken::File(p) if p.ends_with("token"))
    );

    // Outside a pod it says so, naming the key.
    let problems = portcullis::config::load_str(&text, dir.path(), &|_| None).unwrap_err();
    assert_eq!(problems[0].path, "upstream.in_cluster");
}

/// `upstream.upgrade_timeout` defaults to the kubelet's 2 minutes, is read when given, and a
/// zero is an error naming the key.
#[test]
fn the_upgrade_timeout_is_read_defaulted_and_checked() {
    portcullis::server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = portcullis_sandbox::pki::Ca::new("t").unwrap();
    let files = demo_files(dir.path(), &ca);
    let text = std::fs::read_to_string(&files.config).unwrap();
    let with = |line: &str| text.replace("upstream:\n", &format!("upstream:\n  {line}\n"));
    let load = |t: &str| portcullis::config::load_str(t, dir.path(), &|_| None);
    let secs = std::time::Duration::from_secs;
    assert_eq!(load(&text).unwrap().upstream.upgrade_timeout, secs(120));
    let set = load(&with("upgrade_timeout: 5m")).unwrap();
    assert_eq!(set.upstream.upgrade_timeout, secs(300));
    let problems = load(&with("upgrade_timeout: 0s")).unwrap_err();
    assert_eq!(problems[0].path, "upstream.upgrade_timeout", "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_and_kubectl_works_against_it() {
    common::require_kubectl();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner) = spawn_demo(&mut demo_command(dir.path())).await;
    assert!(banner.contains("kubectl --kubeconfig"), "{banner}");
    let kc = dir.path().join("admin.kubeconfig");
    let out = common::kubectl(&kc, dir.path(), &["get", "ns"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("kube-system"));
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keygen_issue_inspect_and_use_through_the_proxy() {
    let keys = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "token", "keygen", "--alg", "ES256", "--kid", "cli-1", "--out",
        ])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = keys.path().join("jwt-signing-key.pem");
    let jwks = keys.path().join("jwks.json");
    assert!(key.exists() && jwks.exists());
    let reminder = "needs `algorithms: [EdDSA]`";
    assert!(!String::from_utf8_lossy(&out.stdout).contains(reminder));
    // An EdDSA key: its issuer must list EdDSA (not in the default list, kube-apiserver's).
    let ed_keys = tempfile::tempdir().unwrap();
    let ed = Command::new(BIN)
        .args([
            "token", "keygen", "--alg", "EdDSA", "--kid", "ed-1", "--out",
        ])
        .arg(ed_keys.path())
        .output()
        .unwrap();
    assert!(
        ed.status.success(),
        "{}",
        String::from_utf8_lossy(&ed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ed.stdout).contains(reminder),
        "{}",
        String::from_utf8_lossy(&ed.stdout)
    );
    // Run again: refused, the key untouched (a new one would invalidate every token minted).
    let before = std::fs::read(&key).unwrap();
    let again = Command::new(BIN)
        .args([
            "token", "keygen", "--alg", "ES256", "--kid", "cli-2", "--out",
        ])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not replacing it"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let out = Command::new(BIN)
        .args([
            "token",
            "issue",
            "--issuer",
            "https://portcullis-demo.local",
            "--audience",
            "portcullis",
            "--sub",
            "carol",
        ])
        .args([
            "--group",
            "tenant:team-a",
            "--ttl",
            "10m",
            "--kid",
            "cli-1",
            "--jti",
            "cli-token",
        ])
        .args([
            "--scope",
            r#"[{"namespaces":["team-a"],"verbs":["list"],"resources":["pods"]}]"#,
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let out = Command::new(BIN)
        .args(["token", "inspect", &token])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""sub": "carol""#)
            && text.contains("cli-1")
            && text.contains("portcullis.io/scope"),
        "{text}"
    );

    // The proxy, trusting that JWKS, accepts the token within its scope and nothing else.
    let jwks_path = jwks.display().to_string();
    let env = common::Env::start_with(|c| {
        *c = c.replace("jwks_file: jwks.json", &format!("jwks_file: {jwks_path}"))
    })
    .await;
    let with = |path: &str| {
        http::Request::get(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    assert_eq!(
        env.request(with("/api/v1/namespaces/team-a/pods"), None, true)
            .await
            .status(),
        200
    );
    assert_eq!(
        env.request(with("/api/v1/namespaces/team-a/pods/x"), None, true)
            .await
            .status(),
        403,
        "scope allows list only"
    );
    env.stop().await;
}

/// A tenant named in `sanitize` or `rate_limits` must be one of `authorization.tenants`: a
/// misspelt name would silently leave that tenant without its Pod Security, field rules or
/// limits. An empty `verbs` or `tenants` list of a field rule would guard nothing.
#[test]
fn tenant_names_outside_authorization_must_name_a_tenant() {
    let (dir, demo) = demo_config();
    let load = |t: &str| portcullis::config::load_str(t, dir.path(), &|_| None);
    let named = |tenant: &str| {
        demo.replace(
            "      team-b: {enforce: baseline, warn: restricted}\n",
            &format!("      team-b: {{enforce: baseline, warn: restricted}}\n    tenants:\n      {tenant}: {{enforce: restricted}}\n"),
        )
        .replace("      tenants: [\"*\"]\n", &format!("      tenants: [\"*\", {tenant}]\n"))
        .replace("    team-a: {reads:", &format!("    {tenant}: {{reads:"))
    };
    let good = named("team-a");
    assert_ne!(good, demo);
    load(&good).unwrap_or_else(|p| panic!("{p:?}"));
    let problems = load(&named("team_a")).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sanitize.pod_security.tenants.team_a",
            "sanitize.field_rules[0].tenants[1]",
            "rate_limits.tenants.team_a"
        ],
        "{problems:?}"
    );
    assert!(
        problems[0].message.contains("authorization.tenants"),
        "{problems:?}"
    );
    let empty = demo
        .replace("      tenants: [\"*\"]\n", "      tenants: []\n")
        .replace("      verbs: [create]\n", "      verbs: []\n");
    let problems = load(&empty).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sanitize.field_rules[0].tenants",
            "sanitize.field_rules[1].verbs"
        ],
        "{problems:?}"
    );
}

/// Values that would break the proxy are refused with their key path rather than accepted:
/// zero where zero cuts every request, fails every probe or POST, or spins; counts so large
/// that the queue or batch would panic or abort at start.
#[test]
fn unusable_zeros_and_huge_counts_are_refused() {
    portcullis::server::tls::install_crypto_provider();
    let ca = portcullis_sandbox::pki::Ca::new("test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = demo_files(dir.path(), &ca);
    let demo = std::fs::read_to_string(&files.config).unwrap();
    std::fs::write(
        dir.path().join("siem.kubeconfig"),
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\", certificate-authority: ca.crt}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let load = |t: &str| portcullis::config::load_str(t, dir.path(), &|_| None);
    let sinks = "      mode: blocking-strict      # no answer leaves before its event is on disk\n";
    let broken = demo
        .replace("shutdown:\n  grace: 5s\n", "shutdown:\n  grace: 0s\n")
        .replace("admin:\n", "admin:\n  ready_window: 0s\n")
        .replace(
            sinks,
            &format!("{sinks}    - {{name: out, stdout: {{}}, mode: batch, overflow: block, queue: 3000000000000000000}}\n    - {{name: siem, webhook: {{kubeconfig: siem.kubeconfig, request_timeout: 0s, initial_backoff: 0s, max_batch_size: 1000000000}}, overflow: block}}\n"),
        );
    let problems = load(&broken).unwrap_err();
    let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "admin.ready_window",
            "audit.sinks[1].queue",
            "audit.sinks[2].webhook.initial_backoff",
            "audit.sinks[2].webhook.max_batch_size",
            "audit.sinks[2].webhook.request_timeout",
            "shutdown.grace",
        ],
        "{problems:?}"
    );
    // The same sinks with usable values load.
    let fine = broken
        .replace("grace: 0s", "grace: 5s")
        .replace("  ready_window: 0s\n", "")
        .replace("queue: 3000000000000000000", "queue: 1000000")
        .replace(
            "request_timeout: 0s, initial_backoff: 0s, max_batch_size: 1000000000",
            "max_batch_size: 400",
        );
    load(&fine).unwrap_or_else(|p| panic!("{p:?}"));
}

/// A client certificate toward the API server whose key is another's is a config error at its
/// key (`check-config` said OK, and `serve` then failed at start under the bare key `upstream`).
#[test]
fn an_upstream_client_certificate_with_another_key_is_refused_at_its_key() {
    let (dir, demo) = demo_config();
    let load = |t: &str| portcullis::config::load_str(t, dir.path(), &|_| None);
    let with_key = |key: &str| {
        demo.replace(
            "    token_file: proxy.token\n",
            &format!("    client_cert_file: proxy.crt\n    client_key_file: {key}\n"),
        )
    };
    let problems = load(&with_key("jwt-signing.key")).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["upstream.credentials.client_key_file"],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("pair"), "{problems:?}");
    load(&with_key("proxy.key")).unwrap_or_else(|p| panic!("{p:?}"));
}

/// Options that weaken a guard are config errors, naming the key and the `dangerous.*`
/// acknowledgement, until that acknowledgement is given.
#[test]
fn weakening_options_need_their_dangerous_acknowledgement() {
    let (dir, demo) = demo_config();
    let load = |t: &str| portcullis::config::load_str(t, dir.path(), &|_| None);
    assert!(load(&demo).is_ok(), "the demo acknowledges what it uses");
    let risky = demo
        .replace(
            "  pod_security:\n",
            "  binary_bodies: forward-unjudged\n  resources:\n    - {resources: [configmaps], inspect: false}\n  pod_security:\n",
        )
        .replace(
            "      mode: blocking-strict      # no answer leaves before its event is on disk\n",
            "      mode: blocking-strict      # no answer leaves before its event is on disk\n    - {name: out, stdout: {}, mode: batch, overflow: drop}\n",
        )
        .replace(
            "  max_in_flight: 400\n",
            "  max_in_flight: 400\n  backend: redis\n  redis: {url: \"redis://127.0.0.1:1\", replicas: 2, on_backend_error: allow}\n",
        )
        .replace(
            "    mode: optional             # certificates for admins, bearer tokens for the rest\n",
            "    mode: optional             # certificates for admins, bearer tokens for the rest\n    allow_system_identities: true\n",
        )
        .replace(
            "      algorithms: [ES256]\n",
            "      algorithms: [ES256]\n      allow_system_identities: true\n",
        );
    // The demo acknowledges nothing dangerous (its protobuf bodies are judged, issue 12).
    assert!(!demo.contains("dangerous:"), "{demo}");
    let without = format!("{risky}dangerous:\n  allow_uninspected_bodies: false\n");
    let problems = load(&without).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "sanitize.binary_bodies",
        "sanitize.resources[0].inspect",
        "audit.sinks[1].overflow",
        "rate_limits.redis.on_backend_error",
        "authentication.client_certificates.allow_system_identities",
        "authentication.jwt[0].allow_system_identities",
    ] {
        let p = problems
            .iter()
            .find(|p| p.path == want)
            .unwrap_or_else(|| panic!("{want} not in {paths:?}"));
        assert!(p.hint.contains("dangerous."), "{want}: {}", p.hint);
    }
    let acknowledged = without.replace(
        "dangerous:\n  allow_uninspected_bodies: false",
        "dangerous:\n  allow_uninspected_bodies: true\n  allow_audit_event_loss: true\n  allow_unlimited_on_backend_error: true\n  allow_system_identities: true",
    );
    let cfg = load(&acknowledged).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(cfg.dangerous.allow_audit_event_loss);
    assert!(cfg.dangerous.allow_system_identities);
}

/// The running proxy has transparent huge pages off (src/main.rs says why: they held 60 % more
/// memory per idle connection), and `MIMALLOC_ALLOW_THP` hands the choice back to the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_runs_without_transparent_huge_pages_unless_told() {
    async fn thp_enabled(env: Option<(&str, &str)>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = demo_command(dir.path());
        cmd.env_remove("MIMALLOC_ALLOW_THP");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (mut child, _) = spawn_demo(&mut cmd).await;
        let pid = child.id().unwrap();
        let status = thp_of(&pid.to_string());
        child.kill().await.unwrap();
        status
    }
    fn thp_of(pid: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled in /proc/{pid}/status:\n{status}"))
            .trim()
            .to_owned()
    }
    assert_eq!(thp_enabled(None).await, "0");
    // Left as this test process has it (a child inherits the setting).
    let own = thp_of("self");
    assert_eq!(thp_enabled(Some(("MIMALLOC_ALLOW_THP", "1"))).await, own);
}

/// `portcullis demo` on free ports, writing its files into `dir`, stdout piped.
fn demo_command(dir: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--dir",
    ])
    .arg(dir)
    .stdout(std::process::Stdio::piped())
    .kill_on_drop(true);
    cmd
}

/// Start `cmd` (see [`demo_command`]) and return once its banner has ended (the "Ctrl-C" line,
/// within 30 s): the process and the banner. A task keeps reading the rest of its stdout, so
/// nothing the demo prints later meets a closed pipe.
async fn spawn_demo(cmd: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            banner.push_str(&l);
            banner.push('\n');
            if l.contains("Ctrl-C") {
                break;
            }
        }
    })
    .await
    .expect("demo did not print its banner");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner)
}
