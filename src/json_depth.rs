//! How deep a JSON value nests, without recursion: for values a client shaped (a patched
//! object, an upstream's Status) that must stay within what recursive readers, writers and
//! drops can walk on a worker's stack.

use serde_json::Value;

/// Whether `v` nests deeper than `max` levels (a scalar is 0, `[]` and `{}` are 1): depth
/// first, without recursion, stopping at the first container past `max`; only containers are
/// kept on the way.
pub fn nests_deeper(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        let children: &mut dyn Iterator<Item = &Value> = match v {
            Value::Array(a) => &mut a.iter(),
            Value::Object(o) => &mut o.values(),
            _ => continue,
        };
        if d > max {
            return true;
        }
        stack.extend(
            children
                .filter(|c| c.is_array() || c.is_object())
                .map(|c| (c, d + 1)),
        );
    }
    false
}
