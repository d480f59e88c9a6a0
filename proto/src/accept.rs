//! `Accept` negotiation between JSON and Kubernetes protobuf, as kube-apiserver's
//! `negotiation.NegotiateMediaTypeOptions` does it: clauses ordered by `q` (highest first; among
//! equal `q`, `type/subtype` before `type/*` before `*/*`, else as written), `q=0` clauses
//! ignored, and the first clause the server can serve wins. `*/*`, `application/*` and
//! `application/json` mean JSON (JSON is the server's first media type); a clause with an `as=`
//! parameter (Table, PartialObjectMetadata) is a meta conversion, answered in JSON by the
//! caller, never protobuf (Table is `+protobuf=false` upstream).

/// A media type the caller can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Protobuf,
}

struct Clause<'a> {
    media: &'a str,
    q: f32,
    specificity: u8,
    convert: bool,
}

/// The media types `accept` allows, best first, without repeats. Empty when the header is
/// absent or blank (the caller answers JSON), or when no clause names JSON or protobuf.
pub fn preferences(accept: Option<&str>) -> Vec<Media> {
    let mut clauses: Vec<Clause<'_>> = accept
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| {
            let mut parts = c.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let (mut q, mut convert) = (1.0f32, false);
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "as" => convert = true,
                    _ => {}
                }
            }
            let specificity = match media {
                "*/*" => 0,
                m if m.ends_with("/*") => 1,
                _ => 2,
            };
            Some(Clause {
                media,
                q,
                specificity,
                convert,
            })
        })
        .collect();
    // Stable: equal clauses keep the client's order.
    clauses.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.specificity.cmp(&a.specificity))
    });
    let mut out = Vec::new();
    for c in clauses.iter().filter(|c| c.q > 0.0 && !c.convert) {
        let m = match c.media.to_ascii_lowercase().as_str() {
            "*/*" | "application/*" | "application/json" => Media::Json,
            crate::MEDIA_TYPE => Media::Protobuf,
            _ => continue,
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{preferences, Media::*};

    #[test]
    fn order_q_values_and_wildcards() {
        let pb = "application/vnd.kubernetes.protobuf";
        // client-go's default for built-in types (kubectl's typed clients).
        assert_eq!(
            preferences(Some(&format!("{pb}, application/json"))),
            [Protobuf, Json]
        );
        assert_eq!(
            preferences(Some(&format!("application/json, {pb}"))),
            [Json, Protobuf]
        );
        assert_eq!(
            preferences(Some(&format!("application/json;q=0.5, {pb}"))),
            [Protobuf, Json]
        );
        assert_eq!(
            preferences(Some(&format!("application/json;q=0, {pb}"))),
            [Protobuf]
        );
        assert_eq!(preferences(Some(&format!("*/*, {pb}"))), [Protobuf, Json]);
        assert_eq!(preferences(Some("*/*")), [Json]);
        assert_eq!(preferences(Some(pb)), [Protobuf]);
        assert_eq!(preferences(None), []);
        assert_eq!(preferences(Some("")), []);
        assert_eq!(preferences(Some("text/html")), []);
        // Table asks for a conversion: JSON from the caller's table path, never protobuf.
        assert_eq!(
            preferences(Some(&format!(
                "{pb};as=Table;v=v1;g=meta.k8s.io, application/json"
            ))),
            [Json]
        );
        assert_eq!(
            preferences(Some(&format!("{pb};q=abc, application/json"))),
            [Json]
        );
    }
}
