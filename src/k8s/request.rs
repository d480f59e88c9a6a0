//! Kubernetes request classification (RequestInfo port). Being written.
