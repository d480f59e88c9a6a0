//! In-memory Kubernetes API server for demo, tests and benches. Being written.
