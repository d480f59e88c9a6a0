//! TEMPORARY stub with the agreed API; replaced by the full RequestInfo port (branch reqinfo).
use http::{HeaderMap, Method, Uri};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub parts: Vec<String>,
    pub field_selector: Option<String>,
    pub label_selector: Option<String>,
    pub upgrade: Option<Upgrade>,
    pub long_running: bool,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket,
    Spdy,
    Other,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Bad,
}
impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad path")
    }
}
pub fn classify(
    method: &Method,
    uri: &Uri,
    _headers: &HeaderMap,
) -> Result<RequestInfo, PathError> {
    let q = uri.query().unwrap_or("");
    let long_running = q.contains("watch=true")
        || q.contains("watch=1")
        || uri.path().ends_with("/log")
        || uri.path().ends_with("/exec");
    Ok(RequestInfo {
        is_resource_request: false,
        path: uri.path().into(),
        verb: method.as_str().to_lowercase(),
        api_prefix: String::new(),
        api_group: String::new(),
        api_version: String::new(),
        namespace: String::new(),
        resource: String::new(),
        subresource: String::new(),
        name: String::new(),
        parts: vec![],
        field_selector: None,
        label_selector: None,
        upgrade: None,
        long_running,
    })
}
impl RequestInfo {
    pub fn verb_class(&self) -> &'static str {
        if self.long_running {
            "stream"
        } else {
            "read"
        }
    }
}
