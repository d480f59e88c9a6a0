//! The object store: every object as JSON, one global resourceVersion counter, and a bounded
//! event history feeding watches.
//!
//! Accepts: create / get / list / update / delete of any catalogue resource. Rejects with the
//! apiserver's Status: missing namespace (404), duplicate name (409 AlreadyExists), stale
//! `metadata.resourceVersion` on update (409 Conflict), unknown object (404 NotFound).
//! Deleting a namespace deletes everything in it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{clock, discovery::ResourceDef};
use portcullis::k8s::Status;

/// How many events watches can resume from.
pub const HISTORY: usize = 1000;

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub rv: u64,
    pub object: Value,
}

type Key = (&'static str, String, String);

/// The store. Lives behind a mutex in [`super::Sandbox`].
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    seq: u64,
    /// Per resource (as the apiserver's watch cache): the last events, and the
    /// resourceVersion of the newest event of that resource no longer kept.
    history: BTreeMap<&'static str, (VecDeque<Arc<Event>>, u64)>,
    history_max: usize,
    events: broadcast::Sender<Arc<Event>>,
}

/// Where a watch starts.
pub struct WatchStart {
    pub initial: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub rv: u64,
}

/// `Operation cannot be fulfilled ...` (409).
pub fn conflict(def: &ResourceDef, name: &str) -> Status {
    let mut s = Status::failure(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(def)
        ),
    );
    s.details = Some(details(def, name));
    s
}

fn qualified(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

fn details(def: &ResourceDef, name: &str) -> portcullis::k8s::status::StatusDetails {
    portcullis::k8s::status::StatusDetails {
        name: Some(name.to_string()),
        group: Some(def.group.to_string()).filter(|g| !g.is_empty()),
        kind: Some(def.plural.to_string()),
        ..Default::default()
    }
}

/// 404 for a named object.
pub fn not_found(def: &ResourceDef, name: &str) -> Status {
    Status::not_found(def.plural, def.group, name)
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store holding namespaces `default` and `kube-system`.
    pub fn new() -> Store {
        let (events, _) = broadcast::channel(4096);
        let mut s = Store {
            objects: BTreeMap::new(),
            rv: 0,
            seq: 0,
            history: BTreeMap::new(),
            history_max: HISTORY,
            events,
        };
        let ns = super::discovery::find("", "v1", "namespaces");
        for name in ["default", "kube-system", "team-a", "team-b"] {
            if let Some(def) = ns {
                let _ = s.create(def, None, json!({"metadata": {"name": name}}), false);
            }
        }
        super::rbac_seed::seed(&mut s);
        s
    }

    /// Keep at most `events` events per resource (at least 1).
    pub fn set_history_limit(&mut self, events: usize) {
        self.history_max = events.max(1);
    }

    /// The resourceVersion of the newest `resource` event no longer kept (0: none dropped).
    pub fn compacted(&self, resource: &str) -> u64 {
        self.history.get(resource).map_or(0, |h| h.1)
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh UUID-shaped identifier.
    pub fn next_uid(&mut self) -> String {
        let n = self.next_seq();
        let t = clock::now_secs() as u64;
        let h = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ t;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            h as u16 & 0xfff,
            n as u16 & 0xfff,
            h & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut h = self.next_seq().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ clock::now_secs() as u64;
        (0..5)
            .map(|_| {
                let c = ALPHA[(h % ALPHA.len() as u64) as usize] as char;
                h /= ALPHA.len() as u64;
                c
            })
            .collect()
    }

    fn emit(&mut self, kind: &'static str, def: &ResourceDef, ns: &str, object: &Value) {
        let ev = Arc::new(Event {
            kind,
            resource: def.plural,
            namespace: ns.to_string(),
            rv: self.rv,
            object: object.clone(),
        });
        let max = self.history_max;
        let (kept, compacted) = self.history.entry(def.plural).or_default();
        kept.push_back(ev.clone());
        while kept.len() > max {
            if let Some(old) = kept.pop_front() {
                *compacted = old.rv;
            }
        }
        let _ = self.events.send(ev);
    }

    /// Whether namespace `ns` exists.
    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces", String::new(), ns.to_string()))
    }

    /// Create `obj` (already carrying apiVersion/kind). `ns` is the request namespace.
    pub fn create(
        &mut self,
        def: &'static ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, Status> {
        if !obj.is_object() {
            return Err(Status::bad_request(
                "the body of the request was not an object",
            ));
        }
        let ns = ns.unwrap_or("").to_string();
        if def.namespaced && !self.namespace_exists(&ns) {
            return Err(Status::not_found("namespaces", "", &ns));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    let prefix = prefix.to_string();
                    format!("{prefix}{}", self.suffix())
                }
                None => {
                    return Err(Status::failure(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", def.kind),
                    ))
                }
            },
        };
        let key = (def.plural, ns.clone(), name.clone());
        if self.objects.contains_key(&key) {
            let mut s = Status::failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(def)),
            );
            s.details = Some(details(def, &name));
            return Err(s);
        }
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        let uid = self.next_uid();
        let now = clock::now_rfc3339();
        let rv = self.rv + 1;
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if def.namespaced {
            meta["namespace"] = json!(ns);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now);
        meta["resourceVersion"] = json!(rv.to_string());
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        super::writes::on_create(def, &mut obj, rv);
        defaults(def, &mut obj, &name, rv);
        if dry_run {
            return Ok(obj);
        }
        self.rv = rv;
        self.objects.insert(key, obj.clone());
        self.emit("ADDED", def, &ns, &obj);
        super::controller::after_write(self, def.kind, &obj);
        Ok(obj)
    }

    /// Fetch one object.
    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, Status> {
        self.objects
            .get(&(def.plural, ns.unwrap_or("").to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(def, name))
    }

    /// Every object of `def` (in `ns`, or everywhere), sorted by namespace then name.
    pub fn list(&self, def: &ResourceDef, ns: Option<&str>) -> Vec<Value> {
        // Keys sort by (resource, namespace, name): scan only this resource's (namespace's) run.
        let from = (def.plural, ns.unwrap_or("").to_string(), String::new());
        self.objects
            .range(from..)
            .take_while(|((r, n, _), _)| *r == def.plural && ns.is_none_or(|want| want == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replace an object. A non-empty `metadata.resourceVersion` must match the stored one.
    pub fn update(
        &mut self,
        def: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, Status> {
        let key = (def.plural, ns.unwrap_or("").to_string(), name.to_string());
        let Some(old) = self.objects.get(&key) else {
            return Err(not_found(def, name));
        };
        if !obj.is_object() {
            return Err(Status::bad_request(
                "the body of the request was not an object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(Status::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(uid) = obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
            if Some(uid) != old["metadata"]["uid"].as_str() {
                return Err(Status::failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("{} \"{name}\" is invalid: metadata.uid: Invalid value: \"{uid}\": field is immutable", qualified(def)),
                ));
            }
        }
        match obj["metadata"]["resourceVersion"].as_str() {
            Some(rv)
                if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() =>
            {
                return Err(conflict(def, name));
            }
            _ => {}
        }
        let rv = self.rv + 1;
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec_changed = old.get("spec") != obj.get("spec");
        for f in ["uid", "creationTimestamp", "namespace"] {
            obj["metadata"][f] = old["metadata"][f].clone();
        }
        if !def.namespaced {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(if spec_changed {
                generation + 1
            } else {
                generation
            });
        }
        if obj.get("status").is_none() {
            if let Some(st) = old.get("status") {
                obj["status"] = st.clone();
            }
        }
        super::writes::on_update(def, old, &mut obj);
        defaults(def, &mut obj, name, rv);
        if dry_run {
            return Ok(obj);
        }
        self.rv = rv;
        self.objects.insert(key.clone(), obj.clone());
        self.emit("MODIFIED", def, &key.1, &obj);
        super::controller::after_write(self, def.kind, &obj);
        Ok(obj)
    }

    /// Delete an object (and, for a namespace, everything in it). Returns the deleted object.
    pub fn delete(
        &mut self,
        def: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, Status> {
        let key = (def.plural, ns.unwrap_or("").to_string(), name.to_string());
        let Some(obj) = self.objects.get(&key).cloned() else {
            return Err(not_found(def, name));
        };
        if dry_run {
            return Ok(obj);
        }
        if def.plural == "namespaces" {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for k in inside {
                if let Some(d) = super::discovery::RESOURCES.iter().find(|d| d.plural == k.0) {
                    let _ = self.delete(d, Some(&k.1), &k.2, false);
                }
            }
        }
        self.objects.remove(&key);
        self.rv += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit("DELETED", def, &key.1, &obj);
        super::controller::after_delete(self, &obj);
        Ok(obj)
    }

    /// Subscribe for events after `from` (None: synthetic ADDED for current objects first).
    /// `Err(compacted)` when events after `from` were already dropped from history (the
    /// apiserver's `oldest - 1`).
    pub fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, u64> {
        let rx = self.events.subscribe();
        let initial = match from {
            None => self
                .list(def, ns)
                .into_iter()
                .map(|object| {
                    Arc::new(Event {
                        kind: "ADDED",
                        resource: def.plural,
                        namespace: object["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        rv: self.rv,
                        object,
                    })
                })
                .collect(),
            Some(rv) if rv < self.compacted(def.plural) => return Err(self.compacted(def.plural)),
            Some(rv) => self
                .history
                .get(def.plural)
                .map(|h| h.0.iter().filter(|e| e.rv > rv).cloned().collect())
                .unwrap_or_default(),
        };
        Ok(WatchStart {
            initial,
            rx,
            rv: self.rv,
        })
    }
}

/// Fill in what kubelets and controllers would: running pods, ready statefulsets, active
/// namespaces (Deployments and ReplicaSets: see controller.rs).
fn defaults(def: &ResourceDef, obj: &mut Value, name: &str, rv: u64) {
    match def.kind {
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            if let Some(labels) = obj["metadata"]["labels"].as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            } else {
                obj["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name});
            }
        }
        "Pod" => {
            let containers = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                        "restartCount": 0, "started": true,
                        "containerID": format!("sandbox://{name}-{}", c["name"].as_str().unwrap_or("")),
                        "state": {"running": {"startedAt": obj["metadata"]["creationTimestamp"]}},
                    })
                })
                .collect();
            if obj["spec"]["nodeName"].is_null() {
                obj["spec"]["nodeName"] = json!("sandbox-node");
            }
            let ip = format!("10.244.{}.{}", (rv / 250) % 250, rv % 250 + 2);
            obj["status"] = json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                "hostIP": "10.0.0.10", "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": obj["metadata"]["creationTimestamp"],
                "containerStatuses": statuses, "qosClass": "BestEffort",
            });
        }
        "Secret" if obj["type"].as_str().is_none_or(str::is_empty) => {
            obj["type"] = json!("Opaque");
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            let n = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            if obj["spec"]["replicas"].is_null() && obj["spec"].is_object() {
                obj["spec"]["replicas"] = json!(1);
            }
            if def.kind != "StatefulSet" {
                return; // status: the controller's (controller.rs)
            }
            obj["status"] = json!({
                "observedGeneration": obj["metadata"]["generation"], "replicas": n,
                "readyReplicas": n, "availableReplicas": n, "updatedReplicas": n,
                "currentReplicas": n,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::find;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn crud_and_conflicts() {
        let def = find("", "v1", "configmaps").unwrap();
        let mut s = Store::new();
        assert!(s.namespace_exists("default"));
        let created = s.create(def, Some("default"), cm("x"), false).unwrap();
        assert_eq!(created["metadata"]["namespace"], "default");
        let rv0 = created["metadata"]["resourceVersion"].clone();
        let dup = s.create(def, Some("default"), cm("x"), false).unwrap_err();
        assert_eq!(dup.reason, "AlreadyExists");
        let missing = s.create(def, Some("nope"), cm("x"), false).unwrap_err();
        assert_eq!(missing.code, 404);
        let mut upd = created.clone();
        upd["data"]["a"] = json!("2");
        let updated = s
            .update(def, Some("default"), "x", upd.clone(), false)
            .unwrap();
        assert_ne!(updated["metadata"]["resourceVersion"], rv0);
        let stale = s.update(def, Some("default"), "x", upd, false).unwrap_err();
        assert_eq!(stale.reason, "Conflict");
        assert!(stale
            .message
            .starts_with("Operation cannot be fulfilled on configmaps \"x\""));
        let dry = s.create(def, Some("default"), cm("y"), true).unwrap();
        assert_eq!(dry["metadata"]["name"], "y");
        assert!(s.get(def, Some("default"), "y").is_err());
        let gen = s
            .create(
                def,
                Some("default"),
                json!({"metadata": {"generateName": "g-"}}),
                false,
            )
            .unwrap();
        assert!(gen["metadata"]["name"].as_str().unwrap().starts_with("g-"));
    }

    #[test]
    fn list_scopes() {
        let ns = find("", "v1", "namespaces").unwrap();
        let def = find("", "v1", "configmaps").unwrap();
        let sec = find("", "v1", "secrets").unwrap();
        let mut s = Store::new();
        for n in ["a", "ab"] {
            s.create(ns, None, json!({"metadata": {"name": n}}), false)
                .unwrap();
            s.create(def, Some(n), cm("x"), false).unwrap();
        }
        s.create(sec, Some("a"), json!({"metadata": {"name": "s"}}), false)
            .unwrap();
        assert_eq!(s.list(def, Some("a")).len(), 1);
        assert_eq!(s.list(def, None).len(), 2);
        assert_eq!(s.list(sec, None).len(), 1);
        assert_eq!(s.list(ns, None).len(), 6, "4 built-in namespaces + a + ab");
    }

    #[test]
    fn namespace_delete_cascades_and_history() {
        let ns = find("", "v1", "namespaces").unwrap();
        let def = find("", "v1", "configmaps").unwrap();
        let mut s = Store::new();
        s.create(ns, None, json!({"metadata": {"name": "t"}}), false)
            .unwrap();
        s.create(def, Some("t"), cm("a"), false).unwrap();
        let start = s.rv();
        s.delete(ns, None, "t", false).unwrap();
        assert!(s.list(def, Some("t")).is_empty());
        let w = s.watch(def, None, Some(start)).unwrap();
        assert_eq!(w.initial.len(), 1);
        assert_eq!(w.initial[0].kind, "DELETED");
        for i in 0..HISTORY + 5 {
            s.create(def, Some("default"), cm(&format!("c{i}")), false)
                .unwrap();
        }
        assert!(s.watch(def, None, Some(start)).is_err());
    }
}
