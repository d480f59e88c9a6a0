//! `pods/log`: a few fixed lines of `text/plain`; with `follow=true` a new line every ~500 ms
//! until the client disconnects (after, when the test asked for it, many tiny chunks:
//! `Sandbox::set_chatty_logs`).
//!
//! Accepts `container` (must name a container of the pod), `follow`, `tailLines`,
//! `timestamps`. Rejects: unknown pod (404), unknown container (400).

use super::IntoResponse as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};

use super::{clock, discovery, rest::Query, Sandbox};
use portcullis::{body::Body, k8s::Status};

/// Lines every pod has logged "so far".
const FIXED_LINES: usize = 3;

/// Serve the log of `ns/pod`.
pub fn serve(sb: &Sandbox, ns: &str, pod: &str, q: &Query) -> Response<Body> {
    let Some(def) = discovery::find("", "v1", "pods") else {
        return Status::internal("pods not in catalogue").into_response();
    };
    let obj = match sb.store().get(def, Some(ns), pod) {
        Ok(o) => o,
        Err(s) => return s.into_response(),
    };
    let containers: Vec<String> = obj["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container") {
        Some(c) if !containers.iter().any(|n| n == c) => {
            return Status::bad_request(format!("container {c} is not valid for pod {pod}"))
                .into_response()
        }
        Some(c) => c.to_string(),
        None if containers.len() > 1 => {
            return Status::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                containers.join(" ")
            ))
            .into_response()
        }
        None => containers.first().cloned().unwrap_or_default(),
    };
    let timestamps = q.flag("timestamps");
    let prefix = format!("{ns}/{pod}/{container}");
    let render = move |i: usize| {
        let ts = if timestamps {
            format!("{} ", clock::now_rfc3339())
        } else {
            String::new()
        };
        Bytes::from(format!("{ts}line {i} from {prefix}\n"))
    };
    let tail = q
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(FIXED_LINES);
    let first: Vec<Bytes> = (FIXED_LINES.saturating_sub(tail)..FIXED_LINES)
        .map(|i| render(i + 1))
        .collect();
    let body = if q.flag("follow") {
        let (tx, body) = portcullis::body::channel(4);
        let chatty = sb.chatty_logs();
        let sb = sb.clone();
        tokio::spawn(async move {
            for b in first {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            if let Some((chunks, len)) = chatty {
                for i in 0..chunks {
                    let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; len]);
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                    sb.count_chatty_bytes(len);
                    if i % 128 == 127 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            let mut i = FIXED_LINES;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                i += 1;
                if tx.send(render(i)).await.is_err() {
                    return;
                }
            }
        });
        body
    } else {
        portcullis::body::full(first.concat())
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
