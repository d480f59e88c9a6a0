//! kubectl straight against the sandbox (no proxy) with a chosen bearer token, and kubectl
//! with stdin: for the tests of the sandbox's own semantics.

use std::path::{Path, PathBuf};

use portcullis_sandbox as sandbox;

use super::{stderr, stdout, Env};

/// A kubeconfig straight to the sandbox with a bearer `token`.
pub fn direct_kubeconfig(env: &Env, name: &str, token: &str) -> PathBuf {
    let path = env.dir.path().join(format!("{name}.direct.kubeconfig"));
    sandbox::write_direct_kubeconfig(&path, &env.sandbox.url(), &env.ca.cert.cert_pem).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("token: sandbox", &format!("token: {token}")),
    )
    .unwrap();
    path
}

/// kubectl with `kubeconfig`.
pub async fn k(kubeconfig: &Path, env: &Env, args: &[&str]) -> std::process::Output {
    super::kubectl(kubeconfig, env.dir.path(), args).await
}

/// kubectl with stdin.
pub async fn k_in(
    kubeconfig: &Path,
    env: &Env,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.path().join("kube-cache"))
        .args(args)
        .env("HOME", env.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// stdout of a kubectl that must have succeeded.
pub fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "kubectl failed: {}", stderr(o));
    stdout(o)
}

/// The sandbox admin (`system:masters`) straight to the sandbox.
pub fn admin(env: &Env) -> PathBuf {
    direct_kubeconfig(env, "admin", "sandbox")
}
