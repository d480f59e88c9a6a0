//! The rate-limit layers of the stack (what each limit is: see the module doc of
//! `ratelimit`). Without a `rate_limits:` section each passes requests through untouched.
//!
//! | layer | refuses | with |
//! |---|---|---|
//! | [`LoadShedLayer`] | a request that is not long-running while the global in-flight cap is full; its place ([`SharedPlace`], a request extension) is held while the answer is read from the upstream — the forwarder gives it back when the upstream body ended or was dropped; the proxy's own refusal at once, its other answers with their last frame — not while a client that grants no HTTP/2 window keeps hyper waiting | 503 + `Retry-After` (`Refusal::Overloaded`) |
//! | [`SourceBlockLayer`] | any request from an address that keeps failing authentication, before any signature work; counts every 401 from below | 429 + `Retry-After` (`Refusal::SourceBlocked`) |
//! | [`RateLimitLayer`] | an identity over its read/write bucket, stream cap or `in_flight` cap (or the Redis backend down with `deny`); adds `RateLimit-Policy` / `RateLimit` headers; a stream permit rides with the response ([`HoldWhileStreaming`]), an in-flight place with the request's [`SharedPlace`] (given back as the global one is) | 429 / 503 + `Retry-After` (`Refusal::RateLimited`) |

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{inflight::SharedPlace, RateLimiter};
use crate::{
    audit::AuditRecord,
    authn::Identity,
    body::Body,
    refusal::{Refusal, Refused},
    service::{self, ResponseFuture},
    upstream::HoldWhileStreaming,
};

/// Implements `Layer` for a layer struct holding `limiter: Option<RateLimiter>`.
macro_rules! limiter_layer {
    ($layer:ident, $service:ident) => {
        #[derive(Clone)]
        pub struct $layer {
            limiter: Option<RateLimiter>,
        }

        impl $layer {
            pub fn new(limiter: Option<RateLimiter>) -> $layer {
                $layer { limiter }
            }
        }

        impl<S> Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $service {
                    inner,
                    limiter: self.limiter.clone(),
                }
            }
        }

        #[derive(Clone)]
        pub struct $service<S> {
            inner: S,
            limiter: Option<RateLimiter>,
        }
    };
}

limiter_layer!(LoadShedLayer, LoadShedService);
limiter_layer!(SourceBlockLayer, SourceBlockService);
limiter_layer!(RateLimitLayer, RateLimitService);

impl<S, B> Service<Request<B>> for LoadShedService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        // Long-running requests have stream caps instead.
        let long_running = service::info(&req).is_none_or(|i| i.long_running);
        // Without `max_in_flight` nothing is counted: a reload that adds a cap starts from
        // zero (see `carry.rs`).
        let Some(limiter) = self
            .limiter
            .as_ref()
            .filter(|l| !long_running && l.in_flight_capped())
        else {
            return service::boxed(self.inner.call(req));
        };
        let place = match limiter.try_in_flight() {
            Ok(place) => place,
            Err(rejection) => return service::ready(Refusal::Overloaded(rejection).respond()),
        };
        // The place is held while the answer is read from the upstream — not while a client
        // that grants no HTTP/2 window keeps hyper waiting with it: the forwarder gives it back
        // once the upstream body has ended or been dropped (read straight through; by a pump,
        // once what it holds of the answer is charged to the identity's budget; or reset as
        // stalled), and an answer that never reached the upstream (a refusal, a
        // self-review) gives it back here or with its last frame taken.
        let place = SharedPlace::new(place);
        req.extensions_mut().insert(place.clone());
        let inner = self.inner.call(req);
        service::boxed(async move { Ok(place.hold(inner.await?)) })
    }
}

impl<S, B> Service<Request<B>> for SourceBlockService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let (Some(limiter), Some(peer)) = (self.limiter.clone(), service::conn(&req)) else {
            return service::boxed(self.inner.call(req));
        };
        let ip = peer.peer.ip();
        let inner = self.inner.call(req);
        service::boxed(async move {
            // Checked when the request runs, not when it is handed in: hyper's HTTP/2 server
            // calls the service for every stream that arrived together before it runs any of
            // them, so a flood sent at once would all pass a check made in `call` before the
            // first failure was charged. Here each request is checked after the ones run
            // before it have been charged (authentication does its signature work without
            // yielding), so a flood costs about `burst` signature checks (one more per worker
            // thread) before the block. (`inner` has done no work yet: authentication runs
            // in its future.)
            if let Some(rejection) = limiter.source_blocked(ip) {
                drop(inner);
                return Ok(Refusal::SourceBlocked(Box::new(rejection)).respond());
            }
            let resp = inner.await?;
            if resp
                .extensions()
                .get::<Refused>()
                .is_some_and(|r| r.unauthenticated)
            {
                limiter.record_auth_failure(ip);
            }
            Ok(resp)
        })
    }
}

impl<S, B> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        let (Some(limiter), Some(info), Some(identity)) = (
            self.limiter.clone(),
            service::info(&req).cloned(),
            req.extensions().get::<Arc<Identity>>().cloned(),
        ) else {
            return service::boxed(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        service::boxed(async move {
            let rec = req.extensions().get::<AuditRecord>().cloned();
            let admission = match limiter.check_async(&identity, &info, req.uri()).await {
                Ok(admission) => admission,
                Err(rejection) => {
                    if let Some(rec) = rec {
                        rec.with(|r| {
                            r.annotate("portcullis.io/ratelimit", "rejected");
                            annotate_degraded(r, rejection.degraded);
                        });
                    }
                    return Ok(Refusal::RateLimited(rejection).respond());
                }
            };
            if let Some(rec) = rec {
                // Shadow mode: what enforcing would have done, for whoever reads the log.
                let outcome = match admission.shadow_rejection {
                    Some(_) => "shadow-rejected",
                    None => "allowed",
                };
                rec.with(|r| {
                    r.annotate("portcullis.io/ratelimit", outcome);
                    annotate_degraded(r, admission.degraded);
                });
            }
            if let Some(permit) = admission.permit {
                req.extensions_mut()
                    .insert(HoldWhileStreaming(Arc::new(permit)));
            }
            // The identity's in-flight place rides with the replica's, given back as it is
            // (see `LoadShedLayer`); without `max_in_flight` it gets a place of its own.
            let own = match (admission.place, req.extensions().get::<SharedPlace>()) {
                (Some(permit), Some(shared)) => {
                    shared.add_identity(permit);
                    None
                }
                (Some(permit), None) => {
                    let shared = SharedPlace::default();
                    shared.add_identity(permit);
                    req.extensions_mut().insert(shared.clone());
                    Some(shared)
                }
                (None, _) => None,
            };
            let mut resp = inner.call(req).await?;
            if let Some(shared) = own {
                resp = shared.hold(resp);
            }
            if let Some(state) = &admission.rate_limit {
                state.apply(resp.headers_mut());
            }
            Ok(resp)
        })
    }
}

/// Decided without the Redis backend: say which `on_backend_error` mode decided (DESIGN: a
/// degraded mode is counted and written to audit).
fn annotate_degraded(r: &mut crate::audit::record::Recorder, mode: Option<&'static str>) {
    if let Some(mode) = mode {
        r.annotate(
            "portcullis.io/ratelimit-backend",
            format!("unavailable; on_backend_error: {mode}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        authn::identity::Method as AuthMethod,
        body,
        refusal::Refusal,
        service::testing::{calls, classified, counting, request, send, text, TestBody},
    };

    fn limiter(yaml: &str) -> RateLimiter {
        let cfg = serde_saphyr::from_str(yaml).unwrap();
        let settings = super::super::config::validate(&cfg, "rate_limits").unwrap();
        RateLimiter::from_settings(settings)
    }

    fn as_alice(mut req: Request<TestBody>) -> Request<TestBody> {
        req.extensions_mut().insert(Arc::new(Identity {
            user: "alice".into(),
            uid: String::new(),
            groups: vec![],
            extra: BTreeMap::new(),
            tenant: None,
            scope: None,
            method: AuthMethod::ClientCertificate {
                fingerprint: "00".into(),
            },
        }));
        req
    }

    #[tokio::test]
    async fn load_shed_holds_a_place_until_the_body_ends_and_exempts_streams() {
        let (inner, seen) = counting::<TestBody>();
        let svc = LoadShedLayer::new(Some(limiter("max_in_flight: 1"))).layer(inner);
        let first = send(svc.clone(), classified("GET", "/api/v1/pods")).await;
        let refused = send(svc.clone(), classified("GET", "/api/v1/pods")).await;
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.extensions().get::<Refused>().unwrap().by,
            "load-shed"
        );
        assert_eq!(calls(&seen), 1, "the refused request never went further");
        let watch = send(svc.clone(), classified("GET", "/api/v1/pods?watch=1")).await;
        assert_eq!(
            watch.status(),
            200,
            "long-running requests have stream caps instead"
        );
        let _ = text(first).await;
        let again = send(svc, classified("GET", "/api/v1/pods")).await;
        assert_eq!(again.status(), 200);
    }

    /// A place is not held while a client that grants no HTTP/2 window keeps hyper waiting:
    /// the proxy's own refusal frees it at once, an answer once its last frame is taken from
    /// the upstream (not when the client has it), and a forwarded answer when the forwarder
    /// gives the place it got with the request back.
    #[tokio::test]
    async fn load_shed_places_go_with_the_upstream_work_not_the_client() {
        use http_body::Body as _;
        let one = || limiter("max_in_flight: 1");
        let admitted = |l: &RateLimiter| l.try_in_flight().is_ok();
        // A refusal from below: released before anyone reads it.
        let l = one();
        let refusing = tower::service_fn(|_req: Request<TestBody>| async {
            Ok::<_, Infallible>(crate::refusal::forbidden_for_test("no"))
        });
        let unread = send(
            LoadShedLayer::new(Some(l.clone())).layer(refusing),
            classified("GET", "/api/v1/pods"),
        )
        .await;
        assert_eq!(unread.status(), 403);
        assert!(admitted(&l), "the refusal's place was freed");
        // An answer: released once its last frame is taken.
        let l = one();
        let answering = tower::service_fn(|_req: Request<TestBody>| async {
            Ok::<_, Infallible>(Response::new(body::full(bytes::Bytes::from_static(b"ok"))))
        });
        let mut resp = send(
            LoadShedLayer::new(Some(l.clone())).layer(answering),
            classified("GET", "/api/v1/pods"),
        )
        .await;
        assert!(!admitted(&l), "held while the answer is unread");
        let frame =
            std::future::poll_fn(|cx| std::pin::Pin::new(resp.body_mut()).poll_frame(cx)).await;
        assert!(frame.is_some());
        assert!(
            admitted(&l),
            "freed with the last frame taken, before the end is polled"
        );
        // An answer from the upstream: the place rides the request to the forwarder, which
        // gives it back when the upstream body is read or dropped — here by hand, while the
        // client-facing body is never read.
        let l = one();
        let seen: Arc<std::sync::Mutex<Option<SharedPlace>>> = Arc::default();
        let grab = Arc::clone(&seen);
        let forwarding = tower::service_fn(move |req: Request<TestBody>| {
            *grab.lock().unwrap() = req.extensions().get::<SharedPlace>().cloned();
            async {
                let (_tx, body) = body::channel(1);
                Ok::<_, Infallible>(Response::new(body))
            }
        });
        let _unread = send(
            LoadShedLayer::new(Some(l.clone())).layer(forwarding),
            classified("GET", "/api/v1/pods"),
        )
        .await;
        assert!(!admitted(&l));
        let place = seen
            .lock()
            .unwrap()
            .take()
            .expect("the place reaches the forwarder");
        drop(place.on_drop());
        assert!(admitted(&l), "freed by the forwarder");
    }

    /// Authentication that refuses every request (401, no credentials), counting them in
    /// `reached`.
    fn failing_authn(
        reached: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl Service<
        Request<TestBody>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone {
        tower::service_fn(move |_req: Request<TestBody>| {
            let reached = reached.clone();
            // Counted when it runs: the layer hands every request in before running any.
            async move {
                reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Infallible>(
                    Refusal::Unauthenticated(crate::authn::request::Failure::NoCredentials)
                        .respond(),
                )
            }
        })
    }

    #[tokio::test]
    async fn an_address_that_keeps_failing_is_refused_before_authentication() {
        let svc = SourceBlockLayer::new(Some(limiter("unauthenticated: {rate: 1/m, burst: 2}")))
            .layer(failing_authn(Default::default()));
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(
                send(svc.clone(), request("GET", "/api"))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(codes, [401, 401, 429]);
        let other = send(
            svc,
            crate::service::testing::request_from("192.0.2.9:1", "GET", "/api"),
        )
        .await;
        assert_eq!(other.status(), 401, "only the failing address is blocked");
    }

    /// hyper's HTTP/2 server calls the service for every stream that arrived together, then
    /// runs them. A flood of bad credentials sent at once reaches authentication only until
    /// the burst is spent — not every stream, as when the address was only checked in
    /// `call` — while good credentials sent at once are never refused by this limit.
    #[tokio::test]
    async fn a_flood_called_at_once_reaches_authentication_only_until_the_burst_is_spent() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reached = Arc::new(AtomicUsize::new(0));
        let mut svc =
            SourceBlockLayer::new(Some(limiter("unauthenticated: {rate: 1/m, burst: 2}")))
                .layer(failing_authn(reached.clone()));
        // Every call first, then every future run: as hyper does with the streams of a read.
        let called: Vec<_> = (0..50)
            .map(|_| Service::call(&mut svc, request("GET", "/api")))
            .collect();
        assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing ran in `call`");
        let codes: Vec<u16> = futures_util::future::join_all(called)
            .await
            .iter()
            .map(|r| r.as_ref().unwrap().status().as_u16())
            .collect();
        assert_eq!(reached.load(Ordering::SeqCst), 2, "{codes:?}");
        assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 48);

        // Good credentials, called at once the same way: none refused.
        let ok = tower::service_fn(|_req: Request<TestBody>| async {
            Ok::<_, Infallible>(Response::new(body::full(bytes::Bytes::from_static(b"ok"))))
        });
        let mut svc =
            SourceBlockLayer::new(Some(limiter("unauthenticated: {rate: 1/m, burst: 2}")))
                .layer(ok);
        let called: Vec<_> = (0..50)
            .map(|_| Service::call(&mut svc, request("GET", "/api")))
            .collect();
        for resp in futures_util::future::join_all(called).await {
            assert_eq!(resp.unwrap().status(), 200);
        }
    }

    /// Shadow mode refuses nothing and counts each request a block would have refused once,
    /// also in a flood called at once.
    #[tokio::test]
    async fn shadow_mode_counts_a_blocked_address_once_per_request() {
        use super::super::metrics::{Class, Outcome};
        let l = limiter("mode: shadow\nunauthenticated: {rate: 1/m, burst: 1}");
        let svc = SourceBlockLayer::new(Some(l.clone())).layer(failing_authn(Default::default()));
        for _ in 0..3 {
            assert_eq!(
                send(svc.clone(), request("GET", "/api")).await.status(),
                401
            );
        }
        let shadowed = |l: &RateLimiter| {
            l.metrics()
                .decisions(Class::Unauthenticated, Outcome::ShadowRejected)
        };
        assert_eq!(
            shadowed(&l),
            2,
            "the two requests after the block, once each"
        );
        // A flood called at once, as hyper's HTTP/2 server does: counted as enforce mode
        // would refuse it (all but the burst), not as passing.
        let l = limiter("mode: shadow\nunauthenticated: {rate: 1/m, burst: 1}");
        let mut svc =
            SourceBlockLayer::new(Some(l.clone())).layer(failing_authn(Default::default()));
        let called: Vec<_> = (0..3)
            .map(|_| Service::call(&mut svc, request("GET", "/api")))
            .collect();
        for resp in futures_util::future::join_all(called).await {
            assert_eq!(resp.unwrap().status(), 401, "shadow mode refuses nothing");
        }
        assert_eq!(shadowed(&l), 2);
    }

    #[tokio::test]
    async fn an_identity_over_its_bucket_gets_429_and_spends_nothing_below() {
        let (inner, seen) = counting::<TestBody>();
        let svc = RateLimitLayer::new(Some(limiter("default: {reads: {rate: 1/m, burst: 1}}")))
            .layer(inner);
        let ok = send(svc.clone(), as_alice(classified("GET", "/api/v1/pods"))).await;
        assert_eq!(ok.status(), 200);
        assert!(ok.headers().contains_key("ratelimit"));
        let refused = send(svc, as_alice(classified("GET", "/api/v1/pods"))).await;
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(
            refused.extensions().get::<Refused>().unwrap().by,
            "ratelimit"
        );
        assert_eq!(calls(&seen), 1);
    }

    /// An identity's `in_flight` place rides the request to the forwarder (alone, or with the
    /// replica's `max_in_flight` place) and is given back as that one is: by the forwarder when
    /// the upstream answer has been read, at once for the proxy's own refusal. Over the cap: 429,
    /// nothing below reached.
    #[tokio::test]
    async fn an_identitys_in_flight_place_goes_with_the_upstream_work() {
        // A forwarder that keeps the places it was given and never sends a byte of body.
        type Seen = Arc<std::sync::Mutex<Vec<SharedPlace>>>;
        fn forwarding(
            seen: Seen,
        ) -> impl Service<
            Request<TestBody>,
            Response = Response<Body>,
            Error = Infallible,
            Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
        > + Clone
               + Send
               + 'static {
            tower::service_fn(move |req: Request<TestBody>| {
                if let Some(p) = req.extensions().get::<SharedPlace>() {
                    seen.lock().unwrap().push(p.clone());
                }
                async {
                    let (_tx, body) = body::channel(1);
                    Ok::<_, Infallible>(Response::new(body))
                }
            })
        }
        for max_in_flight in ["", "max_in_flight: 10\n"] {
            let l = limiter(&format!("{max_in_flight}default: {{in_flight: 1}}"));
            let seen: Seen = Arc::default();
            let svc = LoadShedLayer::new(Some(l.clone()))
                .layer(RateLimitLayer::new(Some(l.clone())).layer(forwarding(Arc::clone(&seen))));
            let _unread = send(svc.clone(), as_alice(classified("GET", "/api/v1/pods"))).await;
            let refused = send(svc.clone(), as_alice(classified("GET", "/api/v1/pods"))).await;
            assert_eq!(refused.status(), 429, "{max_in_flight}");
            assert_eq!(
                refused.extensions().get::<Refused>().unwrap().by,
                "ratelimit"
            );
            assert_eq!(
                seen.lock().unwrap().len(),
                1,
                "the refused one went no further"
            );
            assert_eq!(l.metrics().identity_in_flight(), 1);
            let global = usize::from(!max_in_flight.is_empty());
            assert_eq!(l.inner.in_flight.current(), global, "{max_in_flight}");
            // The forwarder gives the place back (the client still reads nothing).
            let place = seen
                .lock()
                .unwrap()
                .pop()
                .expect("the place reached the forwarder");
            drop(place.on_drop());
            assert_eq!(l.metrics().identity_in_flight(), 0);
            // The replica's place (when capped) went with it.
            assert_eq!(l.inner.in_flight.current(), 0, "{max_in_flight}");
            let _again = send(svc, as_alice(classified("GET", "/api/v1/pods"))).await;
            assert_eq!(seen.lock().unwrap().len(), 1, "admitted again");
        }
        // A refusal from below gives the place back before anyone reads it.
        let l = limiter("default: {in_flight: 1}");
        let refusing = tower::service_fn(|_req: Request<TestBody>| async {
            Ok::<_, Infallible>(crate::refusal::forbidden_for_test("no"))
        });
        let svc = RateLimitLayer::new(Some(l.clone())).layer(refusing);
        let unread = send(svc.clone(), as_alice(classified("GET", "/api/v1/pods"))).await;
        assert_eq!(unread.status(), 403);
        assert_eq!(l.metrics().identity_in_flight(), 0);
        assert_eq!(
            send(svc, as_alice(classified("GET", "/api/v1/pods")))
                .await
                .status(),
            403,
            "not 429: the place was free"
        );
    }
}
