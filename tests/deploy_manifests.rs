//! deploy/: every overlay renders with `kubectl kustomize`; every rendered object is accepted by
//! the sandbox API server (`kubectl apply --dry-run=server`, directly and through the proxy);
//! the rendered pods pass the proxy's own Pod Security check at `restricted` (the library, not a
//! copy of the rules) and carry what the issue asks of them; the config in the ConfigMap passes
//! `portcullis check-config` with the files the pod mounts laid out as in the pod.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{direct, stderr, stdout, Env};
use portcullis::sanitize::pss::{check_object, Level, Policy};
use serde_json::Value;

const OVERLAYS: [&str; 2] = ["single", "ha"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kustomize(dir: &Path) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        stderr(&out)
    );
    stdout(&out)
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn rendered(overlay: &str) -> (String, Vec<Value>) {
    let text = kustomize(&repo().join("deploy/overlays").join(overlay));
    let objs = objects(&text);
    (text, objs)
}

#[test]
fn every_overlay_renders_the_promised_objects() {
    common::require_kubectl();
    for overlay in OVERLAYS {
        let (_, objs) = rendered(overlay);
        for (kind, name) in [
            ("Namespace", "portcullis"),
            ("ServiceAccount", "portcullis"),
            ("ClusterRole", "portcullis-impersonator"),
            ("ClusterRoleBinding", "portcullis-impersonator"),
            ("ConfigMap", "portcullis-config"),
            ("Service", "portcullis"),
            ("Deployment", "portcullis"),
            ("NetworkPolicy", "portcullis"),
        ] {
            let o = find(&objs, kind, name);
            if kind != "Namespace" && !kind.starts_with("Cluster") {
                assert_eq!(
                    o["metadata"]["namespace"], "portcullis",
                    "{overlay}: {kind}"
                );
            }
        }
        // The narrow impersonation role: impersonate only, nothing else.
        let role = find(&objs, "ClusterRole", "portcullis-impersonator");
        for rule in role["rules"].as_array().unwrap() {
            let verbs = rule["verbs"].as_array().unwrap();
            let ssar = rule["resources"] == serde_json::json!(["selfsubjectaccessreviews"]);
            assert!(
                verbs == &[Value::from("impersonate")]
                    || (ssar && verbs == &[Value::from("create")]),
                "{overlay}: the proxy's role grants more than impersonation: {rule}"
            );
        }
        let binding = find(&objs, "ClusterRoleBinding", "portcullis-impersonator");
        assert_eq!(binding["subjects"][0]["name"], "portcullis");
        assert_eq!(binding["subjects"][0]["namespace"], "portcullis");

        let d = find(&objs, "Deployment", "portcullis");
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(pod["serviceAccountName"], "portcullis");
        // The kill waits for the whole shutdown: the drain (the overlay's `shutdown.grace`),
        // then up to 5 s for streams ending, 5 s for emits under way and 10 s for the sinks.
        let config = find(&objs, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
        let seconds = |key: &str| -> u64 {
            config
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.strip_suffix('s')?.parse().ok())
                .unwrap_or_else(|| panic!("{overlay}: no shutdown.{key} in seconds"))
        };
        let (delay, grace) = (seconds("delay: "), seconds("grace: "));
        // The delay lets endpoints update before the listener closes (kube-apiserver's
        // --shutdown-delay-duration); it comes out of the same budget.
        assert!(delay >= 5, "{overlay}: shutdown.delay {delay} s");
        let kill_after = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            kill_after >= delay + grace + 20,
            "{overlay}: killed {kill_after} s after SIGTERM, delay {delay} s, grace {grace} s"
        );
        for what in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][what][res].is_string(),
                    "{overlay}: {what}.{res}"
                );
            }
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "admin", "{overlay}: {probe}");
        }
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        // The audit log is the one writable path.
        let writable: Vec<&str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["readOnly"] != true)
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(writable, ["/var/log/portcullis"], "{overlay}");
        let np = find(&objs, "NetworkPolicy", "portcullis");
        assert_eq!(
            np["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        let egress_ports: Vec<i64> = np["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap().iter())
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        for port in [443, 6443, 53, 4318] {
            assert!(egress_ports.contains(&port), "{overlay}: egress {port}");
        }
        if overlay == "ha" {
            assert_eq!(d["spec"]["replicas"], 3);
            assert_eq!(
                pod["topologySpreadConstraints"].as_array().unwrap().len(),
                2
            );
            let pdb = find(&objs, "PodDisruptionBudget", "portcullis");
            assert_eq!(pdb["spec"]["minAvailable"], 2);
            find(&objs, "Deployment", "portcullis-redis");
            find(&objs, "Service", "portcullis-redis");
            assert!(egress_ports.contains(&6379), "ha: egress to Redis");
        } else {
            assert_eq!(d["spec"]["replicas"], 1);
            assert!(!objs.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
        }
    }
}

#[test]
fn every_rendered_pod_passes_pod_security_restricted() {
    common::require_kubectl();
    let restricted = Policy::latest(Level::Restricted);
    let mut judged = 0;
    for overlay in OVERLAYS {
        let (_, objs) = rendered(overlay);
        for o in objs.iter().filter(|o| o["kind"] == "Deployment") {
            let v = check_object(&restricted, "apps", "deployments", o);
            assert!(
                v.is_empty(),
                "{overlay}: {} violates restricted: {v:?}",
                o["metadata"]["name"]
            );
            judged += 1;
        }
        let ns = find(&objs, "Namespace", "portcullis");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }
    assert_eq!(judged, 3, "single: portcullis; ha: portcullis + redis");
    // The check is not vacuous: the same library refuses the pod without its securityContext.
    let (_, objs) = rendered("single");
    let mut loose = find(&objs, "Deployment", "portcullis").clone();
    loose["spec"]["template"]["spec"]["containers"][0]["securityContext"] = Value::Null;
    assert!(!check_object(&restricted, "apps", "deployments", &loose).is_empty());
}

#[test]
fn the_optional_components_render() {
    common::require_kubectl();
    // A throwaway overlay using both components, the way the overlays' comments show. kustomize
    // refuses absolute paths to a base, so it lives in the repository's deploy/ tree for the run.
    let dir = repo()
        .join("deploy/overlays")
        .join(format!(".test-components-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [../single]\ncomponents: [../../components/cert-manager, ../../components/servicemonitor]\n",
    )
    .unwrap();
    let text = kustomize(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let objs = objects(&text);
    let cert = find(&objs, "Certificate", "portcullis-tls");
    assert_eq!(cert["spec"]["secretName"], "portcullis-tls");
    assert_eq!(cert["metadata"]["namespace"], "portcullis");
    let sm = find(&objs, "ServiceMonitor", "portcullis");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    // The port the ServiceMonitor names exists on the Service.
    let svc = find(&objs, "Service", "portcullis");
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "admin"));
}

/// The files the pod mounts, laid out under `root` as in the pod (`/etc/portcullis/...`), with
/// the ConfigMap's data from `objs`; returns the config path.
fn lay_out_pod_files(root: &Path, objs: &[Value], env: &Env) -> PathBuf {
    let etc = root.join("etc/portcullis");
    let cm = find(objs, "ConfigMap", "portcullis-config");
    let config_dir = etc.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    for (name, text) in cm["data"].as_object().unwrap() {
        std::fs::write(config_dir.join(name), text.as_str().unwrap()).unwrap();
    }
    let demo = &env.files.dir;
    for (dir, name, from) in [
        ("tls", "tls.crt", "proxy.crt"),
        ("tls", "tls.key", "proxy.key"),
        ("client-ca", "ca.crt", "ca.crt"),
    ] {
        std::fs::create_dir_all(etc.join(dir)).unwrap();
        std::fs::copy(demo.join(from), etc.join(dir).join(name)).unwrap();
    }
    std::fs::create_dir_all(etc.join("audit-signing")).unwrap();
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "keygen", "--out"])
        .arg(etc.join("audit-signing/signing.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "keygen: {}", stderr(&keygen));
    // The service-account mount of upstream.in_cluster.
    let sa = root.join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::copy(demo.join("ca.crt"), sa.join("ca.crt")).unwrap();
    std::fs::write(sa.join("token"), "a-projected-token").unwrap();
    config_dir.join("portcullis.yaml")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configmap_config_passes_check_config() {
    common::require_kubectl();
    let env = Env::start().await;
    for overlay in OVERLAYS {
        let (_, objs) = rendered(overlay);
        let root = env.dir.path().join(format!("pod-{overlay}"));
        let config = lay_out_pod_files(&root, &objs, &env);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env(
                "PORTCULLIS_SERVICE_ACCOUNT_DIR",
                root.join("serviceaccount"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay}: check-config refused the ConfigMap's config:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(": ok"), "{overlay}: {}", stdout(&out));
    }
    // The ConfigMap carries the repository's audit policy unchanged.
    let (_, objs) = rendered("single");
    let cm = find(&objs, "ConfigMap", "portcullis-config");
    let policy = std::fs::read_to_string(repo().join("config/audit-policy.yaml")).unwrap();
    assert_eq!(cm["data"]["audit-policy.yaml"], policy.as_str());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rendered_object_is_accepted_by_the_api_server() {
    common::require_kubectl();
    let env = Env::start().await;
    let admin = direct::admin(&env);
    for overlay in OVERLAYS {
        let (text, objs) = rendered(overlay);
        let file = env.dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &text).unwrap();
        // The namespace for real (a dry run creates nothing to put the others in), then every
        // object as a server-side dry run: directly, then through the proxy as the demo admin.
        let ns = direct::k_in(
            &admin,
            &env,
            &["apply", "-f", "-"],
            &serde_json::to_string(find(&objs, "Namespace", "portcullis")).unwrap(),
        )
        .await;
        direct::ok(&ns);
        let path = file.to_str().unwrap();
        let direct_run = direct::k(&admin, &env, &["apply", "--dry-run=server", "-f", path]).await;
        let proxied = env
            .kubectl(&["apply", "--dry-run=server", "-f", path])
            .await;
        for (via, out) in [("directly", direct_run), ("through the proxy", proxied)] {
            let printed = direct::ok(&out);
            for o in &objs {
                let kind = o["kind"].as_str().unwrap().to_lowercase();
                let name = o["metadata"]["name"].as_str().unwrap();
                assert!(
                    printed.lines().any(|l| l.contains(&format!("/{name} "))
                        && l.contains(&kind)
                        && l.ends_with("(server dry run)")),
                    "{overlay} {via}: {kind} {name} not accepted:\n{printed}"
                );
            }
        }
    }
    // Dry runs stored nothing.
    let cms = direct::k(
        &admin,
        &env,
        &["get", "configmaps", "-n", "portcullis", "-o", "name"],
    )
    .await;
    assert!(!direct::ok(&cms).contains("portcullis-config"));
    env.stop().await;
}

/// The walk-through of README "Deploying", minus the cluster: the binary runs with the
/// ConfigMap's config exactly as the pod mounts it (in-cluster upstream from the service-account
/// mount, the three Secrets, the base's grant), in front of the sandbox; an administrator whose
/// certificate carries `O=platform:admins` runs `kubectl get ns` through it, and the audit log
/// records the request. Only the addresses (the pod's fixed ports) and the audit file's folder
/// (the pod's volume) are moved for the test.
#[tokio::test(flavor = "multi_thread")]
async fn the_pod_s_config_serves_kubectl_get_ns() {
    common::require_kubectl();
    let env = Env::start().await;
    let (_, objs) = rendered("single");
    let root = env.dir.path().join("pod");
    let config = lay_out_pod_files(&root, &objs, &env);
    let sa = root.join("serviceaccount");
    std::fs::write(
        sa.join("token"),
        portcullis_sandbox::demo::proxy_token(&env.ca),
    )
    .unwrap();
    let (listen, admin) = (common::free_port(), common::free_port());
    let audit_dir = root.join("var-log-portcullis");
    std::fs::create_dir_all(&audit_dir).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    for from in ["0.0.0.0:8443", "0.0.0.0:9090", "/var/log/portcullis/"] {
        assert!(text.contains(from), "the pod's config no longer has {from}");
    }
    let text = text
        .replace("0.0.0.0:8443", &listen.to_string())
        .replace("0.0.0.0:9090", &admin.to_string())
        .replace("/var/log/portcullis/", &format!("{}/", audit_dir.display()));
    std::fs::write(&config, text).unwrap();
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env(
            "KUBERNETES_SERVICE_PORT",
            env.sandbox.addr.port().to_string(),
        )
        .env("PORTCULLIS_SERVICE_ACCOUNT_DIR", &sa)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = common::poll(std::time::Duration::from_secs(30), || {
        std::net::TcpStream::connect(listen).ok()
    })
    .await;
    assert!(
        up.is_some(),
        "the proxy did not start with the pod's config"
    );

    // Upstream RBAC still applies to the impersonated caller: the cluster's own binding for the
    // administrators' group (README "Deploying", step 4).
    let bind = direct::k_in(
        &direct::admin(&env),
        &env,
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: platform-admins}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"platform:admins\"}]\n",
    )
    .await;
    direct::ok(&bind);
    let me = env.ca.client_cert("me", &["platform:admins"]).unwrap();
    let dir = env.dir.path();
    for (name, pem) in [
        ("me.crt", &me.cert_pem),
        ("me.key", &me.key_pem),
        ("proxy-ca.crt", &env.ca.cert.cert_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let kubeconfig = dir.join("via-portcullis.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: p\n  cluster: {{server: \"https://{listen}\", certificate-authority: {ca}}}\n\
             users:\n- name: me\n  user: {{client-certificate: {crt}, client-key: {key}}}\n\
             contexts:\n- name: p\n  context: {{cluster: p, user: me}}\ncurrent-context: p\n",
            ca = dir.join("proxy-ca.crt").display(),
            crt = dir.join("me.crt").display(),
            key = dir.join("me.key").display(),
        ),
    )
    .unwrap();
    let out = common::kubectl(&kubeconfig, dir, &["get", "ns"]).await;
    assert!(out.status.success(), "kubectl get ns: {}", stderr(&out));
    assert!(stdout(&out).contains("default"), "{}", stdout(&out));
    // Someone outside the grant is refused by the same config.
    let stranger = env.ca.client_cert("stranger", &["nobody"]).unwrap();
    std::fs::write(dir.join("me.crt"), &stranger.cert_pem).unwrap();
    std::fs::write(dir.join("me.key"), &stranger.key_pem).unwrap();
    let out = common::kubectl(&kubeconfig, dir, &["get", "ns"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("User \"stranger\" cannot list resource \"namespaces\""),
        "{}",
        stderr(&out)
    );
    let log = std::fs::read_to_string(audit_dir.join("audit.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"username\":\"me\"") && l.contains("\"resource\":\"namespaces\"")),
        "no audit event for the request:\n{log}"
    );
    proxy.kill().await.unwrap();
    env.stop().await;
}
