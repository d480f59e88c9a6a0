//! The configuration in force: one [`Generation`] (a built runtime, its request stack and its
//! background tasks) behind an `ArcSwap`, replaced whole by a reload.
//!
//! **Which configuration a request uses**: the one current when its request head arrived. The
//! handler loads the generation once and clones its stack; the request — including a watch
//! or an exec / attach / port-forward session, for as long as it lasts — runs on that stack
//! and the objects it holds (authorizer, limiter, upstream, audit policy), even after a reload
//! swapped in a new one. The TLS config is swapped beside it: a handshake uses the one current
//! when its connection was accepted, so an open connection keeps its certificate while its
//! next requests use the new stack.
//!
//! A generation's background tasks (upstream probe, token re-read, JWT key refresh, limiter
//! eviction) stop when it is replaced or the process stops; the next generation starts its
//! own, on the objects it built or carried over.

use std::{convert::Infallible, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::Service;

use crate::{
    body::Body,
    config::{Config, UpstreamToken},
    drain::DrainOnDrop,
    service::ResponseFuture,
    shutdown::{self, Shutdown, Trigger},
    stack::{self, Runtime},
    upstream::Upstream,
};

/// The request stack of one generation, type-erased so generations can be swapped.
///
/// A request runs on a clone of the stack, because tower's `call` takes `&mut self`. The
/// clone lives only for the call: the future it returns owns what it needs. So no clone is
/// boxed, and the stack's [`ResponseFuture`] is handed on without boxing it again (tower's
/// `BoxCloneSyncService` did both on every request).
#[derive(Clone)]
pub struct Proxy(Arc<dyn Fn(Request<DrainOnDrop<Incoming>>) -> ResponseFuture + Send + Sync>);

impl Proxy {
    fn new<S>(stack: S) -> Proxy
    where
        S: Service<
                Request<DrainOnDrop<Incoming>>,
                Response = Response<Body>,
                Error = Infallible,
                Future = ResponseFuture,
            > + Clone
            + Send
            + Sync
            + 'static,
    {
        Proxy(Arc::new(move |req| stack.clone().call(req)))
    }

    /// Run `req` through the stack.
    pub fn call(&self, req: Request<DrainOnDrop<Incoming>>) -> ResponseFuture {
        (self.0)(req)
    }
}

/// One configuration, built and running.
pub struct Generation {
    pub rt: Runtime,
    proxy: Proxy,
    /// Fired when the generation is dropped (replaced, or the process stops).
    tasks: Trigger,
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.tasks.fire();
    }
}

impl Generation {
    /// Build the stack of `rt` and start its background tasks, which run until the generation
    /// is dropped or `process` fires.
    fn start(rt: Runtime, process: &Shutdown) -> Generation {
        let (tasks, stop) = shutdown::channel();
        {
            // Forward the process signal; ends with the generation.
            let mut process = process.clone();
            let mut ended = stop.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = process.wait() => tasks.fire(),
                    _ = ended.wait() => {}
                }
            });
        }
        rt.upstream.set_in_service(true);
        let config = &rt.config;
        if let UpstreamToken::File(path) = &config.upstream.token {
            rt.credentials.spawn_reloader(
                path.clone(),
                config.upstream.token_reload_interval,
                stop.clone(),
            );
        }
        if let Some(limiter) = &rt.limiter {
            limiter.spawn_maintenance(stop.clone());
        }
        spawn_probe(
            rt.upstream.clone(),
            config.upstream.health_interval,
            &stop,
            rt.selftest.clone(),
        );
        if let Some(jwt) = &rt.jwt {
            jwt.spawn_refresh(stop.clone());
        }
        Generation {
            proxy: Proxy::new(stack::build(&rt)),
            rt,
            tasks,
        }
    }
}

/// Readiness: ask the upstream whether the proxy may impersonate (the self-test), then probe
/// its /readyz on an interval (the first probe at once).
fn spawn_probe(
    upstream: Arc<Upstream>,
    interval: Duration,
    stop: &Shutdown,
    selftest: Arc<crate::upstream::selftest::SelfTest>,
) {
    let mut stop = stop.clone();
    tokio::spawn(async move {
        // Bounded: a silent upstream must not hold back the readiness probe.
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(5), selftest.run()) => {}
            _ = stop.wait() => return,
        }
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => { upstream.probe().await; }
                _ = stop.wait() => return,
            }
        }
    });
}

/// The generation in force and the listener's TLS config.
pub struct Live {
    current: ArcSwap<Generation>,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    process: Shutdown,
}

impl Live {
    /// Start the first generation.
    pub fn new(rt: Runtime, process: Shutdown) -> Live {
        let tls = Arc::new(ArcSwap::new(rt.server_tls.clone()));
        Live {
            current: ArcSwap::new(Arc::new(Generation::start(rt, &process))),
            tls,
            process,
        }
    }

    /// The generation in force now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Its configuration.
    pub fn config(&self) -> Arc<Config> {
        self.current.load().rt.config.clone()
    }

    /// Run `req` on the stack in force now, to its end.
    pub fn call(&self, req: Request<DrainOnDrop<Incoming>>) -> ResponseFuture {
        self.current.load().proxy.call(req)
    }

    /// The listener's TLS config, for `server::serve_live`.
    pub fn tls(&self) -> Arc<ArcSwap<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// Put `rt` in force: new requests and new handshakes use it from now on. The previous
    /// generation's tasks stop once the swap is done; requests holding its stack finish on it.
    pub fn swap(&self, rt: Runtime) {
        let server_tls = rt.server_tls.clone();
        let prev = self.current.load_full();
        if !Arc::ptr_eq(&prev.rt.upstream, &rt.upstream) {
            prev.rt.upstream.set_in_service(false);
            // Series of endpoints the new configuration no longer has (they share the families).
            let kept: Vec<&str> = rt
                .upstream
                .endpoints()
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            for gone in prev.rt.upstream.endpoints() {
                if !kept.contains(&gone.name.as_str()) {
                    rt.upstream.metrics.forget(&gone.name);
                }
            }
        }
        let next = Arc::new(Generation::start(rt, &self.process));
        // The stack first: a connection the new listener config accepts then never meets the
        // old stack, which would verify its chain again against the old CAs (`authn::x509`).
        self.current.store(next);
        self.tls.store(server_tls);
    }
}
