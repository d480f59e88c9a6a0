//! Policy semantics (a table of rules and requests), resource wildcards, stages and managed
//! fields, JSON input, error paths, and the default policy.

use super::*;

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # 0: health probes are noise
  - level: None
    nonResourceURLs: ["/healthz*", "/version"]
  # 1: a named configmap, watched closely
  - level: RequestResponse
    resources: [{group: "", resources: [configmaps], resourceNames: [audit-me]}]
  # 2: secrets and configmaps: never bodies
  - level: Metadata
    resources: [{group: "", resources: [secrets, configmaps]}]
  # 3: pod logs
  - level: Request
    resources: [{group: "", resources: [pods/log]}]
    omitStages: [ResponseStarted]
  # 4: scale of anything in apps
  - level: Request
    verbs: [update, patch]
    resources: [{group: apps, resources: ["*/scale"]}]
  # 5: the pods resource itself
  - level: RequestResponse
    resources: [{group: "", resources: [pods]}]
  # 6: other pod subresources
  - level: Metadata
    resources: [{group: "", resources: ["pods/*"]}]
    omitManagedFields: false
  # 7: cluster-scoped reads by admins
  - level: Request
    userGroups: [admins]
    namespaces: [""]
  # 8: anything by the robot
  - level: Request
    users: [robot]
  # 9: other non-resource URLs
  - level: Metadata
    nonResourceURLs: ["/metrics", "/logs/*"]
omitManagedFields: true
"#;

struct Req {
    user: &'static str,
    groups: &'static [&'static str],
    verb: &'static str,
    path: &'static str,
    ns: &'static str,
    group: &'static str,
    resource: &'static str,
    sub: &'static str,
    name: &'static str,
}

fn res(verb: &'static str, group: &'static str, resource: &'static str) -> Req {
    Req {
        user: "alice",
        groups: &["dev"],
        verb,
        path: "/apis/x",
        ns: "team-a",
        group,
        resource,
        sub: "",
        name: "",
    }
}

fn nonres(path: &'static str) -> Req {
    Req {
        user: "alice",
        groups: &["dev"],
        verb: "get",
        path,
        ns: "",
        group: "",
        resource: "",
        sub: "",
        name: "",
    }
}

fn eval(p: &Policy, r: &Req) -> RuleEvaluation {
    let groups: Vec<String> = r.groups.iter().map(|g| g.to_string()).collect();
    p.evaluate(&Attributes {
        user: r.user,
        groups: &groups,
        verb: r.verb,
        is_resource_request: !r.resource.is_empty(),
        path: r.path,
        namespace: r.ns,
        api_group: r.group,
        resource: r.resource,
        subresource: r.sub,
        name: r.name,
    })
}

#[test]
fn semantics_table() {
    let p = Policy::from_yaml(POLICY).unwrap();
    use Level::*;
    let cases: Vec<(&str, Req, Level)> = vec![
        ("healthz prefix", nonres("/healthz"), None),
        ("healthz sub-path prefix", nonres("/healthz/etcd"), None),
        ("prefix is textual", nonres("/healthzzz"), None),
        ("version exact", nonres("/version"), None),
        ("version is exact only", nonres("/version/x"), None),
        ("metrics", nonres("/metrics"), Metadata),
        ("logs/* prefix", nonres("/logs/kubelet.log"), Metadata),
        ("/logs does not match /logs/*", nonres("/logs"), None),
        (
            "resourceNames: the named configmap",
            Req {
                name: "audit-me",
                ..res("get", "", "configmaps")
            },
            RequestResponse,
        ),
        (
            "resourceNames: another configmap falls through",
            Req {
                name: "other",
                ..res("get", "", "configmaps")
            },
            Metadata,
        ),
        ("secrets list", res("list", "", "secrets"), Metadata),
        (
            "group is literal: secrets in another group",
            res("get", "example.com", "secrets"),
            None,
        ),
        (
            "pods/log",
            Req {
                sub: "log",
                ..res("get", "", "pods")
            },
            Request,
        ),
        (
            "*/scale in apps",
            Req {
                sub: "scale",
                ..res("update", "apps", "deployments")
            },
            Request,
        ),
        (
            "*/scale: verb must match too",
            Req {
                sub: "scale",
                ..res("get", "apps", "deployments")
            },
            None,
        ),
        (
            "*/scale does not match the resource itself",
            res("update", "apps", "deployments"),
            None,
        ),
        ("pods itself", res("create", "", "pods"), RequestResponse),
        (
            "pods does not match pods/exec; pods/* does",
            Req {
                sub: "exec",
                ..res("create", "", "pods")
            },
            Metadata,
        ),
        (
            "namespaces [\"\"]: cluster-scoped by an admin",
            Req {
                ns: "",
                groups: &["admins"],
                ..res("get", "", "nodes")
            },
            Request,
        ),
        (
            "namespaces [\"\"]: namespaced by an admin does not match",
            Req {
                groups: &["admins"],
                ..res("get", "", "services")
            },
            None,
        ),
        (
            "users",
            Req {
                user: "robot",
                ..res("get", "", "services")
            },
            Request,
        ),
        (
            "users rule also matches non-resource requests",
            Req {
                user: "robot",
                ..nonres("/openapi/v3")
            },
            Request,
        ),
        ("no match → None", res("get", "", "services"), None),
    ];
    for (what, req, want) in cases {
        assert_eq!(eval(&p, &req).level, want, "{what}");
    }
}

#[test]
fn pods_star_matches_the_bare_resource_as_checker_go_does() {
    let p = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{resources: [\"pods/*\"]}]\n",
        )
        .unwrap();
    assert_eq!(eval(&p, &res("get", "", "pods")).level, Level::Request);
    let sub = Req {
        sub: "status",
        ..res("get", "", "pods")
    };
    assert_eq!(eval(&p, &sub).level, Level::Request);
    assert_eq!(eval(&p, &res("get", "", "podtemplates")).level, Level::None);
}

#[test]
fn star_matches_everything_and_resource_rules_skip_nonresource() {
    let p = Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  resources: [{group: \"\", resources: [\"*\"]}]\n- level: Metadata\n  namespaces: [team-a]\n",
        )
        .unwrap();
    let sub = Req {
        sub: "log",
        ..res("get", "", "pods")
    };
    assert_eq!(eval(&p, &sub).level, Level::Request);
    assert_eq!(eval(&p, &res("get", "apps", "x")).level, Level::Metadata);
    assert_eq!(eval(&p, &nonres("/metrics")).level, Level::None);
}

#[test]
fn stages_and_managed_fields() {
    let p = Policy::from_yaml(POLICY).unwrap();
    let log = eval(
        &p,
        &Req {
            sub: "log",
            ..res("get", "", "pods")
        },
    );
    assert_eq!(
        log.omit_stages.to_vec(),
        [Stage::RequestReceived, Stage::ResponseStarted],
        "policy omitStages unioned with the rule's"
    );
    assert!(!log.records(Stage::RequestReceived));
    assert!(!log.records(Stage::ResponseStarted));
    assert!(log.records(Stage::ResponseComplete));
    assert!(log.omit_managed_fields, "policy default");
    let exec = eval(
        &p,
        &Req {
            sub: "exec",
            ..res("create", "", "pods")
        },
    );
    assert!(!exec.omit_managed_fields, "rule overrides the policy");
    let none = eval(&p, &res("get", "", "services"));
    assert_eq!(none.omit_stages.to_vec(), [Stage::RequestReceived]);
    assert!(
        !none.records(Stage::ResponseComplete),
        "level None records nothing"
    );
}

#[test]
fn json_is_accepted_too() {
    let p = Policy::from_yaml(
            r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","metadata":{"name":"x"},"rules":[{"level":"Metadata"}]}"#,
        )
        .unwrap();
    assert_eq!(eval(&p, &nonres("/x")).level, Level::Metadata);
    assert_eq!(eval(&p, &res("get", "", "pods")).level, Level::Metadata);
}

#[test]
fn errors_name_the_key_path() {
    let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
    let cases = [
        ("rules:\n- level: Loud\n", "rules[0].level"),
        ("rules:\n- verbs: [get]\n", "rules[0]"),
        ("rules:\n- level: None\n  user: [x]\n", "rules[0].user"),
        (
            "rules:\n- level: None\n  omitStages: [Later]\n",
            "rules[0].omitStages[0]",
        ),
        ("rules: []\n", "rules"),
        (
            "rules:\n- level: None\n  nonResourceURLs: [healthz]\n",
            "rules[0].nonResourceURLs[0]",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [\"/a*b\"]\n",
            "rules[0].nonResourceURLs[0]",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [\"/a**\"]\n",
            "rules[0].nonResourceURLs[0]",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [\"/a\"]\n  namespaces: [x]\n",
            "rules[0].nonResourceURLs",
        ),
        (
            "rules:\n- level: None\n  resources: [{group: \"*\"}]\n",
            "rules[0].resources[0].group",
        ),
        (
            "rules:\n- level: None\n  resources: [{resourceNames: [x]}]\n",
            "rules[0].resources[0].resourceNames",
        ),
        (
            "rules:\n- level: None\n  resources: [{groups: [x]}]\n",
            "rules[0].resources[0].groups",
        ),
        (
            "omitManagedFields: yes please\nrules:\n- level: None\n",
            "omitManagedFields",
        ),
    ];
    for (body, path) in cases {
        let e = Policy::from_yaml(&format!("{head}{body}")).unwrap_err();
        assert_eq!(e.path, path, "{body}: {e}");
    }
    let e =
        Policy::from_yaml("apiVersion: audit.k8s.io/v2\nkind: Policy\nrules: [{level: None}]\n")
            .unwrap_err();
    assert_eq!(e.path, "apiVersion");
    let e =
        Policy::from_yaml("apiVersion: audit.k8s.io/v1\nkind: Config\nrules: [{level: None}]\n")
            .unwrap_err();
    assert_eq!(e.path, "kind");
    assert!(Policy::from_yaml(
        "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n"
    )
    .is_ok());
    assert!(Policy::from_yaml("kind: [").is_err());
    // A multi-byte last character must not trip the wildcard check.
    assert!(Policy::from_yaml(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [\"/é\"]}]\n"
        )
        .is_ok());
}

#[test]
fn the_default_policy_in_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/audit-policy.yaml");
    let p = Policy::load(&path).unwrap();
    use Level::*;
    let sub = |resource, sub, verb| Req {
        sub,
        ..res(verb, "", resource)
    };
    // Never bodies of secrets, configmaps, tokenreviews, serviceaccounts/token.
    for verb in [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ] {
        assert_eq!(
            eval(&p, &res(verb, "", "secrets")).level,
            Metadata,
            "secrets {verb}"
        );
        assert_eq!(
            eval(&p, &res(verb, "", "configmaps")).level,
            Metadata,
            "configmaps {verb}"
        );
        assert_eq!(
            eval(&p, &res(verb, "authentication.k8s.io", "tokenreviews")).level,
            Metadata,
            "tokenreviews {verb}"
        );
        assert_eq!(
            eval(&p, &sub("serviceaccounts", "token", verb)).level,
            Metadata,
            "serviceaccounts/token {verb}"
        );
    }
    // Reads at Metadata, writes at RequestResponse, everything else Metadata.
    for verb in ["get", "list", "watch"] {
        assert_eq!(eval(&p, &res(verb, "", "pods")).level, Metadata, "{verb}");
        assert_eq!(
            eval(&p, &res(verb, "apps", "deployments")).level,
            Metadata,
            "{verb}"
        );
    }
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        assert_eq!(
            eval(&p, &res(verb, "", "pods")).level,
            RequestResponse,
            "{verb}"
        );
        assert_eq!(
            eval(&p, &res(verb, "rbac.authorization.k8s.io", "clusterroles")).level,
            RequestResponse,
            "{verb}"
        );
        assert_eq!(
            eval(&p, &sub("deployments", "scale", verb)).level,
            RequestResponse,
            "{verb} scale"
        );
    }
    assert_eq!(
        eval(&p, &sub("pods", "exec", "create")).level,
        RequestResponse
    );
    assert_eq!(eval(&p, &res("proxy", "", "services")).level, Metadata);
    assert_eq!(eval(&p, &nonres("/healthz")).level, Metadata);
    assert_eq!(eval(&p, &nonres("/api")).level, Metadata);
    // RequestReceived is skipped everywhere; managed fields are omitted.
    for r in [
        res("get", "", "secrets"),
        res("create", "", "pods"),
        nonres("/version"),
    ] {
        let e = eval(&p, &r);
        assert!(!e.records(Stage::RequestReceived));
        assert!(e.records(Stage::ResponseComplete));
        assert!(e.omit_managed_fields);
    }
}
