//! A deployment and replicaset controller in miniature, run synchronously inside the store
//! after every write (no background loop: what a client reads right after its write is
//! already reconciled, which keeps tests deterministic).
//!
//! - Deployment: the ReplicaSet whose template equals the Deployment's (minus the
//!   `pod-template-hash` label) is the new one; it is created when missing (owner reference,
//!   `pod-template-hash` label and selector, `deployment.kubernetes.io/revision` = highest + 1,
//!   also when an older ReplicaSet comes back through `rollout undo`) and scaled to
//!   `spec.replicas`; every other owned ReplicaSet is scaled to 0. The status (replicas,
//!   updated/ready/available, observedGeneration) and the `Available` / `Progressing`
//!   (`NewReplicaSetAvailable`) conditions follow, so `rollout status` and `wait` finish.
//! - ReplicaSet: owned Pods (generateName `<rs>-`) created or deleted to match
//!   `spec.replicas`; they are Running and Ready at once (the store's pod defaults).
//! - Delete: objects whose owner references name the deleted uid go too (foreground GC in
//!   one step).
//!
//! Writes only when something differs, so the store's write hook reaching here again for the
//! controller's own writes ends (no loop). Errors of its own writes are ignored: the next write
//! of the owner reconciles again.

use serde_json::{json, Map, Value};

use super::{clock, discovery, store::Store};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// Called by the store after a (non dry-run) create or update.
pub fn after_write(store: &mut Store, kind: &str, obj: &Value) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match kind {
        "Deployment" => deployment(store, ns, name),
        "ReplicaSet" => replicaset(store, ns, name),
        _ => {}
    }
}

/// Called by the store after a delete: remove what the deleted object owned.
pub fn after_delete(store: &mut Store, obj: &Value) {
    let Some(uid) = obj["metadata"]["uid"].as_str() else {
        return;
    };
    let ns = obj["metadata"]["namespace"].as_str();
    for plural in ["replicasets", "pods", "jobs"] {
        let Some(def) = discovery::RESOURCES.iter().find(|d| d.plural == plural) else {
            continue;
        };
        for o in owned_by(store, plural, ns.unwrap_or(""), uid) {
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            let _ = store.delete(def, ns, name, false);
        }
    }
}

fn def(plural: &str) -> Option<&'static discovery::ResourceDef> {
    discovery::RESOURCES.iter().find(|d| d.plural == plural)
}

fn owned_by(store: &Store, plural: &str, ns: &str, uid: &str) -> Vec<Value> {
    let Some(d) = def(plural) else {
        return Vec::new();
    };
    store
        .list(d, Some(ns))
        .into_iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .collect()
}

fn owner_ref(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// The template's hash, as the `pod-template-hash` label: FNV-1a over its JSON, written with
/// the apiserver's "safe" alphabet (no vowels, no look-alikes).
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in serde_json::to_vec(template).unwrap_or_default() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..10 {
        out.push(char::from(SAFE[(h % SAFE.len() as u64) as usize]));
        h /= SAFE.len() as u64;
    }
    out
}

/// A template without the `pod-template-hash` label and without nulls or empty objects and
/// lists (how old ReplicaSets are compared: Go compares the typed structs, where
/// `"creationTimestamp": null` or `"resources": {}` equal their absence, and `rollout undo`
/// sends exactly such a template back).
fn bare_template(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    prune(&mut t);
    t
}

fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.values_mut().for_each(prune);
            m.retain(|_, v| !is_empty(v));
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn deployment(store: &mut Store, ns: &str, name: &str) {
    let (Some(dd), Some(rsd)) = (def("deployments"), def("replicasets")) else {
        return;
    };
    let Ok(d) = store.get(dd, Some(ns), name) else {
        return;
    };
    let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let template = bare_template(&d["spec"]["template"]);
    let want = replicas(&d);
    let owned = owned_by(store, "replicasets", ns, &uid);
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let current = owned
        .iter()
        .find(|rs| bare_template(&rs["spec"]["template"]) == template);
    let new_rs = match current {
        Some(rs) => {
            let mut rs = rs.clone();
            let rev = if revision(&rs) == max_rev {
                max_rev
            } else {
                max_rev + 1
            };
            rs["metadata"]["annotations"][REVISION] = json!(rev.to_string());
            rs["spec"]["replicas"] = json!(want);
            write(store, rsd, ns, rs)
        }
        None => {
            let rs = new_replicaset(&d, &template, max_rev + 1);
            store.create(rsd, Some(ns), rs, false).ok()
        }
    };
    let Some(new_rs) = new_rs else { return };
    let new_name = new_rs["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for rs in owned_by(store, "replicasets", ns, &uid) {
        if rs["metadata"]["name"] != new_name.as_str() && replicas(&rs) != 0 {
            let mut rs = rs;
            rs["spec"]["replicas"] = json!(0);
            write(store, rsd, ns, rs);
        }
    }
    deployment_status(store, ns, name, &new_rs);
}

fn new_replicaset(d: &Value, template: &Value, rev: i64) -> Value {
    let hash = template_hash(template);
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), json!(hash));
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"), "labels": labels,
            "annotations": {REVISION: rev.to_string(),
                "deployment.kubernetes.io/desired-replicas": replicas(d).to_string()},
            "ownerReferences": owner_ref(d),
        },
        "spec": {"replicas": replicas(d), "selector": selector, "template": template},
    })
}

/// Update `obj` unless the stored copy already equals it; the stored result either way.
fn write(
    store: &mut Store,
    d: &'static discovery::ResourceDef,
    ns: &str,
    obj: Value,
) -> Option<Value> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let stored = store.get(d, Some(ns), &name).ok()?;
    if stored == obj {
        return Some(stored);
    }
    store.update(d, Some(ns), &name, obj, false).ok()
}

fn condition(old: &Value, kind: &str, reason: &str, message: String) -> Value {
    let now = clock::now_rfc3339();
    let prev = old["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    match prev {
        Some(c) if c["reason"] == reason && c["message"] == message.as_str() => c.clone(),
        _ => json!({
            "type": kind, "status": "True", "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now,
        }),
    }
}

fn deployment_status(store: &mut Store, ns: &str, name: &str, new_rs: &Value) {
    let (Some(dd), Some(rsd)) = (def("deployments"), def("replicasets")) else {
        return;
    };
    let Ok(d) = store.get(dd, Some(ns), name) else {
        return;
    };
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let new_name = new_rs["metadata"]["name"].as_str().unwrap_or("");
    let (mut total, mut updated) = (0, 0);
    for rs in owned_by(store, "replicasets", ns, uid) {
        let n = rs["status"]["replicas"].as_i64().unwrap_or(0);
        total += n;
        if rs["metadata"]["name"] == new_name {
            updated = n;
        }
    }
    let _ = rsd;
    let rev = new_rs["metadata"]["annotations"][REVISION].clone();
    let mut next = d.clone();
    next["metadata"]["annotations"][REVISION] = rev;
    next["status"] = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total, "updatedReplicas": updated, "readyReplicas": total,
        "availableReplicas": total,
        "conditions": [
            condition(&d, "Available", "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into()),
            condition(&d, "Progressing", "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed.")),
        ],
    });
    if total == 0 {
        if let Some(m) = next["status"].as_object_mut() {
            for k in ["readyReplicas", "availableReplicas", "updatedReplicas"] {
                m.remove(k);
            }
        }
    }
    write(store, dd, ns, next);
}

fn replicaset(store: &mut Store, ns: &str, name: &str) {
    let (Some(rsd), Some(pd)) = (def("replicasets"), def("pods")) else {
        return;
    };
    let Ok(rs) = store.get(rsd, Some(ns), name) else {
        return;
    };
    let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let want = usize::try_from(replicas(&rs)).unwrap_or(0);
    let mut pods = owned_by(store, "pods", ns, &uid);
    while pods.len() > want {
        if let Some(p) = pods.pop() {
            let pname = p["metadata"]["name"].as_str().unwrap_or("");
            let _ = store.delete(pd, Some(ns), pname, false);
        }
    }
    for _ in pods.len()..want {
        let t = &rs["spec"]["template"];
        let mut meta = t["metadata"].as_object().cloned().unwrap_or_else(Map::new);
        meta.insert("generateName".into(), json!(format!("{name}-")));
        meta.insert("ownerReferences".into(), owner_ref(&rs));
        meta.remove("name");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]});
        if store.create(pd, Some(ns), pod, false).is_err() {
            break;
        }
    }
    let n = owned_by(store, "pods", ns, &uid).len();
    let mut next = rs.clone();
    next["status"] = json!({
        "replicas": n, "fullyLabeledReplicas": n, "readyReplicas": n, "availableReplicas": n,
        "observedGeneration": rs["metadata"]["generation"],
    });
    if n == 0 {
        next["status"] = json!({"replicas": 0, "observedGeneration": rs["metadata"]["generation"]});
    }
    write(store, rsd, ns, next);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::find;

    fn deploy(image: &str, n: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": n, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn count(store: &Store, plural: &str) -> usize {
        store.list(find_any(plural), Some("default")).len()
    }

    fn find_any(plural: &str) -> &'static discovery::ResourceDef {
        find("apps", "v1", plural)
            .or_else(|| find("", "v1", plural))
            .unwrap()
    }

    #[test]
    fn rollout_scale_undo_and_delete() {
        let mut s = Store::new();
        let dd = find_any("deployments");
        let d = s
            .create(dd, Some("default"), deploy("nginx:1", 2), false)
            .unwrap();
        let _ = d;
        let d = s.get(dd, Some("default"), "web").unwrap();
        assert_eq!(d["status"]["updatedReplicas"], 2);
        assert_eq!(d["status"]["observedGeneration"], 1);
        assert_eq!(
            d["status"]["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(d["metadata"]["annotations"][REVISION], "1");
        assert_eq!(count(&s, "pods"), 2);
        let rs = &s.list(find_any("replicasets"), Some("default"))[0];
        assert_eq!(
            rs["metadata"]["ownerReferences"][0]["uid"],
            d["metadata"]["uid"]
        );
        let hash = rs["metadata"]["labels"][HASH_LABEL]
            .as_str()
            .unwrap()
            .to_string();
        assert!(rs["metadata"]["name"].as_str().unwrap().ends_with(&hash));
        let pod = &s.list(find_any("pods"), Some("default"))[0];
        assert_eq!(pod["metadata"]["labels"][HASH_LABEL], hash.as_str());

        // New template: a second ReplicaSet at revision 2, the first scaled to 0.
        let mut d2 = s.get(dd, Some("default"), "web").unwrap();
        d2["spec"] = deploy("nginx:2", 3)["spec"].clone();
        s.update(dd, Some("default"), "web", d2, false).unwrap();
        let d = s.get(dd, Some("default"), "web").unwrap();
        assert_eq!(d["metadata"]["generation"], 2);
        assert_eq!(d["status"]["observedGeneration"], 2);
        assert_eq!(
            (d["status"]["replicas"].as_i64(), count(&s, "pods")),
            (Some(3), 3)
        );
        assert_eq!(d["metadata"]["annotations"][REVISION], "2");
        assert_eq!(count(&s, "replicasets"), 2);

        // Back to the first template (what `rollout undo` patches): the old RS is revision 3.
        let mut d3 = d.clone();
        d3["spec"]["template"] = deploy("nginx:1", 3)["spec"]["template"].clone();
        // As kubectl sends it back: Go's zero values written out.
        d3["spec"]["template"]["metadata"]["creationTimestamp"] = Value::Null;
        d3["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({});
        s.update(dd, Some("default"), "web", d3, false).unwrap();
        let rss = s.list(find_any("replicasets"), Some("default"));
        assert_eq!(rss.len(), 2);
        let back = rss
            .iter()
            .find(|r| r["metadata"]["name"] == rs["metadata"]["name"])
            .unwrap();
        assert_eq!(back["metadata"]["annotations"][REVISION], "3");
        assert_eq!(back["status"]["replicas"], 3);

        s.delete(dd, Some("default"), "web", false).unwrap();
        assert_eq!((count(&s, "replicasets"), count(&s, "pods")), (0, 0));
    }

    #[test]
    fn dry_run_creates_nothing() {
        let mut s = Store::new();
        let dd = find_any("deployments");
        s.create(dd, Some("default"), deploy("x", 1), true).unwrap();
        assert_eq!((count(&s, "replicasets"), count(&s, "pods")), (0, 0));
    }
}
