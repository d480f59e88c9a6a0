//! Hot reload of the real `portcullis serve` binary (SIGHUP, file change, ConfigMap symlink
//! swap) while real clients (kubectl, kube-rs) read, write and hold watches: no request fails,
//! no watch drops, every change applies right after its reload; a bad config or one changing
//! what cannot change live is refused whole and the old one keeps serving.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::binary::{replace, Binary};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{ListParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use portcullis::kubeconfig::Kubeconfig as DemoKubeconfig;

const TEAM_B_TENANT: &str = "    - name: team-b
      namespaces: [team-b]
      subjects: [{group: \"tenant:team-b\"}]
";

/// The demo config after reload `i` of the load test: team-a's read quota changes every
/// time, tenant team-b exists from reload 5, the `ci` grant is gone from reload 10.
fn config_for(base: &str, i: u32) -> String {
    let mut text = base.replace(
        "team-a: {reads: {rate: 5/s, burst: 20}",
        &format!("team-a: {{reads: {{rate: {}/s, burst: 20}}", 6 + i % 3),
    );
    assert_ne!(text, base, "the quota line is in the demo config");
    if i >= 5 {
        text = text.replacen(
            "authorization:\n  tenants:\n",
            &format!("authorization:\n  tenants:\n{TEAM_B_TENANT}"),
            1,
        );
    }
    if i >= 10 {
        text = without_ci_grant(&text);
    }
    text
}

fn without_ci_grant(text: &str) -> String {
    let start = text.find("    - name: ci\n").expect("ci grant");
    let end = start
        + text[start..]
            .find("rate_limits:")
            .expect("after the grants");
    format!("{}{}", &text[..start], &text[end..])
}

async fn kube_client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Requests for `path` the sandbox received on behalf of `user` (the proxy impersonates the
/// caller; kubectl's discovery requests, which every identity may make, are not counted).
fn seen_for(b: &Binary, user: &str, path: &str) -> usize {
    b.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| {
            r.path == path
                && r.headers
                    .get("impersonate-user")
                    .is_some_and(|v| v.as_bytes() == user.as_bytes())
        })
        .count()
}

const CI_PATH: &str = "/apis/apps/v1/namespaces/team-a/deployments";
const BOB_PATH: &str = "/api/v1/namespaces/team-b/configmaps";

/// `kubectl get deployments -n team-a` as ci-bot: Ok(()) or Err(stderr).
async fn ci_reads(b: &Binary) -> Result<(), String> {
    let out = b
        .kubectl(
            &b.files.ci_kubeconfig,
            &["get", "deployments", "-n", "team-a"],
        )
        .await;
    if out.status.success() {
        Ok(())
    } else {
        Err(common::stderr(&out))
    }
}

/// A refused ci-bot read: kubectl prints the Forbidden Status, and the sandbox saw nothing.
async fn assert_ci_refused(b: &Binary) {
    let before = seen_for(b, "ci-bot", CI_PATH);
    let err = ci_reads(b).await.expect_err("the ci grant was removed");
    assert!(
        err.contains("Error from server (Forbidden)") && err.contains("ci-bot"),
        "{err}"
    );
    assert_eq!(
        seen_for(b, "ci-bot", CI_PATH),
        before,
        "the refused request reached the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_drop_nothing_and_apply_at_once() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let base = std::fs::read_to_string(&b.files.config).unwrap();
    let admin = kube_client(&b.files.admin_kubeconfig).await;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let pp = PostParams::default();
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"k": "v"}
        }))
        .unwrap()
    };
    cms.create(&pp, &cm("before")).await.unwrap();

    // bob (tenant team-b once it exists) and ci-bot, before any reload.
    let bob_cert = b.ca.client_cert("bob", &["tenant:team-b"]).unwrap();
    let bob = b.path("bob.kubeconfig");
    DemoKubeconfig::single(
        "bob",
        &format!("https://{}", b.listen),
        &b.ca.cert.cert_pem,
        DemoKubeconfig::cert_user(&bob_cert.cert_pem, &bob_cert.key_pem),
    )
    .write(&bob)
    .unwrap();
    // The sandbox authorizes the impersonated bob like an API server: RBAC in team-b.
    for (api, body) in [
        (
            "/api/v1/namespaces",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/team-b/rolebindings",
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "team-b", "namespace": "team-b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "tenant:team-b"}]
            }),
        ),
    ] {
        let req = http::Request::post(api)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let created: Result<serde_json::Value, _> = admin.request(req).await;
        match created {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("{api}: {e}"),
        }
    }
    let bob_reads = || b.kubectl(&bob, &["get", "configmaps", "-n", "team-b"]);
    let before = seen_for(&b, "bob", BOB_PATH);
    let out = bob_reads().await;
    assert!(
        common::stderr(&out).contains("Error from server (Forbidden)"),
        "no team-b tenant yet: {}",
        common::stderr(&out)
    );
    assert_eq!(seen_for(&b, "bob", BOB_PATH), before);
    ci_reads(&b)
        .await
        .expect("ci may read deployments before the reload");
    assert!(
        seen_for(&b, "ci-bot", CI_PATH) > 0,
        "the sandbox sees ci-bot's reads"
    );

    // Watches held across every reload: kubectl (h2) and kube-rs.
    let mut kubectl_watch = common::kubectl_spawn(
        &b.files.admin_kubeconfig,
        b.dir.path(),
        &[
            "get",
            "configmaps",
            "-n",
            "default",
            "--watch",
            "-o",
            "name",
        ],
    );
    let kubectl_seen = Arc::new(Mutex::new(String::new()));
    {
        let seen = kubectl_seen.clone();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            kubectl_watch.stdout.take().unwrap(),
        ));
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let kube_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let kube_watch_ended = Arc::new(Mutex::new(None::<String>));
    {
        let (seen, ended) = (kube_seen.clone(), kube_watch_ended.clone());
        let (started, watching) = tokio::sync::oneshot::channel();
        let cms = cms.clone();
        tokio::spawn(async move {
            let mut events = cms
                .watch(&WatchParams::default(), &rv)
                .await
                .unwrap()
                .boxed();
            let _ = started.send(());
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(WatchEvent::Added(o)) => seen
                        .lock()
                        .unwrap()
                        .push(o.metadata.name.unwrap_or_default()),
                    Ok(_) => {}
                    Err(e) => {
                        *ended.lock().unwrap() = Some(format!("error: {e}"));
                        return;
                    }
                }
            }
            *ended.lock().unwrap() = Some("stream ended".into());
        });
        watching.await.unwrap();
    }
    let seen_before = common::poll(Duration::from_secs(20), || {
        kubectl_seen
            .lock()
            .unwrap()
            .contains("configmap/before")
            .then_some(())
    })
    .await;
    assert!(seen_before.is_some(), "the kubectl watch did not start");

    // An exec session held across every reload: `cat` echoes a line after each one.
    let out = b
        .kubectl(
            &b.files.admin_kubeconfig,
            &["run", "shell", "--image=busybox", "--restart=Never"],
        )
        .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut exec = common::EchoSession::start(&b.files.admin_kubeconfig, b.dir.path(), "shell");
    let mut echo = async |line: String| {
        let echoed = exec.echo(&line).await;
        assert_eq!(echoed, Some(line), "the exec session ended");
    };
    echo("before the reloads".into()).await;

    // Load: a kube-rs writer + reader and a kubectl reader, every request must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (cms, stop, failures, requests) = (
            cms.clone(),
            stop.clone(),
            failures.clone(),
            requests.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("w-{n}");
                if let Err(e) = cms.create(&PostParams::default(), &cm(&name)).await {
                    failures.lock().unwrap().push(format!("create {name}: {e}"));
                }
                if let Err(e) = cms.get(&name).await {
                    failures.lock().unwrap().push(format!("get {name}: {e}"));
                }
                requests.fetch_add(2, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let reader = {
        let (stop, failures, requests) = (stop.clone(), failures.clone(), requests.clone());
        let (kubeconfig, home) = (b.files.admin_kubeconfig.clone(), b.path("reader"));
        std::fs::create_dir_all(&home).unwrap();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let out =
                    common::kubectl(&kubeconfig, &home, &["get", "configmaps", "-n", "default"])
                        .await;
                if !out.status.success() {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("kubectl get: {}", common::stderr(&out)));
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    for i in 1..=20u32 {
        let rotated = if i == 15 {
            // A new serving certificate and key (atomic replacements, as a Secret update).
            let next = b.ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
            replace(&b.path("proxy.key"), next.key_pem.as_bytes());
            replace(&b.path("proxy.crt"), next.cert_pem.as_bytes());
            Some(next)
        } else {
            None
        };
        b.write_config(&config_for(&base, i));
        b.signal("HUP");
        b.wait_reloads("success", u64::from(i)).await;
        match i {
            5 => {
                // The new tenant works right after the reload.
                let out = bob_reads().await;
                assert!(out.status.success(), "{}", common::stderr(&out));
            }
            10 => assert_ci_refused(&b).await,
            15 => {
                let next = rotated.unwrap();
                let tls =
                    common::tls_connect(b.listen, &b.ca, Some(&admin_cert(&b)), &[b"h2"]).await;
                let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                assert_eq!(
                    presented, next.cert_der,
                    "a new connection sees the new cert"
                );
            }
            _ => {}
        }
        echo(format!("after reload {i}")).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Both watches outlived every reload and still deliver.
    cms.create(&pp, &cm("after-last-reload")).await.unwrap();
    let delivered = common::poll(Duration::from_secs(10), || {
        let k = kubectl_seen
            .lock()
            .unwrap()
            .contains("configmap/after-last-reload");
        let r = kube_seen
            .lock()
            .unwrap()
            .iter()
            .any(|n| n == "after-last-reload");
        (k && r).then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
        "a watch stopped delivering: kubectl saw {:?}; kube-rs ended: {:?}",
        kubectl_seen.lock().unwrap().lines().last(),
        kube_watch_ended.lock().unwrap()
    );
    assert!(kube_watch_ended.lock().unwrap().is_none());
    assert!(
        kubectl_watch.try_wait().unwrap().is_none(),
        "kubectl watch exited"
    );

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    reader.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests failed: {failures:#?}");
    let total = requests.load(Ordering::Relaxed);
    assert!(total > 100, "only {total} requests ran during the reloads");
    eprintln!("{total} client requests (kube-rs create + get, kubectl get) during 20 reloads");
    assert_eq!(b.reloads("failure").await, 0);
    // The grant stays removed; the tenant stays.
    assert_ci_refused(&b).await;
    assert!(bob_reads().await.status.success());
    let _ = kubectl_watch.kill().await;
    let _ = exec.child.kill().await;
    b.stop().await;
}

fn admin_cert(b: &Binary) -> portcullis_sandbox::pki::Issued {
    b.ca.client_cert("admin", &["demo:admins"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_with_its_key_paths_and_the_old_one_keeps_serving() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    // Two problems, plus a valid change (the ci grant removed) that must not apply alone.
    let bad = without_ci_grant(&good)
        .replace("cert_file: proxy.crt", "cert_file: missing.crt")
        .replace("rate: 50/s, burst: 100", "rate: fast, burst: 100");
    b.write_config(&bad);
    b.signal("HUP");
    b.wait_reloads("failure", 1).await;
    assert_eq!(b.reloads("success").await, 0);
    let log = b
        .log_when(|log| log.contains("listen.tls.cert_file") && log.contains("reads.rate"))
        .await;
    for key in ["listen.tls.cert_file", "rate_limits.default.reads.rate"] {
        assert!(
            log.lines()
                .any(|l| l.contains("configuration reload refused") && l.contains(key)),
            "no refusal line names {key}:\n{log}"
        );
    }
    assert_eq!(common::admin_get(b.admin, "/readyz").await.0, 200);
    // What an alert watches: the running configuration is not the file's.
    let refused = || async {
        let (_, m) = common::admin_get(b.admin, "/metrics").await;
        m.lines()
            .find_map(|l| l.strip_prefix("portcullis_config_reload_refused "))
            .map(|v| v.trim().to_owned())
    };
    assert_eq!(refused().await.as_deref(), Some("1"));
    // The old configuration is whole: ci's grant still applies, admins still work.
    ci_reads(&b).await.expect("the old config still grants ci");
    let out = b.kubectl(&b.files.admin_kubeconfig, &["get", "ns"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));

    // The next good config applies.
    b.write_config(&without_ci_grant(&good));
    b.signal("HUP");
    b.wait_reloads("success", 1).await;
    assert_ci_refused(&b).await;
    assert_eq!(b.reloads("failure").await, 1);
    assert_eq!(refused().await.as_deref(), Some("0"));
    b.stop().await;
}

/// Send SIGHUP and wait until reloads with `result` reach `n`.
async fn hup(b: &Binary, result: &str, n: u64) {
    b.signal("HUP");
    b.wait_reloads(result, n).await;
}

/// Wait for the log line refusing a reload at `key` with `says` in its problem.
async fn refusal_logged(b: &Binary, key: &str, says: &str) {
    let key = format!("key={key}");
    let named = |l: &str| {
        l.contains("configuration reload refused") && l.contains(&key) && l.contains(says)
    };
    let log = b.log_when(|log| log.lines().any(named)).await;
    assert!(
        log.lines().any(named),
        "no refusal line names {key}:\n{log}"
    );
}

/// `kubectl get ns` as the admin, on a new connection (a new TLS handshake), succeeds.
async fn admin_lists_namespaces(b: &Binary) {
    let out = b.kubectl(&b.files.admin_kubeconfig, &["get", "ns"]).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// An edit whose upstream no endpoint of answers (a URL typo: here a port nobody listens on)
/// is refused while the running upstream answers — applied, it would make every request a
/// 502 / 503 and every replica unready at once — and the rest of that edit (a removed grant)
/// waits with it. The next edit that leaves the upstream as it was applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_edit_that_answers_nowhere_is_refused_while_the_running_one_answers() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    let nobody = common::free_port();
    let mut bad = good.clone();
    common::with_upstream_url(&mut bad, nobody);
    b.write_config(&without_ci_grant(&bad));
    hup(&b, "failure", 1).await;
    assert_eq!(b.reloads("success").await, 0);
    refusal_logged(
        &b,
        "upstream",
        &format!("no endpoint of the new upstream answered its readiness probe (/readyz), while the running one does: upstream has not answered within 30s: https://{nobody}"),
    )
    .await;
    assert_eq!(common::admin_get(b.admin, "/readyz").await.0, 200);
    ci_reads(&b).await.expect("the old config still grants ci");
    admin_lists_namespaces(&b).await;

    b.write_config(&without_ci_grant(&good));
    hup(&b, "success", 1).await;
    assert_ci_refused(&b).await;
    b.stop().await;
}

/// A serving certificate restored out of its validity period (an old one pasted back after a
/// failed renewal) is refused while the running one is good: swapped in, it would fail every
/// new handshake while open connections hid it. A renewed one then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_serving_certificate_is_refused_while_the_running_one_is_good() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    assert!(
        good.contains("cert_file: proxy.crt"),
        "the demo's serving certificate moved"
    );
    let write = |id: &portcullis_sandbox::pki::Issued| {
        std::fs::write(b.files.dir.join("proxy.crt"), &id.cert_pem).unwrap();
        std::fs::write(b.files.dir.join("proxy.key"), &id.key_pem).unwrap();
    };
    write(
        &b.ca
            .expired_server_cert(&["localhost", "127.0.0.1"])
            .unwrap(),
    );
    hup(&b, "failure", 1).await;
    refusal_logged(
        &b,
        "listen.tls.cert_file",
        "the new serving certificate is outside its validity period",
    )
    .await;
    // New connections still get the running certificate.
    admin_lists_namespaces(&b).await;

    write(&b.ca.server_cert(&["localhost", "127.0.0.1"]).unwrap());
    hup(&b, "success", 1).await;
    admin_lists_namespaces(&b).await;
    b.stop().await;
}

/// An HTTPS JWKS endpoint serving the demo issuer's keys while `up` is set, 503 otherwise;
/// its CA written as `jwks-ca.crt` beside the config. Its address.
async fn jwks_endpoint(b: &Binary, up: Arc<AtomicBool>) -> std::net::SocketAddr {
    let jwks = bytes::Bytes::from(std::fs::read(b.files.dir.join("jwks.json")).unwrap());
    let served = up;
    let jwks_addr = common::fake_upstream(&b.ca, move |tls| {
        let (up, jwks) = (served.clone(), jwks.clone());
        async move {
            let svc = hyper::service::service_fn(move |_req| {
                let ready = up.load(Ordering::SeqCst);
                let body = http_body_util::Full::new(if ready {
                    jwks.clone()
                } else {
                    bytes::Bytes::new()
                });
                async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(if ready { 200 } else { 503 })
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        }
    })
    .await;
    std::fs::write(
        b.files.dir.join("jwks-ca.crt"),
        b.ca.cert.cert_pem.as_bytes(),
    )
    .unwrap();
    jwks_addr
}

/// A new issuer whose keys cannot be loaded yet (its JWKS endpoint answers 503) accepts no
/// token until they load — as at startup — but blocks nothing else the same edit changes: the
/// ci grant it removes applies at once (a revocation must not wait for an unrelated identity
/// provider). Before, the whole reload was refused until the endpoint answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_without_keys_holds_back_no_revocation() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "200ms"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    ci_reads(&b).await.expect("ci may read before the change");
    let jwks_addr = jwks_endpoint(&b, Arc::new(AtomicBool::new(false))).await;
    let issuer = format!(
        "  jwt:\n    - issuer:\n        url: https://second.example\n        audiences: [portcullis]\n        jwks_url: https://127.0.0.1:{}/jwks\n        certificate_authority_file: jwks-ca.crt\n      claim_mappings:\n        username: {{claim: sub, prefix: \"second:\"}}\n",
        jwks_addr.port()
    );
    b.write_config(&without_ci_grant(&good).replacen("  jwt:\n", &issuer, 1));
    b.wait_reloads("success", 1).await;
    assert_eq!(b.reloads("failure").await, 0);
    assert_ci_refused(&b).await;
    let log = b
        .log_when(|log| log.contains("JWT keys of a new issuer not loaded yet"))
        .await;
    assert!(log.contains("https://second.example"), "{log}");
    b.stop().await;
}

/// A config file that is still being written is not read: a change seen by polling is read
/// once two polls in a row see the same files. Rewritten in place (truncated, then written)
/// every 20 ms for 3 s by a thread of its own while the proxy polls every 500 ms, the file is
/// never read; once the writes stop it is read once. (Read on the first change seen, a file cut
/// at a line boundary can be valid YAML and weaker: a tenant without `rules:` has every verb
/// in its namespaces.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_still_being_written_is_not_read_half_written() {
    let b = Binary::start(&["--reload-poll", "500ms"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    let path = b.files.config.clone();
    let writer = std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut i = 0;
        while std::time::Instant::now() < until {
            std::fs::write(&path, format!("{good}# write {i}\n")).unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (b.reloads("success").await, b.reloads("failure").await),
        (0, 0),
        "read while still changing"
    );
    b.wait_reloads("success", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.reloads("success").await, 1);
    assert_eq!(b.reloads("failure").await, 0);
    b.stop().await;
}

/// A reload refused for a reason that passes — the running issuer's key source moved to a
/// JWKS endpoint that fails (503) — is tried again without another edit or signal, and
/// applies once the endpoint answers: the change it held back (here: the ci grant removed)
/// does not wait for the next edit. (Applied while the endpoint fails, the issuer would refuse
/// every token it signs; refused, its running keys keep working.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_is_retried_until_it_applies() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "200ms"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    ci_reads(&b).await.expect("ci may read before the change");
    // The demo issuer's keys, moved to an HTTPS endpoint that answers 503 until `up` is set.
    let up = Arc::new(AtomicBool::new(false));
    let jwks_addr = jwks_endpoint(&b, up.clone()).await;
    let issuer = format!(
        "        jwks_url: https://127.0.0.1:{}/jwks\n        certificate_authority_file: jwks-ca.crt\n",
        jwks_addr.port()
    );
    assert!(good.contains("        jwks_file: jwks.json\n"), "{good}");
    let changed = without_ci_grant(&good).replacen("        jwks_file: jwks.json\n", &issuer, 1);
    b.write_config(&changed);
    b.wait_reloads("failure", 1).await;
    ci_reads(&b)
        .await
        .expect("refused: the old config still grants ci");

    // The endpoint recovers, serving the demo issuer's keys; nothing else changes.
    up.store(true, Ordering::SeqCst);
    b.wait_reloads("success", 1).await;
    let log = b
        .log_when(|log| log.contains("retry of a refused reload"))
        .await;
    assert!(log.contains("retry of a refused reload"), "{log}");
    assert_ci_refused(&b).await;

    // The endpoint goes down again. A later change that leaves that issuer as it is applies
    // all the same: its key store (keys loaded) is carried over, with nothing to fetch — an
    // identity provider that is down blocks no unrelated reload (a revocation, a grant).
    up.store(false, Ordering::SeqCst);
    b.write_config(&good.replacen("        jwks_file: jwks.json\n", &issuer, 1));
    b.wait_reloads("success", 2).await;
    ci_reads(&b).await.expect("the ci grant is back");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_or_audit_file_change_is_refused_restart_to_apply() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    let elsewhere = common::free_port();
    // A new listen address and a new audit file: neither can change live.
    let moved = without_ci_grant(&good)
        .replace(
            &format!("address: {}", b.listen),
            &format!("address: {elsewhere}"),
        )
        .replace("file: {path: audit.log", "file: {path: audit-2.log");
    assert_ne!(moved, without_ci_grant(&good));
    b.write_config(&moved);
    b.signal("HUP");
    b.wait_reloads("failure", 1).await;
    let log = b
        .log_when(|log| log.contains("key=listen.address") && log.contains("key=audit.sinks"))
        .await;
    for key in ["key=listen.address", "key=audit.sinks"] {
        assert!(
            log.lines()
                .any(|l| l.contains("configuration reload refused")
                    && l.contains(key)
                    && l.contains("restart to apply")),
            "no refusal names {key}:\n{log}"
        );
    }
    assert!(
        !b.path("audit-2.log").exists(),
        "a second audit file was opened"
    );
    assert!(
        tokio::net::TcpStream::connect(elsewhere).await.is_err(),
        "nothing listens on the new address"
    );
    // Not half-applied: the grant removed in the same file still applies.
    ci_reads(&b)
        .await
        .expect("the refused reload changed nothing");
    assert_eq!(common::admin_get(b.admin, "/readyz").await.0, 200);
    b.stop().await;
}

/// Kubernetes mounts a ConfigMap as `<dir>/<file> -> ..data/<file>`, `..data -> ..<version>`,
/// and updates it by renaming a new `..data` symlink over the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_reloads_without_a_signal() {
    common::require_kubectl();
    portcullis::server::tls::install_crypto_provider();
    let ca = portcullis_sandbox::pki::Ca::new("test CA").unwrap();
    let sandbox = portcullis_sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mount");
    let v1 = mount.join("..2026_12_02_v1");
    let (listen, admin) = (common::free_port(), common::free_port());
    let mut files =
        portcullis_sandbox::demo::write(&v1, &ca, &sandbox.url(), listen, admin).unwrap();
    let names: Vec<_> = std::fs::read_dir(&v1)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::os::unix::fs::symlink("..2026_12_02_v1", mount.join("..data")).unwrap();
    for name in &names {
        std::os::unix::fs::symlink(Path::new("..data").join(name), mount.join(name)).unwrap();
    }
    files.config = mount.join("portcullis.yaml");
    let b = Binary::spawn(
        dir,
        files,
        ca,
        sandbox,
        listen,
        admin,
        &["--reload-poll", "200ms"],
    )
    .await;
    ci_reads(&b).await.expect("ci may read before the update");

    // The update: a new version folder, then the atomic `..data` swap.
    let v2 = mount.join("..2026_12_02_v2");
    std::fs::create_dir(&v2).unwrap();
    for name in &names {
        std::fs::copy(v1.join(name), v2.join(name)).unwrap();
    }
    let text = std::fs::read_to_string(v1.join("portcullis.yaml")).unwrap();
    std::fs::write(v2.join("portcullis.yaml"), without_ci_grant(&text)).unwrap();
    std::os::unix::fs::symlink("..2026_12_02_v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();

    b.wait_reloads("success", 1).await;
    let log = b.log_when(|log| log.contains("file change")).await;
    assert!(log.contains("file change"), "{log}");
    assert_ci_refused(&b).await;
    // Unchanged content is not reloaded again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(b.reloads("success").await, 1);
    assert_eq!(b.reloads("failure").await, 0);
    b.stop().await;
}

/// Nothing reached the sandbox since its record was last cleared (the message names what did).
fn assert_upstream_saw_nothing(b: &Binary) {
    let seen = b.sandbox.sandbox.recorded();
    assert!(
        seen.is_empty(),
        "upstream saw a request: {:?}",
        seen.iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
}

/// After a reload, a connection opened before it is held to the new configuration's client CAs
/// and CRLs, as a new handshake would be (kube-apiserver verifies the client's chain against
/// the bundle in force on every request): a certificate a reloaded CRL revokes, or whose CA a
/// reload drops, is refused (401) on its open connection from the next request on, and nothing
/// reaches the upstream; a session saved before the reload is not resumed after it; a
/// connection the new CAs still trust goes on being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_holds_open_connections_to_the_new_client_cas_and_crls() {
    use http::StatusCode;
    use rustls::HandshakeKind::{Full, Resumed};
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let dir = b.files.config.parent().unwrap().to_owned();
    let base = std::fs::read_to_string(&b.files.config).unwrap();
    let with_cas = |cas: &str| base.replace("    ca_files: [ca.crt]\n", cas);
    let client = |cert| Arc::new(common::client_tls(&b.ca, Some(cert), &[b"http/1.1"]));
    let admin = admin_cert(&b);
    let mallory = b.ca.client_cert_with_serial("mallory", 4242).unwrap();
    let admin_tls = client(&admin);
    let (kind, mut admins) = common::connect(b.listen, &admin_tls).await.unwrap();
    assert_eq!(kind, Some(Full));
    // (A first answer read also reads the session tickets sent after the handshake.)
    assert_eq!(common::get_api(&mut admins).await, Some(StatusCode::OK));
    let (kind, mut resumed) = common::connect(b.listen, &admin_tls).await.unwrap();
    assert_eq!(
        kind,
        Some(Resumed),
        "a second connection resumes the session"
    );
    let (_, mut mallorys) = common::connect(b.listen, &client(&mallory)).await.unwrap();
    for conn in [&mut resumed, &mut mallorys] {
        assert_eq!(common::get_api(conn).await, Some(StatusCode::OK));
    }

    // Reload 1: the same CA, and a CRL that revokes mallory's certificate.
    std::fs::write(dir.join("revoked.crl"), b.ca.crl(&[4242]).unwrap()).unwrap();
    b.write_config(&with_cas(
        "    ca_files: [ca.crt]\n    crl_files: [revoked.crl]\n",
    ));
    b.reload_and_clear_recorded(1).await;
    assert_eq!(
        common::get_api(&mut mallorys).await,
        Some(StatusCode::UNAUTHORIZED),
        "a certificate the reloaded CRL revokes, on its open connection"
    );
    assert_upstream_saw_nothing(&b);
    for conn in [&mut admins, &mut resumed] {
        assert_eq!(
            common::get_api(conn).await,
            Some(StatusCode::OK),
            "verified again and still trusted"
        );
    }

    // Reload 2: only another CA's certificates are accepted.
    let other = portcullis_sandbox::pki::Ca::new("another client CA").unwrap();
    std::fs::write(dir.join("other-ca.crt"), &other.cert.cert_pem).unwrap();
    b.write_config(&with_cas("    ca_files: [other-ca.crt]\n"));
    b.reload_and_clear_recorded(2).await;
    for conn in [&mut admins, &mut resumed] {
        assert_eq!(
            common::get_api(conn).await,
            Some(StatusCode::UNAUTHORIZED),
            "a connection whose CA the reload dropped"
        );
    }
    // The client still holds its session from before the reload: it must not resume it.
    if let Some((kind, mut late)) = common::connect(b.listen, &admin_tls).await {
        assert_ne!(
            kind,
            Some(Resumed),
            "a session from before the reload resumed"
        );
        assert_ne!(common::get_api(&mut late).await, Some(StatusCode::OK));
    }
    assert_upstream_saw_nothing(&b);
    // The new CA's certificates are served, on new connections.
    let newcomer = other.client_cert("admin", &["demo:admins"]).unwrap();
    assert!(common::cert_connects(b.listen, &b.ca, &newcomer).await);
    assert_eq!(b.reloads("failure").await, 0);
    b.stop().await;
}

/// The demo's binary, polling every 200 ms, with its upstream read from the demo's
/// `upstream.kubeconfig` instead of `url` / `ca_file` / `token_file`.
async fn through_upstream_kubeconfig() -> Binary {
    Binary::start(&["--reload-poll", "200ms"], |c| {
        *c = c
            .replace(
                "upstream:\n  url: ",
                "upstream:\n  kubeconfig: {path: upstream.kubeconfig}\n  #url: ",
            )
            .replace(
                "  ca_file: ca.crt\n  credentials:\n    token_file: proxy.token\n",
                "",
            );
    })
    .await
}

/// The upstream's kubeconfig is watched like the files the config names: a change to it
/// (here its token, as a rotation would) reloads without a signal, and the upstream is
/// rebuilt from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_the_upstream_kubeconfig_reloads() {
    common::require_kubectl();
    let b = through_upstream_kubeconfig().await;
    ci_reads(&b)
        .await
        .expect("served through the kubeconfig's upstream");
    let kc = std::fs::read_to_string(&b.files.upstream_kubeconfig).unwrap();
    std::fs::write(&b.files.upstream_kubeconfig, format!("{kc}\n# rotated\n")).unwrap();
    b.wait_reloads("success", 1).await;
    ci_reads(&b).await.expect("still served after the reload");
    b.stop().await;
}

/// A kubeconfig that names its client certificate and key as files (what cert-manager
/// rotates in place, the kubeconfig itself unchanged): a rotation reloads, so the proxy
/// presents the new certificate before the old one expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_rotated_under_the_upstream_kubeconfig_reloads() {
    common::require_kubectl();
    let b = through_upstream_kubeconfig().await;
    // The sandbox binds `portcullis-proxy`, a client-certificate proxy identity, to the
    // impersonator role.
    let issue = || {
        let id = b.ca.client_cert("portcullis-proxy", &[]).unwrap();
        std::fs::write(b.files.dir.join("proxy-client.crt"), &id.cert_pem).unwrap();
        std::fs::write(b.files.dir.join("proxy-client.key"), &id.key_pem).unwrap();
    };
    issue();
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster: {{server: \"{}\", certificate-authority: ca.crt}}\nusers:\n- name: p\n  user: {{client-certificate: proxy-client.crt, client-key: proxy-client.key}}\ncontexts:\n- name: s\n  context: {{cluster: s, user: p}}\ncurrent-context: s\n",
        b.sandbox.url()
    );
    std::fs::write(&b.files.upstream_kubeconfig, kc).unwrap();
    b.wait_reloads("success", 1).await;
    ci_reads(&b)
        .await
        .expect("served as the kubeconfig's client certificate");
    issue();
    b.wait_reloads("success", 2).await;
    ci_reads(&b)
        .await
        .expect("served with the rotated certificate");
    assert_eq!(b.reloads("failure").await, 0);
    b.stop().await;
}

/// An audit webhook receiver on loopback (plain http, which the sink allows there): each
/// event's `Authorization` header and `requestURI`, as received.
struct Siem {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Siem {
    async fn start() -> Siem {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let log = log.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body: hyper::body::Incoming = req.into_body();
                            let body = body.collect().await?.to_bytes();
                            let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            assert_eq!(list["kind"], "EventList");
                            for e in list["items"].as_array().unwrap() {
                                let uri = e["requestURI"].as_str().unwrap().to_owned();
                                log.lock().unwrap().push((auth.clone(), uri));
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Empty::<
                                bytes::Bytes,
                            >::new(
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Siem { url, seen }
    }

    /// `kind: Config` with one context posting to this receiver with `token`.
    fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: siem\n  cluster: {{server: \"{}\"}}\nusers:\n- name: siem\n  user: {{token: {token}}}\ncontexts:\n- name: siem\n  context: {{cluster: siem, user: siem}}\ncurrent-context: siem\n",
            self.url
        )
    }

    /// How many events of ci-bot's read arrived, with `Bearer <token>`.
    fn ci_events(&self, token: &str) -> usize {
        let bearer = format!("Bearer {token}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(auth, uri)| *auth == bearer && uri.starts_with(CI_PATH))
            .count()
    }

    fn all(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Kube-apiserver reads its webhook kubeconfig only at start; here a changed receiver (a
/// collector moved, its token rotated) applies at the next reload, which the file's change
/// itself starts — and a kubeconfig the sink cannot use is refused with its key path while
/// the running receiver keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_audit_webhook_kubeconfig_re_points_the_sink() {
    common::require_kubectl();
    let (first, second) = (Siem::start().await, Siem::start().await);
    let kc_dir = tempfile::tempdir().unwrap();
    let kc = kc_dir.path().join("siem.kubeconfig");
    std::fs::write(&kc, first.kubeconfig("first-token")).unwrap();
    let sink = format!(
        "      mode: blocking-strict      # no answer leaves before its event is on disk\n    - name: siem\n      webhook: {{kubeconfig: {}, max_retries: 0, request_timeout: 2s}}\n      mode: blocking\n",
        kc.display()
    );
    let b = Binary::start(&["--reload-poll", "200ms"], |c| {
        *c = c.replace(
            "      mode: blocking-strict      # no answer leaves before its event is on disk\n",
            &sink,
        );
    })
    .await;
    ci_reads(&b).await.expect("ci-bot reads");
    // `blocking`: the answer left after the receiver took its event.
    assert!(first.ci_events("first-token") >= 1, "{:?}", first.seen);
    assert_eq!(second.all(), 0);

    // Moved and rotated: noticed by the watch, no signal.
    replace(&kc, second.kubeconfig("second-token").as_bytes());
    b.wait_reloads("success", 1).await;
    let before = first.all();
    ci_reads(&b).await.expect("ci-bot reads after the reload");
    assert!(second.ci_events("second-token") >= 1, "{:?}", second.seen);
    assert_eq!(first.all(), before, "the old receiver still got events");
    assert!(
        b.log().contains("audit webhook receiver changed"),
        "{}",
        b.log()
    );

    // A receiver the sink refuses (plain http off the host): refused whole, with the key
    // path; the second receiver keeps getting every event.
    replace(
        &kc,
        second
            .kubeconfig("third-token")
            .replace(&second.url, "http://192.0.2.1/events")
            .as_bytes(),
    );
    let log = b
        .log_when(|log| log.contains("key=audit.sinks[1].webhook.kubeconfig"))
        .await;
    assert!(
        log.lines()
            .any(|l| l.contains("configuration reload refused")
                && l.contains("key=audit.sinks[1].webhook.kubeconfig")
                && l.contains("plain http")),
        "{log}"
    );
    assert!(b.reloads("failure").await >= 1);
    assert_eq!(b.reloads("success").await, 1);
    let before = second.ci_events("second-token");
    ci_reads(&b)
        .await
        .expect("ci-bot reads after the refused reload");
    assert!(
        second.ci_events("second-token") > before,
        "{:?}",
        second.seen
    );
    b.stop().await;
}

/// A reload that replaces the upstream's URL drops the old endpoint's series: a breaker
/// gauge left behind (perhaps at "open") for an API server no longer configured would keep an
/// alert firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_upstream_endpoint_leaves_no_metric_series() {
    common::require_kubectl();
    let b = Binary::start(&["--reload-poll", "0s"], |_| {}).await;
    let old = b.sandbox.url();
    let new = format!("https://localhost:{}", b.sandbox.addr.port());
    let series =
        |endpoint: &str| format!("portcullis_upstream_breaker_state{{endpoint=\"{endpoint}\"}}");
    let (_, metrics) = common::admin_get(b.admin, "/metrics").await;
    assert!(metrics.contains(&series(&old)), "{metrics}");
    let text = std::fs::read_to_string(&b.files.config).unwrap();
    assert!(text.contains(&format!("url: {old}\n")));
    b.write_config(&text.replace(&format!("url: {old}\n"), &format!("url: {new}\n")));
    b.reload_and_clear_recorded(1).await;
    ci_reads(&b).await.expect("served through the new URL");
    let (_, metrics) = common::admin_get(b.admin, "/metrics").await;
    assert!(metrics.contains(&series(&new)), "{metrics}");
    assert!(
        !metrics.contains(&format!("endpoint=\"{old}\"")),
        "the removed endpoint's series stayed:\n{metrics}"
    );
    b.stop().await;
}

/// An issuer whose tokens are EdDSA, configured without an `algorithms` list (EdDSA left the
/// default list, kube-apiserver's, on 2026-12-07), as its operator meets it in the real binary:
/// - its keys beside a key the default list can use: its EdDSA tokens get a 401 `Status` that
///   never reaches the upstream, and the log says once — not once per token — that the issuer
///   publishes an EdDSA key its list leaves out, and what to add;
/// - its keys alone: a reload is refused at the issuer's `algorithms`, the old config serving;
/// - with `algorithms: [EdDSA]`: the reload applies and the same token is forwarded as its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eddsa_issuer_without_a_list_is_named_in_the_log_and_at_reload() {
    use http::{Request, StatusCode};
    use portcullis::authn::jwt::mint;
    use serde_json::{json, Value};

    let keys = tempfile::tempdir().unwrap();
    let (ed_pem, _) = mint::generate_ed25519("ed").unwrap();
    let ed = mint::Signer::from_pem(&ed_pem, Some("ed")).unwrap();
    let (_, es_jwks) = mint::generate_es256("es").unwrap();
    let es_jwk = serde_json::from_str::<Value>(&es_jwks).unwrap()["keys"][0].clone();
    let mixed = keys.path().join("mixed.json");
    let ed_only = keys.path().join("ed-only.json");
    std::fs::write(
        &mixed,
        json!({"keys": [ed.public_jwk(), es_jwk]}).to_string(),
    )
    .unwrap();
    std::fs::write(&ed_only, json!({"keys": [ed.public_jwk()]}).to_string()).unwrap();
    let anchor = "        groups: {claim: groups, prefix: \"\"}\n";
    let issuer = format!(
        "    - issuer: {{url: https://ed.example, audiences: [portcullis], jwks_file: {}}}\n      claim_mappings:\n        username: {{claim: sub, prefix: \"\"}}\n{anchor}",
        mixed.display()
    );
    let b = Binary::start(&["--reload-poll", "0s"], |config| {
        assert!(config.contains(anchor), "the demo issuer's mappings moved");
        *config = config.replacen(anchor, &format!("{anchor}{issuer}"), 1);
    })
    .await;
    let good = std::fs::read_to_string(&b.files.config).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = ed
        .issue(&json!({
            "iss": "https://ed.example", "aud": ["portcullis"], "sub": "alice",
            "groups": ["tenant:team-a"], "iat": now, "exp": now + 600,
        }))
        .unwrap();
    let get = || {
        Request::builder()
            .uri("https://localhost/api/v1/namespaces/team-a/pods")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    b.sandbox.sandbox.clear_recorded();
    for _ in 0..2 {
        let resp = common::https_request(b.listen, &b.ca, get(), None, false).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let status: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some(401))
        );
    }
    assert_upstream_saw_nothing(&b);
    let warned = |l: &str| {
        l.contains("https://ed.example") && l.contains("add EdDSA to that issuer's `algorithms`")
    };
    let log = b.log_when(|log| log.lines().any(warned)).await;
    assert_eq!(log.lines().filter(|l| warned(l)).count(), 1, "{log}");

    b.write_config(&good.replace(&mixed.display().to_string(), &ed_only.display().to_string()));
    hup(&b, "failure", 1).await;
    refusal_logged(
        &b,
        "authentication.jwt[1].algorithms",
        "its keys check EdDSA",
    )
    .await;

    let listed = good.replace(
        &format!("jwks_file: {}}}\n", mixed.display()),
        &format!(
            "jwks_file: {}}}\n      algorithms: [EdDSA]\n",
            ed_only.display()
        ),
    );
    assert_ne!(listed, good);
    b.write_config(&listed);
    b.reload_and_clear_recorded(1).await;
    let resp = common::https_request(b.listen, &b.ca, get(), None, false).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    assert_eq!(seen_for(&b, "alice", "/api/v1/namespaces/team-a/pods"), 1);
    b.stop().await;
}
