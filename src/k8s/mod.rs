//! Pure Kubernetes API knowledge: no sockets, no tasks. The request model, `metav1.Status`.

pub mod headers;
pub mod request;
pub mod review_proto;
pub mod spdy_dictionary;
pub mod status;

pub use status::Status;
