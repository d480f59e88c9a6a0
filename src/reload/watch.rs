//! Noticing that the configuration changed on disk: a fingerprint of the config file and of
//! the files it names, compared every poll interval.
//!
//! **Why polling, not inotify (`notify`)**: Kubernetes mounts a ConfigMap or Secret as a
//! folder whose files are symlinks through `..data`, itself a symlink that the kubelet swaps
//! atomically to a new timestamped folder. An inotify watch on the file follows the old inode
//! and never fires; watching the folder works but needs re-resolving and event filtering,
//! and network file systems send no events at all. Reading a few small files every few
//! seconds through their path (so symlinks are resolved afresh each time) sees every kind of
//! replacement — in place, rename over, symlink swap — with no dependency and no platform
//! code, at the cost of noticing up to one interval late.
//!
//! Watched: the config file, and every file the config names under a key ending in `_file`
//! or `_files` (certificates, keys, CA bundles, CRLs, JWKS and PEM key files, the audit policy
//! and signing key), resolved from the config's folder; `upstream.kubeconfig.path`; with
//! `upstream.in_cluster`, the service account's `ca.crt`; each audit webhook sink's
//! `kubeconfig`, and the files those kubeconfigs name (`certificate-authority`,
//! `client-certificate`, `client-key`: a client certificate cert-manager rotates in place).
//! Not watched: `upstream.credentials.token_file` and a kubeconfig's `tokenFile` (re-read on
//! their own interval; a rotating projected token must not reload everything) and the audit
//! log itself (a `path:` key).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
};

/// Content hash of the watched files; equal fingerprints mean nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<u64>)>);

impl Fingerprint {
    /// Read the config file and the files it names now. An unreadable file counts as "absent"
    /// (its appearance is a change too).
    pub fn take(config: &Path) -> Fingerprint {
        let text = std::fs::read(config).ok();
        let mut files = vec![(config.to_path_buf(), text.as_deref().map(hash))];
        let base = config.parent().unwrap_or(Path::new(""));
        let Some(value) = text.as_deref().and_then(|t| {
            serde_saphyr::from_str::<serde_json::Value>(&String::from_utf8_lossy(t)).ok()
        }) else {
            return Fingerprint(files);
        };
        let kubeconfigs: Vec<PathBuf> = kubeconfigs_of(&value)
            .iter()
            .map(|p| base.join(p))
            .collect();
        // The files each kubeconfig names, as it names them now (one that does not parse
        // names none: the reload will say why). Every file is read once.
        let mut named_by_kubeconfigs = Vec::new();
        for path in files_of(&value).iter().map(|p| base.join(p)) {
            let bytes = std::fs::read(&path).ok();
            if kubeconfigs.contains(&path) {
                let parsed = bytes.as_deref().and_then(|b| {
                    crate::kubeconfig::Kubeconfig::parse(&String::from_utf8_lossy(b), &path).ok()
                });
                if let Some(kc) = parsed {
                    named_by_kubeconfigs
                        .extend(kc.named_files(path.parent().unwrap_or(Path::new(""))));
                }
            }
            files.push((path, bytes.as_deref().map(hash)));
        }
        for path in named_by_kubeconfigs {
            let h = std::fs::read(&path).ok().map(|b| hash(&b));
            files.push((path, h));
        }
        Fingerprint(files)
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The paths under `*_file` / `*_files` keys of the YAML `text` (none if it does not parse:
/// the reload will say why).
pub fn named_files(text: &str) -> Vec<String> {
    serde_saphyr::from_str::<serde_json::Value>(text)
        .map(|value| files_of(&value))
        .unwrap_or_default()
}

/// [`named_files`] of the parsed config.
fn files_of(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(value, &mut out);
    out.extend(kubeconfigs_of(value));
    in_cluster_files(value, &mut out);
    out
}

/// The kubeconfigs the parsed config names: `upstream.kubeconfig.path` (the upstream's server,
/// CA and credentials) and each audit webhook sink's `kubeconfig` (a reload re-points a sink
/// whose receiver it changed, `audit::sink::webhook::retarget`).
fn kubeconfigs_of(v: &serde_json::Value) -> Vec<String> {
    let upstream = v.pointer("/upstream/kubeconfig/path");
    let sinks = v
        .pointer("/audit/sinks")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|sink| sink.pointer("/webhook/kubeconfig"));
    upstream
        .into_iter()
        .chain(sinks)
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

/// With `upstream.in_cluster`, the service account's `ca.crt` (the cluster CA, rotated by the
/// control plane). The in-cluster token is re-read on its own interval, as `token_file`.
fn in_cluster_files(v: &serde_json::Value, out: &mut Vec<String>) {
    let Some(up) = v.get("upstream") else {
        return;
    };
    if up.get("in_cluster").and_then(serde_json::Value::as_bool) == Some(true) {
        let dir = std::env::var("PORTCULLIS_SERVICE_ACCOUNT_DIR")
            .unwrap_or_else(|_| crate::upstream::config::SERVICE_ACCOUNT_DIR.into());
        out.push(format!("{dir}/ca.crt"));
    }
}

fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k.ends_with("_file") && k != "token_file" => {
                        out.push(s.clone())
                    }
                    Value::Array(items) if k.ends_with("_files") => {
                        for item in items {
                            match item {
                                Value::String(s) => out.push(s.clone()),
                                Value::Object(o) => {
                                    if let Some(Value::String(s)) = o.get("path") {
                                        out.push(s.clone());
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => collect(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_keys_but_not_the_token_or_the_audit_log() {
        let files = named_files(
            "listen: {tls: {cert_file: a.crt, key_file: a.key}}\n\
             authentication:\n  client_certificates: {ca_files: [ca.pem], crl_files: [c.crl]}\n  \
             jwt: [{jwks_file: j.json, pem_files: [k.pem, {path: k2.pem, kid: x}]}]\n\
             upstream: {credentials: {token_file: t}}\n\
             audit: {policy_file: p.yaml, sinks: [{file: {path: /var/log/a.log}}]}\n",
        );
        let mut files = files;
        files.sort();
        assert_eq!(
            files,
            ["a.crt", "a.key", "c.crl", "ca.pem", "j.json", "k.pem", "k2.pem", "p.yaml"]
        );
        assert_eq!(
            named_files("upstream: {kubeconfig: {path: kc.yaml, context: x}}\n"),
            ["kc.yaml"]
        );
        assert_eq!(
            named_files(
                "audit: {sinks: [{file: {path: a.log}}, {webhook: {kubeconfig: siem.kubeconfig}}]}\n"
            ),
            ["siem.kubeconfig"]
        );
        let in_cluster = named_files("upstream: {in_cluster: true}\n");
        assert_eq!(in_cluster.len(), 1);
        assert!(in_cluster[0].ends_with("/ca.crt"), "{in_cluster:?}");
    }

    #[test]
    fn a_configmap_style_symlink_swap_changes_the_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("v1")).expect("v1");
        std::fs::create_dir(d.join("v2")).expect("v2");
        std::fs::write(d.join("v1/c.yaml"), "a: 1\n").expect("write");
        std::fs::write(d.join("v2/c.yaml"), "a: 2\n").expect("write");
        std::os::unix::fs::symlink("v1", d.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/c.yaml", d.join("c.yaml")).expect("symlink");
        let before = Fingerprint::take(&d.join("c.yaml"));
        assert_eq!(before, Fingerprint::take(&d.join("c.yaml")), "stable");
        // The kubelet's swap: a new symlink renamed over `..data`.
        std::os::unix::fs::symlink("v2", d.join("..data_tmp")).expect("symlink");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("rename");
        assert_ne!(before, Fingerprint::take(&d.join("c.yaml")));
    }
}
