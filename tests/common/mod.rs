//! Shared harness: a sandbox API server and the proxy in front of it, in-process on port 0,
//! with real TLS and generated certificates; helpers to drive them with kubectl and raw HTTP.
#![allow(dead_code)]

pub mod binary;
pub mod direct;
pub mod jwt;
pub mod redis;
pub mod session;

use std::{net::SocketAddr, path::PathBuf, process::Output, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::{
    app, config,
    server::tls,
    shutdown::{self, Trigger},
};
use portcullis_sandbox::{
    self as sandbox, demo,
    pki::{Ca, Issued},
    Running,
};
use rustls_pki_types::ServerName;
use tokio::{net::TcpListener, task::JoinHandle};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub files: demo::Files,
    pub ca: Ca,
    pub sandbox: Running,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_cert: Issued,
    trigger: Trigger,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Env {
    /// Sandbox + proxy with the demo config.
    pub async fn start() -> Env {
        Self::start_with(|_| {}).await
    }

    /// Sandbox + proxy; `edit` may rewrite the generated YAML config before it is loaded.
    pub async fn start_with(edit: impl FnOnce(&mut String)) -> Env {
        tls::install_crypto_provider();
        let ca = Ca::new("test CA").unwrap();
        let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
            .await
            .unwrap();
        Self::start_in_front_of(ca, sandbox, edit).await
    }

    /// A CA and a sandbox, for tests that put something else between them and the proxy.
    pub async fn ca_and_sandbox() -> (Ca, Running) {
        tls::install_crypto_provider();
        let ca = Ca::new("test CA").unwrap();
        let sandbox = sandbox::start("127.0.0.1:0".parse().unwrap(), &ca)
            .await
            .unwrap();
        (ca, sandbox)
    }

    /// Sandbox + proxy whose upstream URL is `addr` (a fake or a dead port).
    pub async fn start_against(
        ca: Ca,
        sandbox: Running,
        addr: SocketAddr,
        edit: impl FnOnce(&mut String),
    ) -> Env {
        Self::start_in_front_of(ca, sandbox, |c| {
            with_upstream_url(c, addr);
            edit(c)
        })
        .await
    }

    pub async fn start_in_front_of(
        ca: Ca,
        sandbox: Running,
        edit: impl FnOnce(&mut String),
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let files = demo::write(dir.path(), &ca, &sandbox.url(), proxy_addr, admin_addr).unwrap();
        let mut text = std::fs::read_to_string(&files.config).unwrap();
        // One readiness probe at start, then none during the test, so "the upstream saw
        // nothing" assertions are not disturbed by the proxy's own traffic.
        text = text.replace("upstream:\n", "upstream:\n  health_interval: 1h\n");
        edit(&mut text);
        std::fs::write(&files.config, &text).unwrap();
        let cfg = config::load(&files.config).unwrap_or_else(|p| panic!("config: {p:?}"));
        let (trigger, shutdown) = shutdown::channel();
        let task = tokio::spawn(app::run(cfg, app::Listeners { proxy, admin }, shutdown));
        let admin_cert = ca.client_cert("admin", &["demo:admins"]).unwrap();
        // Wait (bounded) for that first probe to land, then start every test from a clean record.
        clear_recorded_after_probe(&sandbox, Duration::from_secs(2)).await;
        Env {
            dir,
            files,
            ca,
            sandbox,
            proxy_addr,
            admin_addr,
            admin_cert,
            trigger,
            task,
        }
    }

    pub fn proxy_token(&self) -> String {
        std::fs::read_to_string(self.files.dir.join("proxy.token")).unwrap()
    }

    /// A fresh token of the demo tenant alice (team-a), signed with the demo issuer's key.
    pub fn alice_token(&self) -> String {
        let pem = std::fs::read_to_string(self.files.dir.join("jwt-signing.key")).unwrap();
        let now = jwt::now();
        jwt::Forge::from_pem(&pem, "demo-1").token(&serde_json::json!({
            "iss": "https://portcullis-demo.local", "aud": "portcullis", "sub": "alice",
            "groups": ["tenant:team-a"], "iat": now, "nbf": now, "exp": now + 600}))
    }

    pub async fn stop(self) {
        self.stop_keeping_files().await;
    }

    /// [`stop`](Self::stop), the proxy's files (its audit log among them) kept until the
    /// returned directory is dropped.
    pub async fn stop_keeping_files(self) -> tempfile::TempDir {
        self.trigger.fire();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.sandbox.stop().await;
        self.dir
    }

    /// One request to the proxy on a fresh connection, with the given client certificate.
    pub async fn request(
        &self,
        req: Request<Full<Bytes>>,
        cert: Option<&Issued>,
        h2: bool,
    ) -> Response<Bytes> {
        https_request(self.proxy_addr, &self.ca, req, cert, h2).await
    }

    /// A raw TLS connection to the proxy as the admin (client certificate), speaking
    /// HTTP/1.1: for requests written by hand.
    pub async fn admin_http1(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        tls_connect(
            self.proxy_addr,
            &self.ca,
            Some(&self.admin_cert),
            &[b"http/1.1"],
        )
        .await
    }

    /// Run kubectl against the proxy with the admin kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.files.admin_kubeconfig, self.dir.path(), args).await
    }
}

/// A client TLS config trusting `ca`, optionally presenting `cert`. Unlike the proxy's own
/// client configs it resumes TLS sessions, as many clients of the proxy do.
pub fn client_tls(ca: &Ca, cert: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut config = tls::client_config(
        vec![ca.cert.cert_der.clone()],
        cert.map(|c| (vec![c.cert_der.clone()], c.key())),
        alpn,
    )
    .unwrap();
    config.resumption = rustls::client::Resumption::default();
    config
}

/// Open a TLS connection to `addr` (verifying `localhost`).
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Ca,
    cert: Option<&Issued>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca, cert, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A fresh HTTP/2 connection over TLS to `addr` (presenting `cert`), its driver spawned.
pub async fn h2_sender(
    addr: SocketAddr,
    ca: &Ca,
    cert: Option<&Issued>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(tls_connect(addr, ca, cert, &[b"h2"]).await);
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request on a fresh HTTPS connection (HTTP/1.1 or h2), body collected.
pub async fn https_request(
    addr: SocketAddr,
    ca: &Ca,
    req: Request<Full<Bytes>>,
    cert: Option<&Issued>,
    h2: bool,
) -> Response<Bytes> {
    let resp = if h2 {
        h2_sender(addr, ca, cert)
            .await
            .send_request(req)
            .await
            .unwrap()
    } else {
        let io = TokioIo::new(tls_connect(addr, ca, cert, &[b"http/1.1"]).await);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, bytes)
}

/// A loopback address with a port that is free now (for the real binary's listeners, and
/// `.port()` for redis-server), to be bound by another process a moment later. The one
/// free-port helper of the tests.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by default),
/// not from port 0: a port the kernel handed out as free is just as free for the next
/// outgoing connection of a test running in parallel, which took one before the binary bound
/// it ("Address already in use" at start). Each test process walks its own sequence from a
/// start spread by its pid, so two test binaries running at once rarely meet; a port in use
/// now is skipped. Where the ephemeral range covers the whole span, port 0 as before.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (eph_low, eph_high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        if (eph_low..=eph_high).contains(&port) {
            continue;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    // The ephemeral range covers all of it (some hardened runners widen it): the kernel's
    // choice, racy as it is, rather than no port at all.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A GET request for `path` with an empty body.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A WebSocket upgrade GET of `path` as kubectl's exec sends it (`v5.channel.k8s.io`).
pub fn websocket_get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "v5.channel.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Fail the calling test unless kubectl can be run: the kubectl tests never skip (.ci/run
/// installs kubectl; elsewhere install it, e.g. `apt-get install kubectl`).
pub fn require_kubectl() {
    let found = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    match found {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "this test needs kubectl, and `kubectl version --client` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(err) => {
            panic!("this test needs kubectl, and it cannot be run ({err}): put kubectl on PATH")
        }
    }
}

/// Poll `check` every 20 ms until it gives a value, for at most `within` (None if it never did).
/// For waiting on something that appears asynchronously (a log line, a recorded request).
pub async fn poll<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (at most `within`) for the proxy's own `/readyz` probe of `sandbox` (sent once when a
/// configuration starts, from a task of its own, so it can land after the proxy reports
/// ready or reloaded), then forget every recorded request: "the upstream saw nothing" checks
/// that follow see only what the test's clients send. A probe later than `within` shows up in
/// such a check by its path.
pub async fn clear_recorded_after_probe(sandbox: &Running, within: Duration) {
    let probed = || {
        let recorded = sandbox.sandbox.recorded();
        recorded.iter().any(|r| r.path == "/readyz").then_some(())
    };
    poll(within, probed).await;
    sandbox.sandbox.clear_recorded();
}

/// Run kubectl with `kubeconfig`, a private cache dir and HOME under `home`, bounded to 60 s.
pub async fn kubectl(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> Output {
    let cache = home.join("kube-cache");
    let child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .env("HOME", home)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(60), child).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("kubectl {args:?} did not finish within 60 s"),
    }
}

/// Spawn a long-running kubectl (watch, logs -f); stdout piped.
pub fn kubectl_spawn(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> tokio::process::Child {
    kubectl_command(kubeconfig, home, args).spawn().unwrap()
}

/// `kubectl exec -i POD -- cat` (in the kubeconfig's namespace), stdin and stdout piped.
pub fn kubectl_exec_cat(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    pod: &str,
) -> tokio::process::Child {
    kubectl_command(kubeconfig, home, &["exec", "-i", pod, "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `kubectl exec -i <pod> -- cat` ([`kubectl_exec_cat`]): each line written comes back.
pub struct EchoSession {
    pub child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl EchoSession {
    pub fn start(kubeconfig: &std::path::Path, home: &std::path::Path, pod: &str) -> EchoSession {
        let mut child = kubectl_exec_cat(kubeconfig, home, pod);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        EchoSession {
            child,
            stdin,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        }
    }

    /// Write `line`; what comes back within 20 s (`None`: the session ended).
    pub async fn echo(&mut self, line: &str) -> Option<String> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the exec session did not echo within 20 s")
            .unwrap()
    }

    /// Close kubectl's stdin: the session ends.
    pub fn close(&mut self) {
        self.stdin = None;
    }
}

fn kubectl_command(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(args)
        .env("HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn path_of(p: &std::path::Path) -> PathBuf {
    p.to_path_buf()
}

/// Point the generated config's upstream at `addr` instead of the sandbox.
pub fn with_upstream_url(config: &mut String, addr: SocketAddr) {
    let section = config.find("\nupstream:\n").expect("upstream section");
    let start = section + config[section..].find("\n  url: ").expect("upstream url") + 1;
    let end = start + config[start..].find('\n').unwrap();
    config.replace_range(start..end, &format!("  url: https://{addr}"));
}

/// Replace the generated config's upstream url / ca_file / credentials block with `with`.
pub fn replace_upstream_source(config: &mut String, with: &str) {
    let section = config.find("\nupstream:\n").expect("upstream section");
    let start = section + config[section..].find("\n  url: ").expect("upstream url") + 1;
    let last = "    token_file: proxy.token\n";
    let end = start + config[start..].find(last).expect("token_file") + last.len();
    config.replace_range(start..end, with);
}

/// A TLS server on loopback (certificate for localhost from `ca`) that hands each accepted
/// connection to `on_conn`. For upstream misbehaviour the sandbox cannot produce.
pub async fn fake_upstream<F, Fut>(ca: &Ca, on_conn: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // These fakes speak HTTP/1.1 only, so they must not offer h2.
    fake_upstream_alpn(ca, &[b"http/1.1"], on_conn).await
}

/// [`fake_upstream`] offering the ALPN protocols `alpn` (e.g. `h2` for a fake that serves
/// HTTP/2).
pub async fn fake_upstream_alpn<F, Fut>(ca: &Ca, alpn: &[&[u8]], on_conn: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let server = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
    let base = tls::server_config(
        vec![server.cert_der.clone()],
        server.key(),
        tls::ClientAuth::None,
    )
    .unwrap();
    let mut cfg = (*base).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let on_conn = Arc::new(on_conn);
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let on_conn = on_conn.clone();
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(tcp).await {
                    on_conn(s).await;
                }
            });
        }
    });
    addr
}

/// Read an HTTP/1.1 request head from `s` (None if the peer closed first).
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A loopback address nobody listens on (a port that was free a moment ago).
pub fn dead_addr() -> SocketAddr {
    free_port()
}

/// GET `path` on the plain-HTTP admin listener: status and body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (http::StatusCode, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(path)
                .header("host", "admin")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HTTP/1.1 client connection (see [`connect`]).
pub type Http1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A new HTTP/1.1 connection over TLS to `addr` made with `config` (which keeps the sessions it
/// may resume), and the kind of handshake the client saw; `None` if the handshake failed.
pub async fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Option<(Option<rustls::HandshakeKind>, Http1)> {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let kind = tls.get_ref().1.handshake_kind();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some((kind, sender))
}

/// `GET /api` on `sender`'s connection: the answer's status, `None` if the connection failed.
pub async fn get_api(sender: &mut Http1) -> Option<http::StatusCode> {
    sender.ready().await.ok()?;
    let req = Request::get("https://localhost/api")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status();
    // Read the body so the connection is ready for the next request.
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// Whether a new connection to `addr` with `cert` (trusting `ca`) is served `GET /api`.
pub async fn cert_connects(addr: SocketAddr, ca: &Ca, cert: &Issued) -> bool {
    let config = Arc::new(client_tls(ca, Some(cert), &[b"http/1.1"]));
    match connect(addr, &config).await {
        Some((_, mut sender)) => get_api(&mut sender).await == Some(http::StatusCode::OK),
        None => false,
    }
}

/// Bench edit of the demo config: its `audit:` section removed (up to the next top-level key,
/// or the end).
pub fn without_audit(c: &mut String) {
    let start = c.find("\naudit:\n").unwrap() + 1;
    let body = start + "audit:\n".len();
    let end = c[body..]
        .match_indices('\n')
        .map(|(i, _)| body + i + 1)
        .find(|&i| c[i..].starts_with(|ch: char| ch.is_ascii_alphabetic()))
        .unwrap_or(c.len());
    c.replace_range(start..end, "");
    assert!(
        !c.contains("\naudit:"),
        "the demo's audit section is still there"
    );
}

/// Bench edit of the demo config: the admins' read quota far above any bench's load.
pub fn unlimited_admin_reads(c: &mut String) {
    *c = c.replace(
        "reads: {rate: 1000/s, burst: 2000}",
        "reads: {rate: 1000000/s, burst: 1000000}",
    );
}

/// The `p` quantile (0..=1, nearest rank) of `sorted` samples, for the benches.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
