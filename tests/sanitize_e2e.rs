//! Issue 5 end to end: body sanitization through the proxy to the sandbox, with the demo config
//! (team-a enforces `restricted`, team-b enforces `baseline` and warns `restricted`, other
//! namespaces are unchecked; tenants may not set `nodeName` / `hostAliases`; `status` is stripped
//! from pod creates). Every refusal checks the Status *and* that the upstream saw no write; every
//! accepted body checks what the upstream received.
// Test code: a failed unwrap / expect / panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::Env;
use http::{Request, Response};
use http_body_util::Full;
use serde_json::{json, Value};

fn status(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn req(method: &str, path: &str, ct: Option<&str>, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(body.into())).unwrap()
}

fn json_req(method: &str, path: &str, ct: &str, v: &Value) -> Request<Full<Bytes>> {
    req(method, path, Some(ct), serde_json::to_vec(v).unwrap())
}

/// A strategic merge patch of `path`.
fn smp(path: &str, v: &Value) -> Request<Full<Bytes>> {
    json_req("PATCH", path, "application/strategic-merge-patch+json", v)
}

/// A refusal's `Status` message.
fn message(s: &Value) -> &str {
    s["message"].as_str().unwrap_or_default()
}

/// Writes (anything but GET) the upstream saw since the last clear.
fn writes(env: &Env) -> Vec<String> {
    env.sandbox
        .sandbox
        .recorded()
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn send_as(env: &Env, r: Request<Full<Bytes>>, token: Option<&str>) -> Response<Bytes> {
    match token {
        // h2, as kubectl: a refusal before the body is read cannot break the request's pipe.
        None => env.request(r, Some(&env.admin_cert), true).await,
        Some(t) => {
            let (mut parts, body) = r.into_parts();
            parts
                .headers
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            env.request(Request::from_parts(parts, body), None, true)
                .await
        }
    }
}

/// Expect `code`/`reason` and that no write reached the upstream.
async fn refused_as(
    env: &Env,
    r: Request<Full<Bytes>>,
    token: Option<&str>,
    code: u16,
    reason: &str,
) -> Value {
    env.sandbox.sandbox.clear_recorded();
    let what = format!("{} {}", r.method(), r.uri());
    let resp = send_as(env, r, token).await;
    let s = status(resp.body());
    assert_eq!(resp.status().as_u16(), code, "{what}: {s}");
    assert_eq!(s["kind"], "Status", "{what}");
    assert_eq!(s["reason"], reason, "{what}: {s}");
    assert_eq!(s["code"], code, "{what}");
    let w = writes(env);
    assert!(w.is_empty(), "{what} reached the upstream: {w:?}");
    s
}

async fn refused(env: &Env, r: Request<Full<Bytes>>, code: u16, reason: &str) -> Value {
    refused_as(env, r, None, code, reason).await
}

/// A pod the admin creates in team-a, expected refused: 403 Forbidden, never sent upstream.
async fn refused_pod(env: &Env, pod: &Value) -> Value {
    let create = json_req(
        "POST",
        "/api/v1/namespaces/team-a/pods",
        "application/json",
        pod,
    );
    refused(env, create, 403, "Forbidden").await
}

/// Expect success; return the response and the body the upstream received for the write.
async fn accepted_as(
    env: &Env,
    r: Request<Full<Bytes>>,
    token: Option<&str>,
) -> (Response<Bytes>, Value) {
    env.sandbox.sandbox.clear_recorded();
    let what = format!("{} {}", r.method(), r.uri());
    let method = r.method().clone();
    let resp = send_as(env, r, token).await;
    assert!(
        resp.status().is_success(),
        "{what}: {} {}",
        resp.status(),
        String::from_utf8_lossy(resp.body())
    );
    let rec = env.sandbox.sandbox.recorded();
    let write = rec
        .iter()
        .find(|r| r.method == method)
        .unwrap_or_else(|| panic!("{what}: upstream saw no {method}: {rec:?}"));
    let bytes = write.body.clone().expect("the sandbox recorded the body");
    let v: Value = serde_json::from_slice(&bytes).expect("upstream received JSON");
    // What went upstream is exactly the canonical serialization (no duplicates, no whitespace).
    assert_eq!(
        bytes.as_ref(),
        portcullis::sanitize::parse::canonical_bytes(&v).as_slice(),
        "{what}: forwarded body is not canonical"
    );
    assert_eq!(
        write
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(bytes.len().to_string().as_str()),
        "{what}: content-length"
    );
    (resp, v)
}

async fn accepted(env: &Env, r: Request<Full<Bytes>>) -> (Response<Bytes>, Value) {
    accepted_as(env, r, None).await
}

fn causes(s: &Value) -> Vec<(String, String)> {
    s["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or_default().to_owned(),
                        message(c).to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_cause(s: &Value, field: &str) -> bool {
    causes(s).iter().any(|(f, _)| f == field)
}

/// A pod spec that satisfies `restricted`.
fn good_spec() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "nginx",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
    })
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

/// (resource path under the namespace, object, field prefix of the pod spec) for each kind.
fn kinds(ns: &str, name: &str, spec: Value) -> Vec<(String, Value, &'static str)> {
    let tpl = json!({"metadata": {"labels": {"app": name}}, "spec": spec});
    let mut job_tpl = tpl.clone();
    job_tpl["spec"]["restartPolicy"] = json!("Never");
    let sel = json!({"matchLabels": {"app": name}});
    let meta = json!({"name": name});
    let core = format!("/api/v1/namespaces/{ns}");
    let apps = format!("/apis/apps/v1/namespaces/{ns}");
    let batch = format!("/apis/batch/v1/namespaces/{ns}");
    vec![
        (format!("{core}/pods"), pod(name, spec.clone()), "spec"),
        (
            format!("{core}/podtemplates"),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta, "template": tpl}),
            "template.spec",
        ),
        (
            format!("{core}/replicationcontrollers"),
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta,
                "spec": {"replicas": 1, "selector": {"app": name}, "template": tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{apps}/replicasets"),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
                "spec": {"selector": sel, "template": tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{apps}/deployments"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {"selector": sel, "template": tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{apps}/statefulsets"),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                "spec": {"selector": sel, "serviceName": name, "template": tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{apps}/daemonsets"),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
                "spec": {"selector": sel, "template": tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{batch}/jobs"),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": {"template": job_tpl}}),
            "spec.template.spec",
        ),
        (
            format!("{batch}/cronjobs"),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_tpl}}}}),
            "spec.jobTemplate.spec.template.spec",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_bearing_kind_is_judged() {
    let env = Env::start().await;
    let mut bad = good_spec();
    bad["containers"][0]["securityContext"]["privileged"] = json!(true);
    for (path, obj, prefix) in kinds("team-a", "bad", bad) {
        let s = refused(
            &env,
            json_req("POST", &path, "application/json", &obj),
            403,
            "Forbidden",
        )
        .await;
        let field = format!("{prefix}.containers[0].securityContext.privileged");
        assert!(has_cause(&s, &field), "{path}: {s}");
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .contains("violates PodSecurity \"restricted:latest\""),
            "{s}"
        );
        // PodSecurity's 403: `details.kind` is the resource, and the message names the
        // template of a kind other than Pod.
        let resource = path.rsplit('/').next().unwrap();
        assert_eq!(s["details"]["kind"], resource, "{s}");
        assert_eq!(s["details"]["name"], "bad");
        let message = s["message"].as_str().unwrap();
        if resource == "pods" {
            assert!(message.starts_with("pods \"bad\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container "), "{message}");
        } else {
            let template = prefix.strip_suffix(".spec").unwrap();
            assert!(message.contains(&format!("\"bad\" is forbidden: violates PodSecurity \"restricted:latest\" in {template}: privileged (container ")), "{message}");
        }
    }
    for (path, obj, _) in kinds("team-a", "good", good_spec()) {
        let (_, upstream) = accepted(&env, json_req("POST", &path, "application/json", &obj)).await;
        assert_eq!(upstream, obj, "{path}");
    }
    // Unchecked namespaces stay unchecked.
    let mut bad = good_spec();
    bad["hostPID"] = json!(true);
    for (path, obj, _) in kinds("default", "host", bad) {
        accepted(&env, json_req("POST", &path, "application/json", &obj)).await;
    }
    env.stop().await;
}

type Edit = fn(&mut Value);

/// Each Pod Security check: an edit of a restricted-compliant spec that violates it (with the
/// field the cause must name), and one that stays within it.
fn checks() -> Vec<(&'static str, Edit, &'static str, Edit)> {
    vec![
        (
            "hostNamespaces/hostNetwork",
            |s| s["hostNetwork"] = json!(true),
            "spec.hostNetwork",
            |s| s["hostNetwork"] = json!(false),
        ),
        (
            "hostNamespaces/hostPID",
            |s| s["hostPID"] = json!(true),
            "spec.hostPID",
            |s| s["hostPID"] = json!(false),
        ),
        (
            "hostNamespaces/hostIPC",
            |s| s["hostIPC"] = json!(true),
            "spec.hostIPC",
            |s| s["hostIPC"] = json!(false),
        ),
        (
            "privileged",
            |s| s["containers"][0]["securityContext"]["privileged"] = json!(true),
            "spec.containers[0].securityContext.privileged",
            |s| s["containers"][0]["securityContext"]["privileged"] = json!(false),
        ),
        (
            "capabilities_baseline",
            |s| s["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]),
            "spec.containers[0].securityContext.capabilities.add[0]",
            |s| {
                s["containers"][0]["securityContext"]["capabilities"]["add"] =
                    json!(["NET_BIND_SERVICE"])
            },
        ),
        (
            "capabilities_restricted/drop",
            |s| s["containers"][0]["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]),
            "spec.containers[0].securityContext.capabilities.drop",
            |s| {
                s["containers"][0]["securityContext"]["capabilities"]["drop"] =
                    json!(["ALL", "NET_RAW"])
            },
        ),
        (
            "hostPathVolumes",
            |s| s["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]),
            "spec.volumes[0].hostPath",
            |s| s["volumes"] = json!([{"name": "e", "emptyDir": {}}]),
        ),
        (
            "restrictedVolumes",
            |s| s["volumes"] = json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
            "spec.volumes[0].nfs",
            |s| s["volumes"] = json!([{"name": "c", "configMap": {"name": "x"}}]),
        ),
        (
            "hostPorts",
            |s| s["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}]),
            "spec.containers[0].ports[0].hostPort",
            |s| s["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 0}]),
        ),
        (
            "appArmorProfile",
            |s| s["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"}),
            "spec.securityContext.appArmorProfile.type",
            |s| s["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"}),
        ),
        (
            "seLinuxOptions",
            |s| s["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"}),
            "spec.securityContext.seLinuxOptions.type",
            |s| s["securityContext"]["seLinuxOptions"] = json!({"type": "container_t"}),
        ),
        (
            "procMount",
            |s| s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked"),
            "spec.containers[0].securityContext.procMount",
            |s| s["containers"][0]["securityContext"]["procMount"] = json!("Default"),
        ),
        (
            "seccompProfile",
            |s| s["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"}),
            "spec.securityContext.seccompProfile.type",
            |s| {
                s["securityContext"]["seccompProfile"] =
                    json!({"type": "Localhost", "localhostProfile": "p.json"})
            },
        ),
        (
            "sysctls",
            |s| s["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}]),
            "spec.securityContext.sysctls[0].name",
            |s| {
                s["securityContext"]["sysctls"] =
                    json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}])
            },
        ),
        (
            "windowsHostProcess",
            |s| s["securityContext"]["windowsOptions"] = json!({"hostProcess": true}),
            "spec.securityContext.windowsOptions.hostProcess",
            |s| s["securityContext"]["windowsOptions"] = json!({"hostProcess": false}),
        ),
        (
            "hostProbesAndHostLifecycle",
            |s| {
                s["containers"][0]["livenessProbe"] =
                    json!({"httpGet": {"host": "10.0.0.1", "port": 80}})
            },
            "spec.containers[0].livenessProbe.httpGet.host",
            |s| s["containers"][0]["livenessProbe"] = json!({"httpGet": {"port": 80}}),
        ),
        (
            "allowPrivilegeEscalation",
            |s| {
                s["containers"][0]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            },
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            |s| s["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(false),
        ),
        (
            "runAsNonRoot",
            |s| s["securityContext"]["runAsNonRoot"] = json!(false),
            "spec.securityContext.runAsNonRoot",
            |s| s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true),
        ),
        (
            "runAsUser",
            |s| s["securityContext"]["runAsUser"] = json!(0),
            "spec.securityContext.runAsUser",
            |s| s["securityContext"]["runAsUser"] = json!(1000),
        ),
        (
            "seccompProfile_restricted",
            |s| {
                s["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seccompProfile");
            },
            "spec.containers[0].securityContext.seccompProfile.type",
            |s| {
                s["containers"][0]["securityContext"]["seccompProfile"] =
                    json!({"type": "RuntimeDefault"})
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pod_security_check_refuses_and_allows() {
    let env = Env::start().await;
    let path = "/api/v1/namespaces/team-a/pods";
    for (i, (check, bad, field, good)) in checks().into_iter().enumerate() {
        let mut spec = good_spec();
        bad(&mut spec);
        let s = refused(
            &env,
            json_req(
                "POST",
                path,
                "application/json",
                &pod(&format!("bad-{i}"), spec),
            ),
            403,
            "Forbidden",
        )
        .await;
        assert!(
            has_cause(&s, field),
            "{check}: expected a cause at {field}: {s}"
        );
        let mut spec = good_spec();
        good(&mut spec);
        let obj = pod(&format!("good-{i}"), spec);
        let (_, up) = accepted(&env, json_req("POST", path, "application/json", &obj)).await;
        assert_eq!(up, obj, "{check}");
    }
    // Every violation is reported, one cause each.
    let mut spec = good_spec();
    spec["hostPID"] = json!(true);
    spec["containers"][0]["securityContext"]["privileged"] = json!(true);
    spec["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]);
    let s = refused(
        &env,
        json_req("POST", path, "application/json", &pod("many", spec)),
        403,
        "Forbidden",
    )
    .await;
    for f in [
        "spec.hostPID",
        "spec.containers[0].securityContext.privileged",
        "spec.volumes[0].hostPath",
    ] {
        assert!(has_cause(&s, f), "{f}: {s}");
    }
    env.stop().await;
}

async fn create(env: &Env, path: &str, obj: &Value) {
    accepted(env, json_req("POST", path, "application/json", obj)).await;
}

/// The proxy in front of a sandbox holding a compliant Deployment `d1` in `team-a`
/// (`restricted`), and that Deployment's URL.
async fn with_deployment() -> (Env, String) {
    let env = Env::start().await;
    let deps = "/apis/apps/v1/namespaces/team-a/deployments";
    let (_, dep, _) = kinds("team-a", "d1", good_spec()).swap_remove(4);
    create(&env, deps, &dep).await;
    (env, format!("{deps}/d1"))
}

/// A ControllerRevision holds the template a StatefulSet's or DaemonSet's controller makes pods
/// from, straight at the API server: written through the proxy (here by the admin, whose grant
/// reaches it) it is judged as that template in team-a's restricted namespace. A privileged
/// template gets Pod Security's 403; a partial one — merged with the workload's, where a
/// `null` removes what was judged there — and a directive elsewhere in `data` get 422; none
/// reaches the API server. A whole, compliant template (the controllers' own form) is
/// forwarded (the sandbox serves no revisions: its 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_revisions_are_judged_as_the_template_they_put_in_pods() {
    let env = Env::start().await;
    let revisions = "/apis/apps/v1/namespaces/team-a/controllerrevisions";
    let revision = |template: Value| {
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "web-5d8f"}, "revision": 2,
            "data": {"spec": {"template": template}}})
    };
    let whole = |spec: Value| json!({"$patch": "replace", "metadata": {"labels": {"app": "web"}}, "spec": spec});
    // POST `body`: refused with `code` / `reason` (nothing upstream); the refusal's message.
    let post = |body: Value, code: u16, reason: &'static str| {
        let env = &env;
        async move {
            let s = refused(
                env,
                json_req("POST", revisions, "application/json", &body),
                code,
                reason,
            )
            .await;
            message(&s).to_owned()
        }
    };
    let mut privileged = good_spec();
    privileged["hostPID"] = json!(true);
    let s = post(revision(whole(privileged)), 403, "Forbidden").await;
    assert!(s.contains("violates PodSecurity"), "{s}");
    assert!(s.contains("hostPID"), "{s}");
    let partial = json!({"spec": {"securityContext": {"runAsNonRoot": null}}});
    let s = post(revision(partial), 422, "Invalid").await;
    assert!(s.contains("must be whole"), "{s}");
    // Anything in `data` beside the template (a directive, or a `Spec` the StatefulSet
    // controller's case-insensitive decoder would read into the workload's `spec`).
    let mut elsewhere = revision(whole(good_spec()));
    elsewhere["data"]["spec"]["$retainKeys"] = json!(["template"]);
    let mut cased = revision(whole(good_spec()));
    cased["data"]["Spec"] = json!({"template": {"spec": {"hostPID": true}}});
    for body in [elsewhere, cased] {
        let s = post(body, 422, "Invalid").await;
        assert!(s.contains(r#"data must be {"spec""#), "{s}");
    }
    // A field in another case (Go's folding: `ſ` is an `s`) inside the whole template.
    for key in ["HostPID", "ho\u{17F}tPID"] {
        let mut spec = good_spec();
        spec[key] = json!(true);
        let s = post(revision(whole(spec)), 422, "Invalid").await;
        assert!(s.contains("differs only in case"), "{key}: {s}");
        assert!(s.contains("data.spec.template.spec."), "{key}: {s}");
    }
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(
        &env,
        json_req(
            "POST",
            revisions,
            "application/json",
            &revision(whole(good_spec())),
        ),
        None,
    )
    .await;
    assert_eq!(resp.status(), 404, "forwarded: the sandbox's answer");
    assert_eq!(writes(&env), [format!("POST {revisions}")]);
}

/// `pods/ephemeralcontainers` keeps only the ephemeral containers of what it is sent: pod-level
/// fields in the body (`spec.os: windows`, `hostUsers: false`) must not exempt a root debug
/// container from `restricted` on the stored Linux pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_containers_are_judged_on_the_stored_pod() {
    let env = Env::start().await;
    let pods = "/api/v1/namespaces/team-a/pods";
    create(&env, pods, &pod("p1", good_spec())).await;
    let body = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
        "spec": {
            "os": {"name": "windows"}, "hostUsers": false,
            "containers": [{"name": "c", "image": "nginx"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox", "securityContext": {"runAsUser": 0}}]
        }
    });
    let s = refused(
        &env,
        json_req(
            "PUT",
            &format!("{pods}/p1/ephemeralcontainers"),
            "application/json",
            &body,
        ),
        403,
        "Forbidden",
    )
    .await;
    assert!(message(&s).contains("restricted"), "{s}");
    // Of a pod that does not exist: the API server's 404, not an error of the proxy's.
    let mut absent = body.clone();
    absent["metadata"]["name"] = json!("nope");
    let s = refused(
        &env,
        json_req(
            "PUT",
            &format!("{pods}/nope/ephemeralcontainers"),
            "application/json",
            &absent,
        ),
        404,
        "NotFound",
    )
    .await;
    assert_eq!(s["message"], r#"pods "nope" not found"#);
}

/// A JSON patch whose `copy` operations double the pod spec again and again is refused once
/// its copies pass 3 MiB (the API server's own limit), not applied by the judge until the
/// proxy runs out of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_copies_are_capped() {
    let (env, d1) = with_deployment().await;
    // A 16 KiB value in the pod spec, then copies of the whole spec into itself: each doubles
    // it (16 KiB · 2^8 = 4 MiB by the eighth).
    let spec = "/spec/template/spec";
    let mut ops = vec![
        json!({"op": "add", "path": format!("{spec}/containers/0/env"),
        "value": [{"name": "X", "value": "a".repeat(16 * 1024)}]}),
    ];
    for i in 0..10 {
        ops.push(json!({"op": "copy", "from": spec, "path": format!("{spec}/x{i}")}));
    }
    refused(
        &env,
        json_req("PATCH", &d1, "application/json-patch+json", &json!(ops)),
        413,
        "RequestEntityTooLarge",
    )
    .await;
}

/// A JSON patch that adds one large list and then moves it back and forth — each `move` cheap
/// for the API server, but each a walk of the whole list for the judge's depth check, 10 000
/// of them minutes of a worker — is refused with 422 once its operations have shifted or
/// walked 16 Mi values, before the upstream; the proxy goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_moving_a_large_list_back_and_forth_is_refused() {
    let (env, d1) = with_deployment().await;
    let spec = "/spec/template/spec";
    let mut ops =
        vec![json!({"op": "add", "path": format!("{spec}/a"), "value": vec![0; 300_000]})];
    for _ in 0..100 {
        ops.push(json!({"op": "move", "from": format!("{spec}/a"), "path": format!("{spec}/b")}));
        ops.push(json!({"op": "move", "from": format!("{spec}/b"), "path": format!("{spec}/a")}));
    }
    ops.push(json!({"op": "remove", "path": format!("{spec}/a")}));
    patch_refused_and_the_proxy_lives(&env, &d1, ops, "shift or rewrite more than").await;
}

/// A JSON patch whose operations each pass every cap but together nest the object ever
/// deeper (each add at the innermost point of the last) is refused with 422 before the
/// upstream — judging the result recursed past the stack and aborted the whole proxy — and
/// the proxy goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_nesting_ever_deeper_is_refused_and_the_proxy_lives() {
    let (env, d1) = with_deployment().await;
    let chain = |k: usize| (1..k).fold(json!({}), |v, _| json!({"a": v}));
    let root = "/spec/template/spec/x";
    let mut ops = vec![json!({"op": "add", "path": root, "value": chain(90)})];
    let mut rel = "/a".repeat(89);
    // ≈ 2 MiB of paths, 13 000 levels: within the body limit, and deep enough to overflow.
    for _ in 0..150 {
        ops.push(json!({"op": "add", "path": format!("{root}{rel}/a"), "value": chain(90)}));
        rel.push_str(&"/a".repeat(90));
    }
    patch_refused_and_the_proxy_lives(&env, &d1, ops, "deeper than 128 levels").await;
}

/// The JSON patch `ops` of `path` is refused with 422 (its message containing `needle`) before
/// the upstream, and the proxy goes on serving.
async fn patch_refused_and_the_proxy_lives(env: &Env, path: &str, ops: Vec<Value>, needle: &str) {
    let s = refused(
        env,
        json_req("PATCH", path, "application/json-patch+json", &json!(ops)),
        422,
        "Invalid",
    )
    .await;
    assert!(message(&s).contains(needle), "{s}");
    let resp = send_as(env, common::get("/version"), None).await;
    assert_eq!(resp.status(), 200, "the proxy is still serving");
}

/// Strategic-merge patches the API server stores otherwise than the proxy would judge them
/// are refused before the upstream: `$patch` under a key the object lacks (the API server
/// drops that map: judged as a Windows pod, exempt from restricted's checks, stored as Linux
/// with SYS_ADMIN); and two list elements with one merge key in a list taken as sent are
/// judged as the two the API server stores (the host port on one is seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_the_api_server_would_store_otherwise_are_refused() {
    let (env, d1) = with_deployment().await;
    let windows = json!({"spec": {"template": {"spec": {
        "os": {"$patch": "merge", "name": "windows"},
        "securityContext": {"seccompProfile": null},
        "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": true,
            "capabilities": {"add": ["SYS_ADMIN"], "drop": null}}}]}}}});
    let s = refused(&env, smp(&d1, &windows), 400, "BadRequest").await;
    assert!(message(&s).contains("does not have"), "{s}");
    let ports = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
        {"containerPort": 8080, "hostPort": 8080},
        {"containerPort": 8080, "protocol": "UDP", "hostPort": null}]}]}}}});
    let s = refused(&env, smp(&d1, &ports), 403, "Forbidden").await;
    assert!(message(&s).contains("hostPort"), "{s}");
    // The same patch without the trick goes through.
    let fine = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
        {"containerPort": 8080}]}]}}}});
    accepted(&env, smp(&d1, &fine)).await;
}

/// Strategic-merge directives inside a new container are refused before the upstream: the API
/// server would append the container as sent, `privileged: true` included, so they cannot be
/// judged as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_inside_a_new_container_are_refused() {
    let (env, d1) = with_deployment().await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "pwn", "image": "busybox", "securityContext": {"$patch": "delete", "privileged": true}}
    ]}}}});
    let s = refused(&env, smp(&d1, &patch), 400, "BadRequest").await;
    assert!(message(&s).contains("new list element"), "{s}");
}

/// A list's `$patch: delete` element applies to the current list before the patch's other
/// elements (apimachinery's `mergeSliceWithSpecialElements`), so one after a new element of the
/// same name does not undo it: the API server would store the privileged container and the
/// host path volume. Judged that way, it is refused and nothing is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_directive_after_a_new_element_does_not_hide_it() {
    let (env, d1) = with_deployment().await;
    let patch = json!({"spec": {"template": {"spec": {
        "containers": [
            {"name": "pwn", "image": "busybox", "securityContext": {"privileged": true},
             "volumeMounts": [{"name": "host", "mountPath": "/host"}]},
            {"name": "pwn", "$patch": "delete"}],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}, {"name": "host", "$patch": "delete"}]}}}});
    let s = refused(&env, smp(&d1, &patch), 403, "Forbidden").await;
    let m = message(&s);
    assert!(m.contains("privileged") && m.contains("hostPath"), "{s}");
}

/// A value both deleted (`$deleteFromPrimitiveList/drop`) and set (`drop`) in one patch map:
/// the API server's order between the two decides whether `ALL` stays dropped — refused (400),
/// nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_both_deleted_and_set_is_refused_before_the_upstream() {
    let (env, d1) = with_deployment().await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c",
        "securityContext": {"capabilities": {
            "$setElementOrder/drop": ["ALL"], "$deleteFromPrimitiveList/drop": ["ALL"], "drop": ["ALL"]}}}]}}}});
    let s = refused(&env, smp(&d1, &patch), 400, "BadRequest").await;
    assert!(message(&s).contains("both in"), "{s}");
}

/// A judged patch carrying its own `resourceVersion` other than the one it was judged on is the
/// API server's conflict (forwarded, it would land on a later object nobody judged); `""` is
/// no precondition to the API server and is replaced by the judged version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_pinned_to_another_version_is_a_conflict() {
    let (env, d1) = with_deployment().await;
    let patch = |rv: &str| {
        json!({"metadata": {"resourceVersion": rv},
            "spec": {"template": {"spec": {"terminationGracePeriodSeconds": 5}}}})
    };
    let s = refused(
        &env,
        json_req(
            "PATCH",
            &d1,
            "application/merge-patch+json",
            &patch("999999"),
        ),
        409,
        "Conflict",
    )
    .await;
    assert_eq!(
        s["message"],
        r#"Operation cannot be fulfilled on deployments.apps "d1": the object has been modified; please apply your changes to the latest version and try again"#
    );
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(
        &env,
        json_req("PATCH", &d1, "application/merge-patch+json", &patch("")),
        None,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body());
    let sent: Value = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .find(|r| r.method == http::Method::PATCH)
        .and_then(|r| r.body)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let judged_rv = sent["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(!judged_rv.is_empty() && judged_rv != "0", "{sent}");
}

/// An apply that touches no pod field, by a manager that never applied to the object, is not
/// judged — but what an apply changes depends on the managers recorded in the object, which a
/// write landing between the proxy's read and the apply could change. So it is pinned to the
/// version read, as judged writes are (before: forwarded unpinned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unjudged_apply_of_a_pod_bearing_kind_is_pinned() {
    let (env, d1) = with_deployment().await;
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d1", "labels": {"team": "a"}}});
    let (_, sent) = accepted(
        &env,
        json_req(
            "PATCH",
            &format!("{d1}?fieldManager=labeller"),
            "application/apply-patch+yaml",
            &config,
        ),
    )
    .await;
    let pinned = sent["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(!pinned.is_empty() && pinned != "0", "{sent}");
}

/// A `$patch` element in a list the object does not have yet: API servers before 1.28 store
/// the list as sent — that element as an init container, privileged — where later ones apply
/// the directive (and this proxy judged it so). Refused (400) before the upstream. A delete
/// naming only its key — what `kubectl apply`'s three-way patch sends for an entry the
/// manifest dropped and the live object no longer has — deletes nothing and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_directive_where_the_object_has_no_list_is_refused() {
    let (env, d1) = with_deployment().await;
    let patch = json!({"spec": {"template": {"spec": {"initContainers": [
        {"$patch": "replace", "name": "x", "image": "busybox",
         "securityContext": {"privileged": true}}]}}}});
    let s = refused(&env, smp(&d1, &patch), 400, "BadRequest").await;
    assert!(message(&s).contains("does not have yet"), "{s}");
    let with_fields = json!({"spec": {"template": {"spec": {"initContainers": [
        {"$patch": "delete", "name": "x", "securityContext": {"privileged": true}}]}}}});
    refused(&env, smp(&d1, &with_fields), 400, "BadRequest").await;
    // `c` has no `env`: kubectl apply's delete of FOO, beside the BAR that replaces it.
    let three_way = json!({"spec": {"template": {"spec": {"containers": [{"name": "c",
        "env": [{"name": "BAR", "value": "1"}, {"name": "FOO", "$patch": "delete"}]}]}}}});
    let (_, sent) = accepted(&env, smp(&d1, &three_way)).await;
    assert_eq!(
        sent["spec"]["template"]["spec"]["containers"][0]["env"][1],
        json!({"name": "FOO", "$patch": "delete"}),
        "forwarded as sent: {sent}"
    );
}

/// A `$patch: replace` item in a keyed list the object has is a directive, not an element
/// (apimachinery's `mergeSliceWithSpecialElements`): the list becomes the patch's other items,
/// here none. The proxy judges it so and forwards it; the sandbox applies it so too, so the
/// privileged container it carries is stored nowhere (kube-apiserver then refuses the empty
/// container list, 422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_item_in_a_list_the_object_has_stores_no_container() {
    let (env, d1) = with_deployment().await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace", "name": "c", "image": "x",
         "securityContext": {"privileged": true}}]}}}});
    let (resp, _) = accepted(&env, smp(&d1, &patch)).await;
    let stored: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"],
        json!([]),
        "{stored}"
    );
}

/// `kubectl apply` (client-side) of a manifest that dropped an env entry the live object no
/// longer has: its three-way patch deletes the entry by key (`{name: FOO, $patch: delete}`) in
/// a list the object lacks. That deletes nothing and is accepted, as by the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_deleting_an_entry_the_object_lost_is_accepted() {
    common::require_kubectl();
    let env = Env::start().await;
    let home = env.dir.path();
    let manifest = |env_var: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team-a\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}\n      containers:\n      - name: c\n        image: nginx\n        env: [{{name: {env_var}, value: \"1\"}}]\n        securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}\n"
        )
    };
    let file = home.join("web.yaml");
    let path = file.to_str().unwrap().to_owned();
    let apply = |text: String| {
        std::fs::write(&file, text).unwrap();
        let path = path.clone();
        let env = &env;
        async move { env.kubectl(&["apply", "-f", &path]).await }
    };
    let out = apply(manifest("FOO")).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    // The live object loses its env (a JSON patch, as `kubectl set env FOO-` leaves it).
    let out = env
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "-n",
            "team-a",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/template/spec/containers/0/env"}]"#,
        ])
        .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    env.sandbox.sandbox.clear_recorded();
    let out = apply(manifest("BAR")).await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let sent: Vec<Value> = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .filter(|r| r.method == http::Method::PATCH)
        .filter_map(|r| serde_json::from_slice(&r.body?).ok())
        .collect();
    let env_sent = &sent.first().expect("the apply's PATCH went upstream")["spec"]["template"]
        ["spec"]["containers"][0]["env"];
    assert!(
        env_sent.as_array().is_some_and(|e| e
            .iter()
            .any(|x| x["$patch"] == "delete" && x["name"] == "FOO")),
        "kubectl's patch deletes FOO by key: {sent:?}"
    );
}

/// A pod spec of more containers than any pod has is refused before Pod Security words a
/// violation per container (a 3 MiB body of a million empty containers would cost gigabytes
/// to refuse); 1000 together are judged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_too_many_containers_is_refused_before_it_is_judged() {
    let env = Env::start().await;
    let many = |n: usize| {
        let containers: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "image": "nginx"}))
            .collect();
        pod("crowd", json!({"containers": containers}))
    };
    let create = |p: &Value| {
        json_req(
            "POST",
            "/api/v1/namespaces/team-a/pods",
            "application/json",
            p,
        )
    };
    let s = refused(&env, create(&many(1001)), 422, "Invalid").await;
    assert!(message(&s).contains("at most 1000"), "{s}");
    assert!(
        s["details"]["causes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "FieldValueTooMany")),
        "{s}"
    );
    // At the bound: judged (restricted refuses these containers for what they lack).
    let s = refused_pod(&env, &many(1000)).await;
    assert!(message(&s).contains("runAsNonRoot"), "{s}");
}

/// A container `securityContext` that `restricted` accepts once the pod sets `runAsNonRoot`
/// and `seccompProfile`.
fn compliant_container_context() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

/// The body of the PATCH the API server received (since the recording was last cleared).
fn sent_patch(env: &Env) -> Value {
    let sent = env
        .sandbox
        .sandbox
        .recorded()
        .into_iter()
        .find(|r| r.method == http::Method::PATCH)
        .expect("the patch reached the API server");
    serde_json::from_slice(sent.body.as_ref().unwrap()).unwrap()
}

/// Create Deployment `name` in team-a (`restricted`), compliant, with these containers and
/// `managedFields` entries (manager, operation, `fieldsV1` below `spec.template.spec`) as the
/// API server would have recorded them.
async fn create_managed_deployment(
    env: &Env,
    name: &str,
    containers: &[&str],
    managers: &[(&str, &str, Value)],
) {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "nginx", "securityContext": compliant_container_context()}))
        .collect();
    let (_, mut dep, _) = kinds(
        "team-a",
        name,
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers
        }),
    )
    .swap_remove(4);
    dep["metadata"]["managedFields"] = managers
        .iter()
        .map(|(m, op, fields)| {
            json!({"manager": m, "operation": op, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": fields}}}})
        })
        .collect();
    create(env, "/apis/apps/v1/namespaces/team-a/deployments", &dep).await;
}

/// A `fieldsV1` set below `spec.template.spec` (the shape the API server records for an
/// apply): the pod-level security context `create_managed_deployment` sets if `pod_context`,
/// and these containers — by name, with their image, and with their security context if
/// asked.
fn owned(pod_context: bool, containers: &[(&str, bool)]) -> Value {
    let mut set = json!({});
    if pod_context {
        set["f:securityContext"] =
            json!({"f:runAsNonRoot": {}, "f:seccompProfile": {"f:type": {}}});
    }
    if !containers.is_empty() {
        let items: serde_json::Map<String, Value> = containers
            .iter()
            .map(|(name, context)| {
                let mut item = json!({".": {}, "f:name": {}, "f:image": {}});
                if *context {
                    item["f:securityContext"] =
                        json!({"f:allowPrivilegeEscalation": {}, "f:capabilities": {"f:drop": {}}});
                }
                (format!("k:{}", json!({"name": name})), item)
            })
            .collect();
        set["f:containers"] = Value::Object(items);
    }
    set
}

/// Manager `x`'s configuration of Deployment `name` in team-a: its selector and template
/// labels, and this pod spec.
fn applied_deployment(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}}, "spec": spec}}})
}

/// `x` re-applies `spec` to Deployment `name`: refused 403 before the upstream, naming `cause`.
async fn reapply_refused(env: &Env, name: &str, spec: Value, cause: &str) {
    let apply = json_req(
        "PATCH",
        &format!("/apis/apps/v1/namespaces/team-a/deployments/{name}?fieldManager=x"),
        "application/apply-patch+yaml",
        &applied_deployment(name, spec),
    );
    let s = refused(env, apply, 403, "Forbidden").await;
    assert!(has_cause(&s, cause), "{name}: {s}");
}

/// A manager re-applying without the pod-level security context it applied before: the API
/// server would remove it, leaving another manager's container (which relied on it) running
/// as root without seccomp. Judged on the current object with what the re-apply leaves out
/// removed: refused before the upstream; a manager's first apply, or one that keeps it, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reapply_that_drops_what_others_rely_on_is_refused() {
    let env = Env::start().await;
    let deps = "/apis/apps/v1/namespaces/team-a/deployments";
    let compliant = compliant_container_context();
    // As the API server records it: x applied the pod-level fields and container a, y added b.
    create_managed_deployment(
        &env,
        "d2",
        &["a", "b"],
        &[
            ("x", "Apply", owned(true, &[("a", true)])),
            ("y", "Update", owned(false, &[("b", true)])),
        ],
    )
    .await;
    let d2 = format!("{deps}/d2");
    // x's new configuration: container a alone, compliant on its own; no pod-level context.
    let mut a_alone = compliant.clone();
    a_alone["runAsNonRoot"] = json!(true);
    a_alone["seccompProfile"] = json!({"type": "RuntimeDefault"});
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d2"},
        "spec": {"selector": {"matchLabels": {"app": "d2"}}, "template": {
            "metadata": {"labels": {"app": "d2"}},
            "spec": {"containers": [{"name": "a", "image": "nginx", "securityContext": a_alone}]}}}});
    let apply = |manager: &str| {
        json_req(
            "PATCH",
            &format!("{d2}?fieldManager={manager}"),
            "application/apply-patch+yaml",
            &config,
        )
    };
    let s = refused(&env, apply("x"), 403, "Forbidden").await;
    assert!(
        has_cause(
            &s,
            "spec.template.spec.containers[1].securityContext.runAsNonRoot"
        ),
        "{s}"
    );
    // Another manager's first apply removes nothing: judged as before, and it passes.
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(&env, apply("z"), None).await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body());
}

/// A partial server-side apply by a manager that never applied the object (an image updater
/// with client-go's ApplyConfigurations) need not repeat what `restricted` requires to be set:
/// the stored object keeps it, so it passes. A value it sets that the level forbids is still
/// refused, and so is a container it adds without the required fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_apply_by_another_manager_is_judged_on_what_it_stores() {
    let env = Env::start().await;
    let deps = "/apis/apps/v1/namespaces/team-a/deployments";
    create_managed_deployment(
        &env,
        "d3",
        &["app"],
        &[("kubectl", "Apply", owned(true, &[("app", true)]))],
    )
    .await;
    let d3 = format!("{deps}/d3?fieldManager=image-updater&force=true");
    let apply = |containers: Value| {
        json_req(
            "PATCH",
            &d3,
            "application/apply-patch+yaml",
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d3"},
                "spec": {"template": {"spec": {"containers": containers}}}}),
        )
    };
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(
        &env,
        apply(json!([{"name": "app", "image": "nginx:2"}])),
        None,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body());
    let stored: Value = serde_json::from_slice(resp.body()).unwrap();
    // It went out naming the object's uid: were the object deleted after the proxy read it,
    // the API server would refuse (409) to create one from the configuration alone.
    let sent = sent_patch(&env);
    assert_eq!(sent["metadata"]["uid"], stored["metadata"]["uid"], "{sent}");
    // A value baseline forbids, set by the configuration itself; a container the
    // configuration adds, lacking what restricted requires in what is stored.
    let refusals = [
        (
            json!([{"name": "app", "image": "nginx:3", "securityContext": {"privileged": true}}]),
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            json!([{"name": "app", "image": "nginx:2"}, {"name": "side", "image": "busybox"}]),
            "spec.template.spec.containers[1].securityContext.allowPrivilegeEscalation",
        ),
    ];
    for (containers, field) in refusals {
        let s = refused(&env, apply(containers), 403, "Forbidden").await;
        assert!(has_cause(&s, field), "{s}");
    }
}

/// Newer API servers remove a struct on the path to a manager's applied fields whole when no
/// other manager reaches it: x applied only the pod's `fsGroup`, nobody owns the
/// `runAsNonRoot` / `seccompProfile` beside it, and x re-applies without a pod security
/// context — the whole of it may go, and the container, which relied on it, would run as root.
/// Refused before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reapply_removing_a_security_context_no_one_else_reaches_is_refused() {
    let env = Env::start().await;
    let mut x = owned(false, &[("a", true)]);
    x["f:securityContext"] = json!({"f:fsGroup": {}});
    create_managed_deployment(&env, "d6", &["a"], &[("x", "Apply", x)]).await;
    let spec = json!({"containers": [{"name": "a", "image": "nginx", "securityContext": compliant_container_context()}]});
    reapply_refused(
        &env,
        "d6",
        spec,
        "spec.template.spec.containers[0].securityContext.runAsNonRoot",
    )
    .await;
}

/// The same image updater's *next* partial apply: it removes only what it applied before (the
/// container's name and image, which it sets again), so the stored object keeps the fields
/// `restricted` requires and it passes — read from `managedFields`, as the API server prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_partial_apply_by_the_same_manager_passes() {
    let env = Env::start().await;
    create_managed_deployment(
        &env,
        "d4",
        &["app"],
        &[
            ("kubectl", "Apply", owned(true, &[("app", true)])),
            ("image-updater", "Apply", owned(false, &[("app", false)])),
        ],
    )
    .await;
    let apply = json_req(
        "PATCH",
        "/apis/apps/v1/namespaces/team-a/deployments/d4?fieldManager=image-updater&force=true",
        "application/apply-patch+yaml",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d4"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:3"}]}}}}),
    );
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(&env, apply, None).await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body());
    assert_eq!(
        writes(&env).len(),
        1,
        "the apply reached the API server once"
    );
}

/// A re-apply that leaves out a container another manager keeps — another applier, or an
/// updater (Helm, `kubectl edit`) whose write added it: the API server keeps the container
/// but removes the fields of it only this manager applied — here the container's whole
/// security context, which `restricted` requires. Refused before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reapply_removing_its_fields_from_a_container_it_no_longer_names_is_refused() {
    let env = Env::start().await;
    for (name, keeper) in [("d5", "Apply"), ("d5u", "Update")] {
        create_managed_deployment(
            &env,
            name,
            &["a", "b"],
            &[
                ("x", "Apply", owned(true, &[("a", true), ("b", true)])),
                ("y", keeper, owned(false, &[("b", false)])),
            ],
        )
        .await;
        let spec = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "a", "image": "nginx", "securityContext": compliant_container_context()}]});
        let cause = "spec.template.spec.containers[1].securityContext.allowPrivilegeEscalation";
        reapply_refused(&env, name, spec, cause).await;
    }
}

/// `Connection: Upgrade` on a write does not skip the judge: the API server ignores it and
/// applies the patch, so the proxy judges it as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_header_on_a_write_does_not_skip_the_judge() {
    let (env, d1) = with_deployment().await;
    env.sandbox.sandbox.clear_recorded();
    let mut r = smp(
        &d1,
        &json!({"spec": {"template": {"spec": {"hostPID": true}}}}),
    );
    r.headers_mut()
        .insert("connection", "Upgrade".parse().unwrap());
    r.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    // HTTP/1.1: the only protocol with an Upgrade.
    let resp = env.request(r, Some(&env.admin_cert), false).await;
    let s = status(resp.body());
    assert_eq!(resp.status().as_u16(), 403, "{s}");
    assert_eq!(s["reason"], "Forbidden", "{s}");
    let w = writes(&env);
    assert!(w.is_empty(), "the patch reached the upstream: {w:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patch_type_smuggles_a_violation() {
    let env = Env::start().await;
    let pods = "/api/v1/namespaces/team-a/pods";
    let deps = "/apis/apps/v1/namespaces/team-a/deployments";
    create(&env, pods, &pod("p1", good_spec())).await;
    let (_, dep, _) = kinds("team-a", "d1", good_spec()).swap_remove(4);
    create(&env, deps, &dep).await;

    let privileged_container = {
        let mut c = good_spec()["containers"][0].clone();
        c["securityContext"]["privileged"] = json!(true);
        c
    };
    let with_cap = {
        let mut c = good_spec()["containers"][0].clone();
        c["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]);
        c
    };
    // (target, pointer prefix of the pod spec, field prefix)
    let targets = [
        (format!("{pods}/p1"), "/spec", "spec"),
        (
            format!("{deps}/d1"),
            "/spec/template/spec",
            "spec.template.spec",
        ),
    ];
    for (url, ptr, fp) in &targets {
        let nest = |inner: Value| -> Value {
            // {"spec": inner} or {"spec": {"template": {"spec": inner}}}
            let mut v = inner;
            for key in ptr.split('/').filter(|k| !k.is_empty()).rev() {
                v = json!({ key: v });
            }
            v
        };
        let smuggles: Vec<(&str, Vec<Value>, Value, String)> = vec![
            (
                "privileged",
                vec![
                    json!({"op": "add", "path": format!("{ptr}/containers/0/securityContext/privileged"), "value": true}),
                ],
                nest(json!({"containers": [privileged_container.clone()]})),
                format!("{fp}.containers[0].securityContext.privileged"),
            ),
            (
                "hostPID",
                vec![json!({"op": "add", "path": format!("{ptr}/hostPID"), "value": true})],
                nest(json!({"hostPID": true})),
                format!("{fp}.hostPID"),
            ),
            (
                "hostPath",
                vec![
                    json!({"op": "add", "path": format!("{ptr}/volumes"), "value": [{"name": "h", "hostPath": {"path": "/"}}]}),
                ],
                nest(json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})),
                format!("{fp}.volumes[0].hostPath"),
            ),
            (
                "capability",
                vec![
                    json!({"op": "add", "path": format!("{ptr}/containers/0/securityContext/capabilities/add"), "value": ["NET_ADMIN"]}),
                ],
                nest(json!({"containers": [with_cap.clone()]})),
                format!("{fp}.containers[0].securityContext.capabilities.add[0]"),
            ),
        ];
        for (what, json_ops, merge_doc, field) in smuggles {
            let cases = [
                ("application/json-patch+json", Value::Array(json_ops)),
                ("application/merge-patch+json", merge_doc.clone()),
                ("application/strategic-merge-patch+json", merge_doc.clone()),
            ];
            for (ct, doc) in cases {
                let s = refused(&env, json_req("PATCH", url, ct, &doc), 403, "Forbidden").await;
                assert!(has_cause(&s, &field), "{url} {ct} {what}: {s}");
            }
            // Server-side apply: the applied configuration (here the whole object with the
            // violation merged in).
            let mut applied = if url.contains("/pods/") {
                pod("p1", good_spec())
            } else {
                dep.clone()
            };
            portcullis::sanitize::merge::merge(
                &mut applied,
                &merge_doc,
                portcullis::sanitize::merge::Mode::Strategic,
            )
            .unwrap();
            let s = refused(
                &env,
                json_req(
                    "PATCH",
                    &format!("{url}?fieldManager=t"),
                    "application/apply-patch+yaml",
                    &applied,
                ),
                403,
                "Forbidden",
            )
            .await;
            assert!(has_cause(&s, &field), "{url} apply {what}: {s}");
        }

        // Strategic directives are applied, so they cannot hide a removal.
        let s = refused(
            &env,
            smp(url, &nest(json!({"securityContext": {"$patch": "replace", "seccompProfile": {"type": "RuntimeDefault"}}}))),
            403,
            "Forbidden",
        )
        .await;
        assert!(
            has_cause(
                &s,
                &format!("{fp}.containers[0].securityContext.runAsNonRoot")
            ),
            "{s}"
        );
        // Deleting from a list without a merge strategy (stored as the list's new value by API
        // servers before 1.25, as a deletion by later ones): refused before it is judged.
        let s = refused(
            &env,
            smp(url, &nest(json!({"containers": [{"name": "c", "securityContext": {"capabilities": {"$deleteFromPrimitiveList/drop": ["ALL"]}}}]}))),
            400,
            "BadRequest",
        )
        .await;
        assert!(message(&s).contains("only accepted for finalizers"), "{s}");
        // Directives the API server would not apply as written: a delete-from list of
        // containers (merged in by key there), directives inside a replaced map (stored as
        // data there) — refused, never forwarded.
        for directive in [
            json!({"$unknownDirective": 1}),
            json!({"$deleteFromPrimitiveList/containers": [{"name": "x", "image": "busybox", "securityContext": {"privileged": true}}]}),
            json!({"$patch": "replace", "containers": [{"name": "c", "image": "nginx"},
                {"name": "evil", "$patch": "delete", "image": "busybox", "securityContext": {"privileged": true}}]}),
        ] {
            refused(&env, smp(url, &nest(directive)), 400, "BadRequest").await;
        }

        // A harmless spec patch passes, pinned to the judged resourceVersion.
        let (_, up) = accepted(
            &env,
            smp(
                url,
                &nest(json!({"containers": [{"name": "c", "image": "nginx:2"}]})),
            ),
        )
        .await;
        assert!(
            up["metadata"]["resourceVersion"].is_string(),
            "precondition added: {up}"
        );
        let (_, up) = accepted(
            &env,
            json_req("PATCH", url, "application/json-patch+json",
                &json!([{"op": "replace", "path": format!("{ptr}/containers/0/image"), "value": "nginx:3"}])),
        )
        .await;
        let last = up.as_array().and_then(|ops| ops.last()).unwrap();
        assert_eq!(last["op"], "add", "precondition op last: {up}");
        assert_eq!(last["path"], "/metadata/resourceVersion");
        assert!(last["value"].is_string(), "{up}");
        // The client's own version in an op, other than the judged one: the API server's
        // conflict, answered before it.
        let s = refused(
            &env,
            json_req("PATCH", url, "application/json-patch+json",
                &json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": "1"},
                    {"op": "replace", "path": format!("{ptr}/containers/0/image"), "value": "nginx:4"}])),
            409,
            "Conflict",
        )
        .await;
        assert!(message(&s).contains("has been modified"), "{s}");
    }

    // A label patch touches no pod spec: not judged, no read of the current object.
    env.sandbox.sandbox.clear_recorded();
    let (_, up) = accepted(
        &env,
        json_req(
            "PATCH",
            &format!("{deps}/d1"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        ),
    )
    .await;
    assert_eq!(up, json!({"metadata": {"labels": {"x": "y"}}}));
    assert!(
        !env.sandbox
            .sandbox
            .recorded()
            .iter()
            .any(|r| r.method == http::Method::GET),
        "a label patch must not read the object"
    );

    // An ephemeral container is judged like any other container.
    let s = refused(
        &env,
        smp(&format!("{pods}/p1/ephemeralcontainers"), &json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "securityContext": {"privileged": true}}]}})),
        403,
        "Forbidden",
    )
    .await;
    assert!(
        has_cause(&s, "spec.ephemeralContainers[0].securityContext.privileged"),
        "{s}"
    );

    // Patching an object that does not exist: the apiserver's 404, nothing forwarded.
    refused(
        &env,
        json_req(
            "PATCH",
            &format!("{pods}/nope"),
            "application/merge-patch+json",
            &json!({"spec": {"hostPID": true}}),
        ),
        404,
        "NotFound",
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_parsing_refuses_differentials_and_bombs() {
    let env = Env::start().await;
    let pods = "/api/v1/namespaces/team-a/pods";
    let cms = "/api/v1/namespaces/default/configmaps";

    // Duplicate keys: the apiserver keeps the last one; we refuse and name the path.
    let dup = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"d"},"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":false,"privileged":true}}]}}"#;
    let s = refused(
        &env,
        req("POST", pods, Some("application/json"), dup),
        400,
        "BadRequest",
    )
    .await;
    assert!(
        has_cause(&s, "spec.containers[0].securityContext.privileged"),
        "{s}"
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key \"privileged\""),
        "{s}"
    );

    // A key that differs only in case.
    let mut spec = good_spec();
    spec["containers"][0]["securityContext"]["Privileged"] = json!(true);
    let s = refused(
        &env,
        json_req("POST", pods, "application/json", &pod("case", spec)),
        422,
        "Invalid",
    )
    .await;
    assert!(
        has_cause(&s, "spec.containers[0].securityContext.Privileged"),
        "{s}"
    );

    // \u escapes in keys are decoded before judging.
    let esc = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"e"},"spec":{"host\u0050ID":true,"securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"c","image":"x","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}"#;
    let s = refused(
        &env,
        req("POST", pods, Some("application/json"), esc),
        403,
        "Forbidden",
    )
    .await;
    assert!(has_cause(&s, "spec.hostPID"), "{s}");

    // YAML: aliases (billion laughs), merge keys, several documents.
    let bomb = "a: &a [\"x\",\"x\"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: [*c,*c]\n";
    refused(
        &env,
        req("POST", cms, Some("application/yaml"), bomb),
        400,
        "BadRequest",
    )
    .await;
    let merge =
        "apiVersion: v1\nkind: ConfigMap\nbase: &b {x: 1}\nmetadata:\n  <<: *b\n  name: m\n";
    refused(
        &env,
        req("POST", cms, Some("application/yaml"), merge),
        400,
        "BadRequest",
    )
    .await;
    let two = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
    refused(
        &env,
        req("POST", cms, Some("application/yaml"), two),
        400,
        "BadRequest",
    )
    .await;
    // ...while plain YAML is converted to JSON, as the API server reads YAML (go-yaml v2, YAML
    // 1.1): the key `on` is the boolean `true`, spelt "true" as a JSON key; the quoted "yes"
    // stays a string.
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  on: \"yes\"\n";
    let (_, up) = accepted(&env, req("POST", cms, Some("application/yaml"), yaml)).await;
    assert_eq!(
        up,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-yaml"}, "data": {"true": "yes"}})
    );
    // A YAML 1.1 boolean is judged as the boolean the API server would store: `privileged:
    // on` is refused by Pod Security; `stdin: yes` and an octal `defaultMode: 0400` go upstream
    // as `true` and 256, where a YAML 1.2 reading would have sent strings the API server refuses.
    let yaml_pod = |name: &str, privileged: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  securityContext: {{runAsNonRoot: yes, seccompProfile: {{type: RuntimeDefault}}}}\n  volumes: [{{name: v, configMap: {{name: from-yaml, defaultMode: 0400}}}}]\n  containers:\n  - name: c\n    image: nginx\n    stdin: yes\n    tty: on\n    securityContext: {{allowPrivilegeEscalation: off, privileged: {privileged}, capabilities: {{drop: [ALL]}}}}\n"
        )
    };
    let s = refused(
        &env,
        req("POST", pods, Some("application/yaml"), yaml_pod("y1", "on")),
        403,
        "Forbidden",
    )
    .await;
    assert!(
        has_cause(&s, "spec.containers[0].securityContext.privileged"),
        "{s}"
    );
    let (_, up) = accepted(
        &env,
        req(
            "POST",
            pods,
            Some("application/yaml"),
            yaml_pod("y2", "Off"),
        ),
    )
    .await;
    let c = &up["spec"]["containers"][0];
    assert_eq!(
        (&c["stdin"], &c["tty"]),
        (&json!(true), &json!(true)),
        "{up}"
    );
    assert_eq!(c["securityContext"]["privileged"], json!(false), "{up}");
    assert_eq!(
        up["spec"]["volumes"][0]["configMap"]["defaultMode"],
        json!(256),
        "{up}"
    );
    assert_eq!(
        up["spec"]["securityContext"]["runAsNonRoot"],
        json!(true),
        "{up}"
    );

    // Depth.
    let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    refused(
        &env,
        req("POST", cms, Some("application/json"), deep),
        400,
        "BadRequest",
    )
    .await;
    // Invalid UTF-8.
    refused(
        &env,
        req(
            "POST",
            cms,
            Some("application/json"),
            &b"{\"a\":\"\xff\"}"[..],
        ),
        400,
        "BadRequest",
    )
    .await;
    // Too many JSON-patch operations.
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/a", "value": 1}))
        .collect();
    refused(
        &env,
        json_req(
            "PATCH",
            &format!("{cms}/x"),
            "application/json-patch+json",
            &Value::Array(ops),
        ),
        400,
        "BadRequest",
    )
    .await;

    // Size: declared, then streamed without a length.
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    let s = refused(
        &env,
        req("POST", cms, Some("application/json"), big),
        413,
        "RequestEntityTooLarge",
    )
    .await;
    assert_eq!(s["message"], "Request entity too large: limit is 3145728");
    env.sandbox.sandbox.clear_recorded();
    let (code, body) = chunked_post(&env, cms, 4 * 1024 * 1024).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("RequestEntityTooLarge"), "{body}");
    assert!(writes(&env).is_empty());

    // Encodings and media types.
    let mut gz = req(
        "POST",
        cms,
        Some("application/json"),
        &b"\x1f\x8b\x08\x00"[..],
    );
    gz.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let s = refused(&env, gz, 415, "UnsupportedMediaType").await;
    assert!(s["message"].as_str().unwrap().contains("gzip"), "{s}");
    // Protobuf is decoded where something judges it (tests/sanitize_protobuf.rs); a truncated
    // envelope is refused as the API server refuses an undecodable body.
    let proto = &b"k8s\x00\x0a\x0f\x0a\x08apps/v1\x12\x0aDeployment"[..];
    let s = refused(
        &env,
        req(
            "POST",
            "/apis/apps/v1/namespaces/team-a/deployments",
            Some("application/vnd.kubernetes.protobuf"),
            proto,
        ),
        400,
        "BadRequest",
    )
    .await;
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("malformed protobuf"),
        "{s}"
    );
    refused(
        &env,
        req(
            "POST",
            "/apis/apps/v1/namespaces/team-a/deployments",
            Some("application/cbor"),
            &b"\xa1\x61a\x01"[..],
        ),
        415,
        "UnsupportedMediaType",
    )
    .await;
    // No Content-Type: a PATCH is refused as upstream refuses it; a POST is read as JSON, as
    // kube-apiserver reads it, and strictly.
    refused(
        &env,
        req("PATCH", &format!("{cms}/x"), None, "{}"),
        415,
        "UnsupportedMediaType",
    )
    .await;
    refused(
        &env,
        req(
            "POST",
            cms,
            None,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"}}"#,
        ),
        400,
        "BadRequest",
    )
    .await;
    // A create is told the object types the API server lists; a PATCH the patch types (the API
    // server lists them for a custom resource, answers a bare 415 for a built-in one) — never
    // the type it was refused for.
    let objects = "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf";
    let patches = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
    for (r, want) in [
        (req("POST", cms, Some("text/plain"), "{}"), objects),
        (
            json_req("POST", cms, "application/merge-patch+json", &json!({})),
            objects,
        ),
        (
            json_req("PATCH", &format!("{cms}/x"), "application/json", &json!({})),
            patches,
        ),
        (
            req("PATCH", &format!("{cms}/x"), Some("text/plain"), "{}"),
            patches,
        ),
        (req("PATCH", &format!("{cms}/x"), None, "{}"), patches),
    ] {
        let s = refused(&env, r, 415, "UnsupportedMediaType").await;
        assert_eq!(message(&s), want, "{s}");
    }
    env.stop().await;
}

/// POST `n` bytes with `Transfer-Encoding: chunked` over HTTP/1.1; (status, body).
async fn chunked_post(env: &Env, path: &str, n: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = env.admin_http1().await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < n {
        // The proxy answers (and may close) once the cap is crossed.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_field_rules_and_binary_bodies() {
    let env = Env::start().await;
    // team-b: baseline enforced, restricted warned.
    let b = "/api/v1/namespaces/team-b/pods";
    let mut spec = good_spec();
    spec["containers"][0]["securityContext"] = json!({});
    let (resp, _) = accepted(
        &env,
        json_req("POST", b, "application/json", &pod("warned", spec)),
    )
    .await;
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("299 - \"would violate PodSecurity \\\"restricted:latest\\\": allowPrivilegeEscalation != false (container \\\"c\\\" must set securityContext.allowPrivilegeEscalation=false)")),
        "{warnings:?}"
    );
    let mut spec = good_spec();
    spec["hostNetwork"] = json!(true);
    refused(
        &env,
        json_req("POST", b, "application/json", &pod("hostnet", spec)),
        403,
        "Forbidden",
    )
    .await;

    // Field rules: tenants may not pick nodes; admins may.
    let alice = env.alice_token();
    let a = "/api/v1/namespaces/team-a/pods";
    let mut spec = good_spec();
    spec["nodeName"] = json!("node-1");
    let s = refused_as(
        &env,
        json_req("POST", a, "application/json", &pod("pinned", spec.clone())),
        Some(&alice),
        422,
        "Invalid",
    )
    .await;
    assert!(has_cause(&s, "spec.nodeName"), "{s}");
    accepted(
        &env,
        json_req("POST", a, "application/json", &pod("pinned-by-admin", spec)),
    )
    .await;
    // ... and a tenant's deployment cannot smuggle it through the template either.
    let (path, mut dep, _) = kinds("team-a", "pinned-dep", good_spec()).swap_remove(4);
    dep["spec"]["template"]["spec"]["hostAliases"] = json!([{"ip": "1.2.3.4", "hostnames": ["x"]}]);
    let s = refused_as(
        &env,
        json_req("POST", &path, "application/json", &dep),
        Some(&alice),
        422,
        "Invalid",
    )
    .await;
    assert!(has_cause(&s, "spec.template.spec.hostAliases"), "{s}");

    // `status` is stripped from pod creates, with a warning, and its audit event names it
    // (its `requestObject` is what was forwarded).
    let stripped_in_event = |resp: &http::Response<bytes::Bytes>| {
        let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
        let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
        let event: Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
            .expect("the audit event");
        event["annotations"]["portcullis.io/stripped-fields"].clone()
    };
    let mut obj = pod("with-status", good_spec());
    obj["status"] = json!({"phase": "Running"});
    let (resp, up) = accepted(&env, json_req("POST", a, "application/json", &obj)).await;
    assert!(up.get("status").is_none(), "{up}");
    assert!(
        resp.headers()
            .get_all("warning")
            .iter()
            .any(|w| w.to_str().unwrap().contains("removed status")),
        "{:?}",
        resp.headers()
    );
    assert_eq!(stripped_in_event(&resp), "status");
    // An empty `status: {}` (client-go's JSON of every typed Pod) is removed without a word.
    let mut obj = pod("with-empty-status", good_spec());
    obj["status"] = json!({});
    let (resp, up) = accepted(&env, json_req("POST", a, "application/json", &obj)).await;
    assert!(up.get("status").is_none(), "{up}");
    assert!(
        !resp
            .headers()
            .get_all("warning")
            .iter()
            .any(|w| w.to_str().unwrap().contains("removed status")),
        "{:?}",
        resp.headers()
    );
    assert_eq!(stripped_in_event(&resp), Value::Null);

    // Protobuf where nothing judges it is forwarded as sent once its envelope opens (the
    // demo config, no `dangerous` acknowledgement): here the sandbox itself answers that it
    // cannot decode an object without a kind.
    env.sandbox.sandbox.clear_recorded();
    let resp = send_as(
        &env,
        req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/vnd.kubernetes.protobuf"),
            &b"k8s\x00"[..],
        ),
        None,
    )
    .await;
    assert!(
        String::from_utf8_lossy(resp.body()).contains("not converted"),
        "{:?}",
        resp.body()
    );
    let rec = env.sandbox.sandbox.recorded();
    let post = rec
        .iter()
        .find(|r| r.method == http::Method::POST)
        .expect("forwarded");
    assert_eq!(post.body.as_deref(), Some(&b"k8s\x00"[..]));
    // Without the envelope it is refused before the upstream (400, as the API server).
    refused(
        &env,
        req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/vnd.kubernetes.protobuf"),
            &b"{}"[..],
        ),
        400,
        "BadRequest",
    )
    .await;
    // CBOR stays refused wherever it is inspected (the default binary_bodies: reject).
    refused(
        &env,
        req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/cbor"),
            &b"\xa0"[..],
        ),
        415,
        "UnsupportedMediaType",
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_every_violation_and_applies_compliant_workloads() {
    common::require_kubectl();
    let env = Env::start().await;
    let home = env.dir.path();
    let bad = home.join("privileged-pod.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root-shell\nspec:\n  hostPID: true\n  containers:\n  - name: shell\n    image: busybox\n    securityContext:\n      privileged: true\n  volumes:\n  - name: host\n    hostPath:\n      path: /\n",
    )
    .unwrap();
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        home,
        &["apply", "-n", "team-a", "-f", bad.to_str().unwrap()],
    )
    .await;
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    // PodSecurity admission's own 403, word for word.
    assert!(
        err.contains("Error from server (Forbidden): error when creating"),
        "{err}"
    );
    assert!(
        err.contains("pods \"root-shell\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostPID=true), privileged (container \"shell\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"shell\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"shell\" must set securityContext.capabilities.drop=[\"ALL\"]), restricted volume types (volume \"host\" uses restricted volume type \"hostPath\"), runAsNonRoot != true (pod or container \"shell\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"shell\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
        "{err}"
    );
    assert!(
        writes(&env).iter().all(|w| !w.contains("root-shell")),
        "{:?}",
        writes(&env)
    );

    // team-b warns about restricted and lets a baseline pod in.
    let warn = home.join("baseline-pod.yaml");
    std::fs::write(&warn, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: team-b\nspec:\n  containers:\n  - name: c\n    image: nginx\n").unwrap();
    let out = env.kubectl(&["apply", "-f", warn.to_str().unwrap()]).await;
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"restricted:latest\""),
        "{err}"
    );

    // A compliant Deployment applies, re-applies (client-side apply sends a strategic merge
    // patch with $setElementOrder directives), and a kubectl patch cannot make it privileged.
    let dep = home.join("web.yaml");
    let manifest = |image: &str| {
        format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      securityContext:\n        runAsNonRoot: true\n        seccompProfile: {{type: RuntimeDefault}}\n      containers:\n      - name: web\n        image: {image}\n        securityContext:\n          allowPrivilegeEscalation: false\n          capabilities: {{drop: [ALL]}}\n"
    )
    };
    for image in ["nginx:1", "nginx:2"] {
        std::fs::write(&dep, manifest(image)).unwrap();
        let out = common::kubectl(
            &env.files.team_a_kubeconfig,
            home,
            &["apply", "-n", "team-a", "-f", dep.to_str().unwrap()],
        )
        .await;
        assert!(
            out.status.success(),
            "apply {image}: {}",
            common::stderr(&out)
        );
    }
    let out = common::kubectl(&env.files.team_a_kubeconfig, home, &[
        "patch", "-n", "team-a", "deployment", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","securityContext":{"privileged":true}}]}}}}"#,
    ])
    .await;
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Error from server (Forbidden): deployments.apps \"web\" is forbidden: violates PodSecurity \"restricted:latest\" in spec.template: privileged (container \"web\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        home,
        &[
            "patch",
            "deployment",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/spec/template/spec/hostNetwork","value":true}]"#,
        ],
    )
    .await;
    assert!(
        common::stderr(&out).contains("deployments.apps \"web\" is forbidden: violates PodSecurity \"restricted:latest\" in spec.template: host namespaces (hostNetwork=true)"),
        "{}",
        common::stderr(&out)
    );
    let out = common::kubectl(
        &env.files.team_a_kubeconfig,
        home,
        &["apply", "--server-side", "-f", bad.to_str().unwrap()],
    )
    .await;
    assert!(
        common::stderr(&out).contains("pods \"root-shell\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostPID=true)"),
        "{}",
        common::stderr(&out)
    );
    env.stop().await;
}

/// kubectl failed, printing `says`, and the API server saw no write.
fn refused_by_kubectl(env: &Env, out: &std::process::Output, says: &str) {
    let err = common::stderr(out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(says), "{err}");
    let w = writes(env);
    assert!(w.is_empty(), "the write reached the API server: {w:?}");
}

/// `kubectl patch --type json` with the index spellings kube-apiserver's JSON patch reads
/// (Go's `strconv.Atoi`: `+0`, `00`; a negative index counts from the end): judged as the API
/// server reads them and forwarded as the plain index they name. A compliant patch passes and
/// the API server receives `…/containers/0/image`; one that makes the last container
/// privileged is refused (403) and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_json_patches_with_loose_indices_are_judged_as_the_api_server_reads_them() {
    common::require_kubectl();
    let (env, _) = with_deployment().await;
    let home = env.dir.path();
    let patch = |ops: &'static str| {
        let kubeconfig = env.files.team_a_kubeconfig.clone();
        async move {
            common::kubectl(
                &kubeconfig,
                home,
                &[
                    "patch",
                    "deployment",
                    "d1",
                    "-n",
                    "team-a",
                    "--type",
                    "json",
                    "-p",
                    ops,
                ],
            )
            .await
        }
    };
    env.sandbox.sandbox.clear_recorded();
    let out = patch(
        r#"[{"op":"replace","path":"/spec/template/spec/containers/-1/image","value":"nginx:9"}]"#,
    )
    .await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    let sent = sent_patch(&env);
    assert_eq!(
        sent[0]["path"], "/spec/template/spec/containers/0/image",
        "{sent}"
    );

    env.sandbox.sandbox.clear_recorded();
    let out = patch(r#"[{"op":"add","path":"/spec/template/spec/containers/+0/securityContext/privileged","value":true}]"#).await;
    refused_by_kubectl(&env, &out, "deployments.apps \"d1\" is forbidden: violates PodSecurity \"restricted:latest\" in spec.template: privileged (container \"c\" must not set securityContext.privileged=true)");
    env.stop().await;
}

/// `kubectl apply --server-side --force-conflicts --field-manager MANAGER -n team-a` of
/// `yaml`, as team-a.
async fn server_side_apply(env: &Env, yaml: &str, manager: &str) -> std::process::Output {
    let home = env.dir.path();
    let file = home.join(format!("{manager}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    common::kubectl(
        &env.files.team_a_kubeconfig,
        home,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            manager,
            "-n",
            "team-a",
            "-f",
            file.to_str().unwrap(),
        ],
    )
    .await
}

/// Deployment `ssa` with these containers (name, image), each with the container security
/// context `restricted` requires; the pod-level one too when `pod_context`.
fn ssa_deployment(pod_context: bool, containers: &[(&str, &str)], context: bool) -> String {
    let mut spec = String::new();
    if pod_context {
        spec.push_str("      securityContext:\n        runAsNonRoot: true\n        seccompProfile: {type: RuntimeDefault}\n");
    }
    spec.push_str("      containers:\n");
    for (name, image) in containers {
        spec.push_str(&format!("      - name: {name}\n        image: {image}\n"));
        if context {
            spec.push_str("        securityContext:\n          allowPrivilegeEscalation: false\n          capabilities: {drop: [ALL]}\n");
        }
    }
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  selector:\n    matchLabels: {{app: ssa}}\n  template:\n    metadata:\n      labels: {{app: ssa}}\n    spec:\n{spec}"
    )
}

/// Server-side apply with kubectl, each manager's applied set recorded in `managedFields` by
/// the sandbox as kube-apiserver records it: a re-apply is judged on what it removes. An image
/// updater applies the image alone, twice — the second a re-apply that removes only what it
/// sets again — and both pass. kubectl then re-applies the workload without the sidecar
/// another applier keeps: the API server would keep the sidecar and remove the security
/// context only kubectl applied to it, so the proxy refuses (403) and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_reapplies_are_judged_on_what_they_remove() {
    common::require_kubectl();
    let env = Env::start().await;
    let image = || async {
        let out = env
            .kubectl(&[
                "get",
                "deployment",
                "ssa",
                "-n",
                "team-a",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let full = ssa_deployment(true, &[("web", "nginx:1"), ("side", "busybox")], true);
    let out = server_side_apply(&env, &full, "kubectl").await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    for tag in ["nginx:2", "nginx:3"] {
        let partial = ssa_deployment(false, &[("web", tag)], false);
        let out = server_side_apply(&env, &partial, "image-updater").await;
        assert!(out.status.success(), "{tag}: {}", common::stderr(&out));
        assert_eq!(image().await, tag);
    }
    let sidecar = ssa_deployment(false, &[("side", "busybox")], false);
    let out = server_side_apply(&env, &sidecar, "sidecar-owner").await;
    assert!(out.status.success(), "{}", common::stderr(&out));

    env.sandbox.sandbox.clear_recorded();
    let without_side = ssa_deployment(true, &[("web", "nginx:3")], true);
    let out = server_side_apply(&env, &without_side, "kubectl").await;
    refused_by_kubectl(&env, &out, "deployments.apps \"ssa\" is forbidden: violates PodSecurity \"restricted:latest\" in spec.template: allowPrivilegeEscalation != false (container \"side\" must set securityContext.allowPrivilegeEscalation=false)");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_gets_pod_security_s_forbidden_status() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::{
        api::PostParams,
        config::{KubeConfigOptions, Kubeconfig},
        Api, Client, Config,
    };
    let env = Env::start().await;
    let kc = Kubeconfig::read_from(&env.files.team_a_kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(Client::try_from(config).unwrap(), "team-a");
    let mut spec = good_spec();
    spec["containers"][0]["securityContext"]["privileged"] = json!(true);
    let p: Pod = serde_json::from_value(pod("kube-rs-priv", spec)).unwrap();
    env.sandbox.sandbox.clear_recorded();
    match pods.create(&PostParams::default(), &p).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert_eq!(s.reason, "Forbidden");
            assert!(
                s.message.starts_with("pods \"kube-rs-priv\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container "),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(writes(&env).is_empty());
    let ok: Pod = serde_json::from_value(pod("kube-rs-ok", good_spec())).unwrap();
    pods.create(&PostParams::default(), &ok).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_is_recorded_only_and_caps_are_per_resource() {
    let env = Env::start_with(|c| {
        *c = c
            .replace(
                "      team-b: {enforce: baseline, warn: restricted}\n",
                "      team-b: {enforce: baseline, warn: restricted}\n      default: {audit: restricted}\n",
            )
            .replace(
                "  pod_security:\n",
                "  resources:\n    - {group: \"\", resources: [configmaps], max_body_bytes: 1024}\n  pod_security:\n",
            );
    })
    .await;
    // Audit: passes untouched, no warning, counted.
    let mut spec = good_spec();
    spec["hostPID"] = json!(true);
    let (resp, _) = accepted(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &pod("audited", spec),
        ),
    )
    .await;
    assert!(
        resp.headers().get("warning").is_none(),
        "{:?}",
        resp.headers()
    );
    // ... and recorded in its audit event, as the apiserver's PodSecurity plugin annotates it.
    let id = resp.headers()["audit-id"].to_str().unwrap().to_owned();
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let event: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
        .expect("the audit event");
    let v = event["annotations"]["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        v.starts_with(
            "would violate PodSecurity \"restricted:latest\": host namespaces (hostPID=true)"
        ),
        "{event}"
    );
    // Warn and enforce are counted too.
    let mut spec = good_spec();
    spec["containers"][0]["securityContext"] = json!({});
    accepted(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/team-b/pods",
            "application/json",
            &pod("warned", spec),
        ),
    )
    .await;
    let mut spec = good_spec();
    spec["hostPID"] = json!(true);
    refused_pod(&env, &pod("refused", spec)).await;
    let (_, metrics) = common::admin_get(env.admin_addr, "/metrics").await;
    for mode in ["audit", "warn", "enforce"] {
        let line = format!("portcullis_pod_security_violating_requests_total{{mode=\"{mode}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    // A per-resource cap: 1 KiB for configmaps, the default 3 MiB elsewhere.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(2000)}});
    let s = refused(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &cm,
        ),
        413,
        "RequestEntityTooLarge",
    )
    .await;
    assert_eq!(s["message"], "Request entity too large: limit is 1024");
    let sec = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"}, "stringData": {"k": "x".repeat(2000)}});
    accepted(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            &sec,
        ),
    )
    .await;
    env.stop().await;
}

/// A pod the namespace's level would refuse today (made before the level was tightened, or by
/// a controller straight to the API server) can still be annotated: a patch of annotations
/// Pod Security does not read is not re-judged, as PodSecurity's `isSignificantPodUpdate`
/// does not re-check it either. An AppArmor annotation is still judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotating_a_pod_is_judged_only_for_the_annotations_pod_security_reads() {
    common::require_kubectl();
    let env = Env::start().await;
    let mut spec = good_spec();
    spec["hostNetwork"] = json!(true);
    let direct = common::direct::admin(&env);
    common::direct::ok(
        &common::direct::k_in(
            &direct,
            &env,
            &["-n", "team-a", "create", "-f", "-"],
            &pod("legacy", spec).to_string(),
        )
        .await,
    );
    let alice = env.alice_token();
    let path = "/api/v1/namespaces/team-a/pods/legacy";
    let annotate = |key: &str, value: &str| {
        json_req(
            "PATCH",
            path,
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {key: value}}}),
        )
    };
    accepted_as(
        &env,
        annotate("cluster-autoscaler.kubernetes.io/safe-to-evict", "true"),
        Some(&alice),
    )
    .await;
    refused_as(
        &env,
        annotate(
            "container.apparmor.security.beta.kubernetes.io/c",
            "unconfined",
        ),
        Some(&alice),
        403,
        "Forbidden",
    )
    .await;
}

/// The review's root pod (`runAsUser: 0`) claiming a user namespace, otherwise restricted.
fn root_in_a_user_namespace(name: &str) -> Value {
    pod(
        name,
        json!({
            "hostUsers": false,
            "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }),
    )
}

/// `hostUsers: false` exempts a pod from restricted's `runAsNonRoot` / `runAsUser` (v1.35
/// rules) only when the operator says the API server keeps the field
/// (`pod_security.user_namespaces: true`): with `UserNamespacesSupport` off it drops the field
/// and the pod would run as root in the host user namespace. By default: refused, unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_users_false_exempts_only_where_user_namespaces_are_on() {
    let env = Env::start().await;
    let s = refused_pod(&env, &root_in_a_user_namespace("r")).await;
    assert!(
        message(&s).starts_with("pods \"r\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true"),
        "{s}"
    );
    assert!(has_cause(&s, "spec.securityContext.runAsUser"), "{s}");
    drop(env);

    let env = Env::start_with(|c| {
        *c = c.replace(
            "  pod_security:\n",
            "  pod_security:\n    user_namespaces: true\n",
        );
    })
    .await;
    let (_, sent) = accepted(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/team-a/pods",
            "application/json",
            &root_in_a_user_namespace("r"),
        ),
    )
    .await;
    assert_eq!(sent["spec"]["hostUsers"], false);
}

/// Where `hostUsers: false` exempts a container running as root, a re-apply that drops the
/// exemption while another manager keeps the `runAsUser: 0` would store a root container in
/// the host user namespace: the re-apply is judged with the exemption removed and the
/// violation kept (removing both would pass), and refused before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reapply_dropping_host_users_where_others_keep_root_is_refused() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  pod_security:\n",
            "  pod_security:\n    user_namespaces: true\n",
        );
    })
    .await;
    let mut root = compliant_container_context();
    root["runAsUser"] = json!(0);
    let spec = json!({"hostUsers": false,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "busybox", "securityContext": root}]});
    let (_, mut dep, _) = kinds("team-a", "d7", spec).swap_remove(4);
    let c = r#"k:{"name":"c"}"#;
    let entry = |manager: &str, op: &str, fields: Value| {
        json!({"manager": manager, "operation": op, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": fields}}}})
    };
    dep["metadata"]["managedFields"] = json!([
        entry(
            "x",
            "Apply",
            json!({"f:hostUsers": {}, "f:containers": {c: {".": {}, "f:name": {},
            "f:securityContext": {"f:runAsUser": {}}}}})
        ),
        entry(
            "y",
            "Update",
            json!({"f:containers": {c: {"f:securityContext": {"f:runAsUser": {}}}}})
        ),
    ]);
    create(&env, "/apis/apps/v1/namespaces/team-a/deployments", &dep).await;
    let spec = json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "busybox", "securityContext": compliant_container_context()}]});
    reapply_refused(
        &env,
        "d7",
        spec,
        "spec.template.spec.containers[0].securityContext.runAsUser",
    )
    .await;
}

/// A pod already stored with `hostUsers` (made straight at the API server): the API server keeps
/// the field on its updates whatever its feature gate (`hostUsersInUse`), so an update through
/// the proxy is judged with it trusted although `user_namespaces` is off — not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_a_pod_stored_with_host_users_is_judged_with_it() {
    common::require_kubectl();
    let env = Env::start().await;
    let stored = root_in_a_user_namespace("stored");
    common::direct::ok(
        &common::direct::k_in(
            &common::direct::admin(&env),
            &env,
            &["create", "-n", "team-a", "-f", "-"],
            &stored.to_string(),
        )
        .await,
    );
    let mut changed = stored.clone();
    changed["metadata"]["namespace"] = json!("team-a");
    changed["metadata"]["labels"] = json!({"changed": "yes"});
    let (_, sent) = accepted(
        &env,
        json_req(
            "PUT",
            "/api/v1/namespaces/team-a/pods/stored",
            "application/json",
            &changed,
        ),
    )
    .await;
    assert_eq!(sent["metadata"]["labels"]["changed"], "yes");
    // A new pod claiming the same is still refused (nothing stored to trust).
    refused_pod(&env, &root_in_a_user_namespace("fresh")).await;
}

/// A namespace's Pod Security policy and a tenant's both bind: team-a's `baseline:latest` is not
/// replaced by the tenant's higher but older `restricted:v1.18`, which reads seccomp only from
/// the annotations and has no host-probe check. Refused (403, naming the policy that refused,
/// in the response and the audit event), never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_old_higher_level_does_not_replace_the_namespace_s() {
    let env = Env::start_with(|c| {
        *c = c
            .replace(
                "      team-a: {enforce: restricted}\n",
                "      team-a: {enforce: baseline}\n",
            )
            .replace(
                "      team-b: {enforce: baseline, warn: restricted}\n",
                "      team-b: {enforce: baseline, warn: restricted}\n    tenants:\n      team-a: {enforce: restricted, enforce_version: v1.18}\n",
            );
    })
    .await;
    let alice = env.alice_token();
    let mut spec = good_spec();
    spec["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
    spec["containers"][0]["livenessProbe"] =
        json!({"httpGet": {"host": "169.254.169.254", "port": 80, "path": "/"}});
    let s = refused_as(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/team-a/pods",
            "application/json",
            &pod("contractor", spec),
        ),
        Some(&alice),
        403,
        "Forbidden",
    )
    .await;
    assert!(
        message(&s).starts_with(
            "pods \"contractor\" is forbidden: violates PodSecurity \"baseline:latest\": probe or lifecycle host"
        ),
        "{s}"
    );
    assert!(
        has_cause(&s, "spec.securityContext.seccompProfile.type"),
        "{s}"
    );
    assert!(
        has_cause(&s, "spec.containers[0].livenessProbe.httpGet.host"),
        "{s}"
    );
    // The audit event names the policy that refused, as the message does.
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let event: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["name"] == "contractor"
                && e["responseStatus"]["code"] == 403
        })
        .expect("the refusal's audit event");
    assert_eq!(
        event["annotations"]["pod-security.kubernetes.io/enforce-policy"], "baseline:latest",
        "{event}"
    );
    // A pod that passes both: `enforce-policy` keeps PodSecurity's one `level:version` (the
    // stricter), the proxy's own annotation lists both.
    accepted_as(
        &env,
        json_req(
            "POST",
            "/api/v1/namespaces/team-a/pods",
            "application/json",
            &pod("compliant", good_spec()),
        ),
        Some(&alice),
    )
    .await;
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let event: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["name"] == "compliant")
        .expect("the create's audit event");
    let a = &event["annotations"];
    assert_eq!(
        a["pod-security.kubernetes.io/enforce-policy"], "restricted:v1.18",
        "{event}"
    );
    assert_eq!(
        a["portcullis.io/pod-security-enforce-policies"], "restricted:v1.18, baseline:latest",
        "{event}"
    );
    // PodSecurity writes `enforce-policy` only for the creates and updates it judges: not for
    // a read, a list, an update that changes nothing it checks (a label), or a delete.
    let pod_path = "/api/v1/namespaces/team-a/pods/compliant";
    let label = json!({"metadata": {"labels": {"tier": "web"}}});
    let requests = [
        ("get", req("GET", pod_path, None, "")),
        (
            "list",
            req("GET", "/api/v1/namespaces/team-a/pods", None, ""),
        ),
        (
            "label patch",
            json_req("PATCH", pod_path, "application/merge-patch+json", &label),
        ),
        ("delete", req("DELETE", pod_path, None, "")),
    ];
    for (what, r) in requests {
        let resp = send_as(&env, r, Some(&alice)).await;
        assert!(resp.status().is_success(), "{what}: {}", resp.status());
    }
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    let verbs: Vec<(String, Value)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == "alice"
                && e["verb"] != "create"
        })
        .map(|e| {
            (
                e["verb"].as_str().unwrap_or_default().to_owned(),
                e["annotations"].clone(),
            )
        })
        .collect();
    let seen: Vec<&str> = verbs.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(seen, ["get", "list", "patch", "delete"], "{verbs:?}");
    for (verb, a) in &verbs {
        for key in [
            "pod-security.kubernetes.io/enforce-policy",
            "portcullis.io/pod-security-enforce-policies",
        ] {
            assert!(a.get(key).is_none(), "{verb}: {a}");
        }
    }
}

/// With `latest_version` below v1.27 the API server copies the legacy seccomp annotations into
/// unset `seccompProfile` fields before PodSecurity judges the pod: a container annotated
/// `unconfined` in a pod whose pod-level profile is `RuntimeDefault` would run unconfined.
/// Refused (403), never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_seccomp_annotations_are_judged_where_the_api_server_copies_them() {
    let env = Env::start_with(|c| {
        *c = c.replace(
            "  pod_security:\n",
            "  pod_security:\n    latest_version: v1.26\n",
        );
    })
    .await;
    let mut obj = pod("legacy-seccomp", good_spec());
    obj["metadata"]["annotations"] =
        json!({"container.seccomp.security.alpha.kubernetes.io/c": "unconfined"});
    let s = refused_pod(&env, &obj).await;
    assert!(
        message(&s).contains("violates PodSecurity \"restricted:latest\": seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")"),
        "{s}"
    );
    assert!(
        has_cause(
            &s,
            "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/c]"
        ),
        "{s}"
    );
}

/// The ResponseComplete event of the last request by `user` to `path` with `verb`.
fn last_event(env: &Env, user: &str, verb: &str, path: &str) -> Value {
    let log = std::fs::read_to_string(env.files.dir.join("audit.log")).unwrap();
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == user
                && e["verb"] == verb
                && e["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(path))
        })
        .unwrap_or_else(|| panic!("no {verb} {path} by {user} in the audit log"))
}

/// PodSecurity's `enforce-policy` is written where its admission gets to a write, as the API
/// server's events carry it: a pod create and a patch of what it checks (the image) under the
/// namespace's level; a pod it let through but a field rule then refused (the annotation
/// stays, the upstream sees nothing); and in a namespace whose levels are all privileged, every
/// pod create and update — a label-only patch included — as `privileged:latest`. A read has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_policy_is_written_where_pod_security_gets_to_the_write() {
    let env = Env::start().await;
    let alice = env.alice_token();
    let key = "pod-security.kubernetes.io/enforce-policy";
    let team_a = "/api/v1/namespaces/team-a/pods";
    accepted_as(
        &env,
        json_req("POST", team_a, "application/json", &pod("p1", good_spec())),
        Some(&alice),
    )
    .await;
    assert_eq!(
        last_event(&env, "alice", "create", team_a)["annotations"][key],
        "restricted:latest"
    );
    let image = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
    accepted_as(&env, smp(&format!("{team_a}/p1"), &image), Some(&alice)).await;
    assert_eq!(
        last_event(&env, "alice", "patch", team_a)["annotations"][key],
        "restricted:latest"
    );
    // Compliant, but a field rule denies tenants `nodeName`: refused after Pod Security ran.
    let mut spec = good_spec();
    spec["nodeName"] = json!("node-1");
    refused_as(
        &env,
        json_req("POST", team_a, "application/json", &pod("p2", spec)),
        Some(&alice),
        422,
        "Invalid",
    )
    .await;
    let refused_event = last_event(&env, "alice", "create", team_a);
    assert_eq!(
        refused_event["responseStatus"]["code"], 422,
        "{refused_event}"
    );
    assert_eq!(
        refused_event["annotations"][key], "restricted:latest",
        "{refused_event}"
    );

    // `default`: every level privileged (the demo's defaults).
    let default = "/api/v1/namespaces/default/pods";
    let mut privileged = good_spec();
    privileged["containers"][0]["securityContext"] = json!({"privileged": true});
    accepted(
        &env,
        json_req("POST", default, "application/json", &pod("q", privileged)),
    )
    .await;
    assert_eq!(
        last_event(&env, "admin", "create", default)["annotations"][key],
        "privileged:latest"
    );
    let label = json!({"metadata": {"labels": {"tier": "web"}}});
    accepted(
        &env,
        json_req(
            "PATCH",
            &format!("{default}/q"),
            "application/merge-patch+json",
            &label,
        ),
    )
    .await;
    assert_eq!(
        last_event(&env, "admin", "patch", default)["annotations"][key],
        "privileged:latest"
    );
    let resp = send_as(&env, req("GET", &format!("{default}/q"), None, ""), None).await;
    assert_eq!(resp.status(), 200);
    let read = last_event(&env, "admin", "get", default);
    assert!(read["annotations"].get(key).is_none(), "{read}");
    env.stop().await;
}
