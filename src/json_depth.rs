//! How deep a JSON value nests, without recursion: for values a client shaped (a patched
//! object, an upstream's Status) that must stay within what recursive readers, writers and
//! drops can walk on a worker's stack.

use serde_json::Value;

/// Whether `v` nests deeper than `max` levels (a scalar is 0, `[]` and `{}` are 1): depth
/// first, without recursion, stopping at the first container past `max`; only containers are
/// kept on the way.
pub fn nests_deeper(v: &Value, max: usize) -> bool {
    nests_deeper_counted(v, max, &mut 0)
}

/// [`nests_deeper`], adding to `visited` how many values it looked at: the work it did, for a
/// caller that bounds the work of many such walks together.
pub fn nests_deeper_counted(v: &Value, max: usize, visited: &mut usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        let children: &mut dyn Iterator<Item = &Value> = match v {
            Value::Array(a) => {
                *visited = visited.saturating_add(a.len());
                &mut a.iter()
            }
            Value::Object(o) => {
                *visited = visited.saturating_add(o.len());
                &mut o.values()
            }
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
