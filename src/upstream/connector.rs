//! The pooled client's connector: TCP within `upstream.connect_timeout`, then TLS (ALPN h2,
//! http/1.1) within `upstream.tls_handshake_timeout`, each bounded on its own, so an API server
//! that accepts connections but never finishes a handshake is a connect error (a breaker
//! failure, and a fail-over for a safe request) rather than a request that hangs.
//!
//! hyper-rustls' own connector has no handshake timeout; its stream type is reused so the pool
//! still learns from ALPN whether to speak h2.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tower::Service;

use crate::body::BoxError;

/// TCP + TLS toward one endpoint, each step with its own timeout.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    handshake_timeout: Duration,
}

impl Connector {
    /// `tls` must offer ALPN `h2` and `http/1.1`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // As `serve::keep_alive`: an HTTP/1.1 stream (a watch) of an API server that vanished
        // silently must end.
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(4));
        Connector {
            http,
            tls: TlsConnector::from(tls),
            server_name,
            handshake_timeout,
        }
    }
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        let limit = self.handshake_timeout;
        Box::pin(async move {
            let tcp = tcp.await?;
            match tokio::time::timeout(limit, tls.connect(name, TokioIo::new(tcp))).await {
                Ok(Ok(stream)) => Ok(MaybeHttpsStream::Https(TokioIo::new(stream))),
                Ok(Err(err)) => Err(err.into()),
                Err(_) => Err(format!("TLS handshake took longer than {limit:?}").into()),
            }
        })
    }
}
