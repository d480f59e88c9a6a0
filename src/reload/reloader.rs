//! One reload: load, check what cannot change live, build, prepare, swap; and its report
//! (log lines and the `config_reloads` counter).

use std::{path::Path, sync::Arc};

use super::{fixed, live::Live};
use crate::{
    audit::sink::webhook::Retarget,
    config::{self, UpstreamToken},
    problems::{BuildProblems, Problem},
    stack::Runtime,
    telemetry::metrics::ResultLabels,
};

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// The new configuration is in force (its one-line summary).
    Applied(String),
    /// Nothing changed; every problem with its key path.
    Refused(Vec<Problem>),
}

/// Reload from `path` now; `cause` is logged. The result is logged and counted.
pub async fn reload(live: &Live, path: &Path, cause: &str) -> Outcome {
    let outcome = match attempt(live, path).await {
        Ok(summary) => Outcome::Applied(summary),
        Err(problems) => Outcome::Refused(problems),
    };
    let metrics = live.current().rt.metrics.clone();
    let result = match &outcome {
        Outcome::Applied(summary) => {
            tracing::info!(cause, summary = %summary, "configuration reloaded");
            "success"
        }
        Outcome::Refused(problems) => {
            for p in problems {
                tracing::error!(
                    cause,
                    key = %p.path,
                    problem = %p.message,
                    hint = %p.hint,
                    "configuration reload refused"
                );
            }
            tracing::error!(
                cause,
                problems = problems.len(),
                "configuration reload refused; the running configuration stays in force"
            );
            "failure"
        }
    };
    metrics
        .config_reloads
        .get_or_create(&ResultLabels { result })
        .inc();
    metrics
        .config_reload_refused
        .set(i64::from(matches!(outcome, Outcome::Refused(_))));
    outcome
}

fn problem(path: &str, message: String, hint: &str) -> Vec<Problem> {
    vec![Problem::new(path, message, hint)]
}

async fn attempt(live: &Live, path: &Path) -> Result<String, Vec<Problem>> {
    // File reads and key parsing block: off the async workers.
    let owned = path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || config::load(&owned))
        .await
        .map_err(|e| problem("(reload)", e.to_string(), "see the log"))??;
    let old = live.current();
    let refused = fixed::refusals(&old.rt.config, &config);
    if !refused.is_empty() {
        return Err(refused);
    }
    // An older certificate restored in place of the running one (a failed renewal pasted over,
    // a backup) would fail every new handshake while open connections hide it: refused while
    // the running one is good. Both out of period, the new one is no worse.
    let now = crate::authn::x509::now();
    if let (Some((not_before, not_after)), None) = (
        config.tls.leaf_out_of_period(now),
        old.rt.config.tls.leaf_out_of_period(now),
    ) {
        return Err(problem(
            "listen.tls.cert_file",
            format!("the new serving certificate is outside its validity period (notBefore {not_before}, notAfter {not_after}, Unix seconds) while the running one is within it: every new handshake would fail"),
            "give the renewed certificate; the running one stays in force",
        ));
    }
    let prev = old.clone();
    let (rt, receivers) = tokio::task::spawn_blocking(move || {
        let rt = Runtime::rebuild(&config, &prev.rt).map_err(|e| {
            match e.downcast::<BuildProblems>() {
                Ok(at_keys) => at_keys.0,
                Err(e) => problem(
                    "(build)",
                    format!("{e:#}"),
                    "fix the setting named in the message",
                ),
            }
        })?;
        let receivers = audit_receivers(&rt)?;
        Ok::<_, Vec<Problem>>((rt, receivers))
    })
    .await
    .map_err(|e| problem("(reload)", e.to_string(), "see the log"))??;
    prepare(&rt, &old.rt).await?;
    let summary = rt.config.summary();
    live.swap(rt);
    // After the swap: a reload refused before it leaves the running receivers as they were.
    for r in receivers {
        r.apply();
    }
    Ok(summary)
}

/// The audit webhook sinks' kubeconfigs read again: the receivers that changed, built (the
/// sinks themselves carry over, see `carry.rs`).
fn audit_receivers(rt: &Runtime) -> Result<Vec<Retarget>, Vec<Problem>> {
    let (Some(audit), Some(settings)) = (&rt.audit, &rt.config.audit) else {
        return Ok(Vec::new());
    };
    audit
        .auditor
        .retarget(&settings.sink_specs())
        .map_err(|(i, e)| {
            problem(
                &format!("audit.sinks[{i}].webhook.kubeconfig"),
                format!("{e:#}"),
                "a kubeconfig naming the receiver's https URL, its CA and credentials; the running receiver stays",
            )
        })
}

/// Make the new runtime able to serve its first request: JWT keys loaded (a running issuer
/// whose new key source gives none would refuse every token it signs), a new upstream probed
/// (readiness: refused when none of its endpoints answers while the running upstream does),
/// the token file re-read into carried credentials.
///
/// An issuer the running configuration does not have yet blocks nothing: nobody's tokens are
/// accepted by it yet, so without keys it only stays not ready — as at startup, its keys are
/// retried every 10 s — while what the same edit revokes (a grant, a CA, a CRL) applies.
async fn prepare(rt: &Runtime, old: &Runtime) -> Result<(), Vec<Problem>> {
    if let Some(jwt) = &rt.jwt {
        // Issuers whose key store was carried over (fetched as before) need no fetch: the
        // running configuration is in the same state with them.
        let mut failed = jwt.refresh_new(old.jwt.as_deref()).await;
        failed.retain(|(issuer, err)| {
            let running = old.jwt.as_deref().is_some_and(|j| j.has_issuer(issuer));
            if !running {
                tracing::warn!(%issuer, %err, "JWT keys of a new issuer not loaded yet; its tokens are refused until they load");
            }
            running
        });
        if !failed.is_empty() {
            return Err(failed
                .into_iter()
                .map(|(issuer, err)| {
                    // The issuer's own entry, as every other JWT problem is reported.
                    let path = rt
                        .config
                        .jwt
                        .iter()
                        .flat_map(|j| &j.issuers)
                        .find(|i| i.checks.url == issuer)
                        .map_or_else(|| "authentication.jwt".to_owned(), |i| i.path.clone());
                    Problem::new(
                        path,
                        format!("no keys could be loaded for issuer {issuer}: {err}"),
                        "fix the issuer's key source; the running configuration keeps its keys",
                    )
                })
                .collect());
        }
    }
    if Arc::ptr_eq(&rt.upstream, &old.upstream) {
        if let UpstreamToken::File(path) = &rt.config.upstream.token {
            rt.credentials.reload(path).await;
        }
    } else if !rt.upstream.probe().await {
        // A new upstream no endpoint of which answers, in place of one that does, would turn
        // every request into a 502 / 503 and every replica unready at once (a URL typo, a
        // wrong CA, credentials the API server refuses): refused, as a running issuer without
        // keys is, and retried until it answers. With the running one down too, nothing is
        // lost by applying it — and a fix is never held back.
        let window = old.config.ready_window;
        if old.upstream.healthy_within(window) {
            let why = rt.upstream.not_ready(window).join("; ");
            return Err(problem(
                "upstream",
                format!("no endpoint of the new upstream answered its readiness probe (/readyz), while the running one does: {why}"),
                "fix the URL, CA or credentials; the running upstream stays in force, and a refused reload is tried again",
            ));
        }
        tracing::warn!("the reloaded upstream did not answer its first readiness probe (nor does the running one)");
    }
    Ok(())
}
