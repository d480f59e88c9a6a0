//! The impersonation self-test: may the proxy impersonate what it sends? The way operators most
//! often misconfigure a proxy like this one is an upstream ClusterRole that lacks one of the
//! `impersonate` rights; every request that needs it then fails upstream with a 403 that
//! names the proxy, far from the cause.
//!
//! The proxy asks the upstream one `SelfSubjectAccessReview` per right, with its own
//! credentials: verb `impersonate` on `users`, `groups`, `serviceaccounts` (core group),
//! `uids` and `userextras/<key>` (`authentication.k8s.io`) for every extra key it sends —
//! `portcullis.io/tenant` when tenants are configured, `portcullis.io/token-id` and each
//! issuer's `claim_mappings.extra` keys when JWT issuers are. The questions carry no name, so a
//! ClusterRole that narrows a right with `resourceNames` (as README and `deploy/` advise)
//! answers "no" here: a refused right is then looked up in the proxy's rules
//! (`SelfSubjectRulesReview`), and one that a rule grants for some names is *narrowed* —
//! reported (gauge 2, a warning), never fatal: requests for other names are refused upstream,
//! which is the point of narrowing it.
//!
//! When: at start (before the first readiness probe) and again from `/readyz` once the last
//! answer is older than `upstream.health_interval`. Reports: one log line per right that is
//! refused (error for a required right, warning for an optional one) or could not be asked,
//! logged when the answer changes; the gauge
//! `portcullis_upstream_impersonation_allowed{right}` (1 allowed, 2 for some names only,
//! 0 refused, -1 unknown); and
//! [`SelfTest::not_ready`] for `/readyz`. Required rights — `users`, `groups`, the extras it
//! sends, and `uids` when an issuer maps a uid — make `/readyz` fail when refused: without
//! them every request of that kind fails. `serviceaccounts` (needed only for service-account
//! users, e.g. `kubectl --as system:serviceaccount:…`) is reported, never fatal. An upstream
//! that cannot be asked leaves readiness to the upstream health check.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::{json, Value};

use super::{
    review::{access_review, rules_review, Asker},
    Upstream,
};
use crate::authn::identity::{TENANT_EXTRA, TOKEN_ID_EXTRA};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RightLabels {
    /// `users`, `groups`, `uids`, `serviceaccounts`, `userextras/<key>` (from config: closed).
    pub right: String,
}

/// One impersonation right the proxy may need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Right {
    /// `users`, `groups`, `uids`, `serviceaccounts`, `userextras/<key>`.
    pub name: String,
    /// Whether a refusal makes `/readyz` fail.
    pub required: bool,
}

impl Right {
    /// API group, resource and subresource, as RBAC names them.
    fn parts(&self) -> (&'static str, &str, &str) {
        match self.name.split_once('/') {
            Some((r, key)) => ("authentication.k8s.io", r, key),
            None if self.name == "uids" => ("authentication.k8s.io", "uids", ""),
            None => ("", self.name.as_str(), ""),
        }
    }

    fn attributes(&self) -> Value {
        let (group, resource, sub) = self.parts();
        json!({"resourceAttributes": {"verb": "impersonate", "group": group,
            "resource": resource, "subresource": sub}})
    }

    /// Whether one of `rules` (a SelfSubjectRulesReview's `resourceRules`) grants this right
    /// for some names only.
    fn narrowed_in(&self, rules: &Value) -> bool {
        let (group, resource, sub) = self.parts();
        let full = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        let has = |rule: &Value, key: &str, want: &str| {
            rule[key]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x == want || x == "*"))
        };
        rules.as_array().is_some_and(|rules| {
            rules.iter().any(|r| {
                has(r, "verbs", "impersonate")
                    && has(r, "apiGroups", group)
                    && has(r, "resources", &full)
                    && r["resourceNames"].as_array().is_some_and(|n| !n.is_empty())
            })
        })
    }

    /// The rule the operator would add, in RBAC's words.
    fn rule(&self) -> String {
        let (group, resource) = match self.name.as_str() {
            "users" | "groups" | "serviceaccounts" => ("\"\"", self.name.clone()),
            other => ("authentication.k8s.io", other.to_owned()),
        };
        format!("{{apiGroups: [{group}], resources: [{resource}], verbs: [impersonate]}}")
    }
}

/// The upstream's answer for one right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    /// Allowed for the names a rule lists (`resourceNames`), refused for others.
    Narrowed,
    Refused,
    /// It could not be asked (unreachable, not a review answer): the reason.
    Unknown(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The self-test's state and its gauge.
pub struct SelfTest {
    upstream: Arc<Upstream>,
    rights: Vec<Right>,
    every: Duration,
    gauge: Family<RightLabels, Gauge>,
    last: Mutex<Option<(Instant, Vec<Answer>)>>,
    /// One run at a time.
    running: tokio::sync::Mutex<()>,
    /// Rights of the configurations this one replaced that it does not ask about: their
    /// series go at each of its runs — not when it is built, since the reload building it may
    /// still be refused, leaving the running configuration's series missing.
    forget: Mutex<Vec<String>>,
}

/// The rights a proxy with this configuration needs: `tenants` (tenants configured), and per
/// JWT issuer whether it maps a uid and its extra keys.
pub fn rights(tenants: bool, jwt: bool, uid: bool, extra_keys: &[String]) -> Vec<Right> {
    let r = |name: &str, required: bool| Right {
        name: name.to_owned(),
        required,
    };
    let mut out = vec![
        r("users", true),
        r("groups", true),
        r("uids", uid),
        r("serviceaccounts", false),
    ];
    let mut keys: Vec<&str> = Vec::new();
    if tenants {
        keys.push(TENANT_EXTRA);
    }
    if jwt {
        keys.push(TOKEN_ID_EXTRA);
    }
    keys.extend(extra_keys.iter().map(String::as_str));
    keys.sort_unstable();
    keys.dedup();
    out.extend(
        keys.into_iter()
            .map(|k| r(&format!("userextras/{k}"), true)),
    );
    out
}

/// [`rights`] for a validated configuration.
pub fn rights_for(config: &crate::config::Config) -> Vec<Right> {
    let issuers = config.jwt.iter().flat_map(|j| j.issuers.iter());
    let uid = issuers.clone().any(|i| i.checks.uid.is_some());
    let keys: Vec<String> = issuers
        .flat_map(|i| i.checks.extra.iter().map(|(k, _)| k.clone()))
        .collect();
    rights(
        config.authorization.has_tenants(),
        config.jwt.is_some(),
        uid,
        &keys,
    )
}

impl SelfTest {
    /// A self-test of `rights`, repeated from `/readyz` at most `every`; its gauge registered.
    pub fn new(
        upstream: Arc<Upstream>,
        rights: Vec<Right>,
        every: Duration,
        registry: &mut Registry,
    ) -> SelfTest {
        let gauge = Family::<RightLabels, Gauge>::default();
        // The registry adds the `portcullis_` prefix.
        registry.register(
            "upstream_impersonation_allowed",
            "Whether the upstream lets the proxy impersonate this (1 yes, 2 for some names only, 0 no, -1 could not ask)",
            gauge.clone(),
        );
        SelfTest {
            upstream,
            rights,
            every,
            gauge,
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            forget: Mutex::new(Vec::new()),
        }
    }

    /// The self-test of a reloaded configuration: its upstream and rights, the same gauge
    /// series (registered once, by the first runtime).
    pub fn renewed(
        &self,
        upstream: Arc<Upstream>,
        rights: Vec<Right>,
        every: Duration,
    ) -> SelfTest {
        // A right the new configuration no longer needs must not keep its last value (a 0 there
        // would keep an alert firing for nothing).
        // With the ones this configuration had not yet removed (a second reload before its
        // first run), less any the new one asks about again.
        let mut forget: Vec<String> = lock(&self.forget).clone();
        for old in &self.rights {
            if !forget.contains(&old.name) {
                forget.push(old.name.clone());
            }
        }
        forget.retain(|name| !rights.iter().any(|r| &r.name == name));
        SelfTest {
            upstream,
            rights,
            every,
            gauge: self.gauge.clone(),
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            forget: Mutex::new(forget),
        }
    }

    /// A self-test run once, outside a runtime (`check-config --online`): no registry.
    pub fn once(upstream: Arc<Upstream>, rights: Vec<Right>) -> SelfTest {
        SelfTest::new(upstream, rights, Duration::MAX, &mut Registry::default())
    }

    pub fn rights(&self) -> &[Right] {
        &self.rights
    }

    /// Ask every question now (concurrently); record, log changes, and return the answers in
    /// the order of [`SelfTest::rights`].
    pub async fn run(&self) -> Vec<Answer> {
        let _one = self.running.lock().await;
        let answers = ask_all(&self.upstream, &self.rights).await;
        // Every run, not once: a run of the configuration before, still in flight at the
        // swap, may have set them again.
        for right in lock(&self.forget).iter() {
            self.gauge.remove(&RightLabels {
                right: right.clone(),
            });
        }
        let previous = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((Instant::now(), answers.clone()))
            .map(|(_, a)| a);
        for (i, (right, answer)) in self.rights.iter().zip(&answers).enumerate() {
            let value = match answer {
                Answer::Allowed => 1,
                Answer::Narrowed => 2,
                Answer::Refused => 0,
                Answer::Unknown(_) => -1,
            };
            self.gauge
                .get_or_create(&RightLabels {
                    right: right.name.clone(),
                })
                .set(value);
            if previous.as_ref().and_then(|p| p.get(i)) != Some(answer) {
                log(right, answer);
            }
        }
        answers
    }

    /// From `/readyz`: when the last answers are older than `every`, ask again in the
    /// background and wait for it briefly (a silent upstream must not stall readiness probes);
    /// then say which required right the upstream refuses.
    pub async fn not_ready(self: &Arc<Self>) -> Vec<String> {
        let stale = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= self.every);
        if stale && self.running.try_lock().is_ok() {
            let this = self.clone();
            let run = tokio::spawn(async move {
                this.run().await;
            });
            let _ = tokio::time::timeout(READYZ_WAIT, run).await;
        }
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((_, answers)) = last.as_ref() else {
            return Vec::new();
        };
        self.rights
            .iter()
            .zip(answers)
            .filter(|(r, a)| r.required && **a == Answer::Refused)
            .map(|(r, _)| {
                format!(
                    "the upstream does not let portcullis impersonate {} (add {} to its ClusterRole)",
                    r.name,
                    r.rule()
                )
            })
            .collect()
    }
}

/// How long `/readyz` waits for a fresh self-test before answering from the last one.
const READYZ_WAIT: Duration = Duration::from_secs(2);

async fn ask_all(up: &Upstream, rights: &[Right]) -> Vec<Answer> {
    let asks = rights.iter().map(|r| async move {
        match access_review(up, Asker::Proxy, &r.attributes()).await {
            Ok(s) if s["allowed"].as_bool() == Some(true) => Answer::Allowed,
            Ok(_) => Answer::Refused,
            Err(e) => Answer::Unknown(e),
        }
    });
    let mut answers = futures_util::future::join_all(asks).await;
    if answers.contains(&Answer::Refused) {
        // Refused for a question without a name: granted for some names? (Cluster-wide rules
        // are in any namespace's answer.) Not asked when nothing is refused.
        if let Ok(status) = rules_review(up, "default").await {
            for (right, answer) in rights.iter().zip(answers.iter_mut()) {
                if *answer == Answer::Refused && right.narrowed_in(&status["resourceRules"]) {
                    *answer = Answer::Narrowed;
                }
            }
        }
    }
    answers
}

fn log(right: &Right, answer: &Answer) {
    match answer {
        Answer::Allowed => {
            tracing::info!(right = %right.name, "the upstream lets portcullis impersonate {}", right.name)
        }
        Answer::Narrowed => {
            tracing::warn!(right = %right.name, "the upstream lets portcullis impersonate {} for the names its role lists only (resourceNames): requests for other names are refused upstream", right.name)
        }
        Answer::Refused if right.required => {
            tracing::error!(right = %right.name, rule = %right.rule(), "the upstream does not let portcullis impersonate {}: requests that need it will be refused upstream; add the rule to the proxy's ClusterRole (README: portcullis-impersonator)", right.name)
        }
        Answer::Refused => {
            tracing::warn!(right = %right.name, rule = %right.rule(), "the upstream does not let portcullis impersonate {}: requests as service accounts (kubectl --as system:serviceaccount:…) will be refused upstream", right.name)
        }
        Answer::Unknown(why) => {
            tracing::warn!(right = %right.name, %why, "could not ask the upstream whether portcullis may impersonate {}", right.name)
        }
    }
}

/// The self-test's answers as `check-config --online` prints them: one line per right, and
/// whether every required right is allowed.
pub fn report(rights: &[Right], answers: &[Answer]) -> (Vec<String>, bool) {
    let mut ok = true;
    let lines = rights
        .iter()
        .zip(answers)
        .map(|(r, a)| {
            let need = if r.required { "required" } else { "optional" };
            match a {
                Answer::Allowed => format!("ok       impersonate {} ({need})", r.name),
                Answer::Narrowed => format!(
                    "narrowed impersonate {} ({need}): only for the names its role lists (resourceNames)",
                    r.name
                ),
                Answer::Refused => {
                    ok &= !r.required;
                    format!(
                        "MISSING  impersonate {} ({need}): add {} to the proxy's ClusterRole",
                        r.name,
                        r.rule()
                    )
                }
                Answer::Unknown(why) => {
                    ok = false;
                    format!(
                        "UNKNOWN  impersonate {} ({need}): could not ask the upstream: {why}",
                        r.name
                    )
                }
            }
        })
        .collect();
    (lines, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_right_dropped_by_a_reload_leaves_the_gauge() {
        let mut registry = Registry::with_prefix("portcullis");
        let right = |name: &str| Right {
            name: name.into(),
            required: true,
        };
        let upstream = crate::service::testing::unreachable_upstream();
        let first = SelfTest::new(
            upstream.clone(),
            vec![right("users"), right("uids")],
            Duration::MAX,
            &mut registry,
        );
        first.run().await;
        let text = |r: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, r).unwrap();
            out
        };
        let before = text(&registry);
        assert!(
            before.contains("\nportcullis_upstream_impersonation_allowed{right=\"uids\"} -1"),
            "{before}"
        );
        let second = first.renewed(upstream.clone(), vec![right("users")], Duration::MAX);
        // Built, not yet run: the reload that built it may still be refused, so the running
        // configuration's series stay.
        assert!(text(&registry).contains("uids"));
        // A second reload before the first one's self-test ran still forgets it.
        let second = second.renewed(upstream, vec![right("users")], Duration::MAX);
        second.run().await;
        let after = text(&registry);
        assert!(!after.contains("uids"), "{after}");
        assert!(
            after.contains("portcullis_upstream_impersonation_allowed{right=\"users\"} -1"),
            "{after}"
        );
    }

    #[test]
    fn which_rights_a_config_needs() {
        let names = |v: Vec<Right>| -> Vec<(String, bool)> {
            v.into_iter().map(|r| (r.name, r.required)).collect()
        };
        assert_eq!(
            names(rights(true, true, false, &["example.com/repo".into()])),
            [
                ("users".into(), true),
                ("groups".into(), true),
                ("uids".into(), false),
                ("serviceaccounts".into(), false),
                ("userextras/example.com/repo".into(), true),
                ("userextras/portcullis.io/tenant".into(), true),
                ("userextras/portcullis.io/token-id".into(), true),
            ]
        );
        let extra = &rights(false, false, false, &[])[..];
        assert_eq!(extra.len(), 4);
        assert_eq!(
            Right {
                name: "userextras/portcullis.io/tenant".into(),
                required: true
            }
            .attributes(),
            json!({"resourceAttributes": {"verb": "impersonate", "group": "authentication.k8s.io",
                "resource": "userextras", "subresource": "portcullis.io/tenant"}})
        );
    }

    #[test]
    fn the_report_says_what_is_missing() {
        let r = rights(false, false, false, &[]);
        let (lines, ok) = report(
            &r,
            &[
                Answer::Allowed,
                Answer::Refused,
                Answer::Allowed,
                Answer::Refused,
            ],
        );
        assert!(!ok);
        assert!(
            lines[1].starts_with("MISSING  impersonate groups (required)"),
            "{lines:?}"
        );
        let (_, ok) = report(
            &r,
            &[
                Answer::Allowed,
                Answer::Allowed,
                Answer::Allowed,
                Answer::Refused,
            ],
        );
        assert!(ok, "serviceaccounts is optional");
    }
}
