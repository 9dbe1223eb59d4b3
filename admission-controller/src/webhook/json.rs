//! JSON helpers shared by the webhooks: semantic comparison of typed values and merging typed changes into a raw
//! object without touching what the types do not know.

use serde::Serialize;
use serde_json::{Map, Value};

/// Drops nulls, empty arrays and empty objects, recursively. Go's decoder gives absent, `null` and empty the same
/// zero value in most places, and `equality.Semantic.DeepEqual` treats nil and empty slices and maps as equal; this
/// is the closest JSON-level equivalent.
pub fn normalize(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.into_iter().map(|i| normalize(i).unwrap_or(Value::Null)).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(map) => {
            let map: Map<String, Value> = map.into_iter().filter_map(|(k, v)| normalize(v).map(|v| (k, v))).collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        other => Some(other),
    }
}

/// Whether two typed values are equal in the sense of `equality.Semantic.DeepEqual` (as far as JSON can tell).
pub fn semantic_eq<T: Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => normalize(a) == normalize(b),
        // Our own types always serialise; if one ever did not, "different" is the safe answer for immutability.
        _ => false,
    }
}

/// A key that two Kubernetes quantities share exactly when they have the same value (`resource.Quantity.Cmp`, which
/// `equality.Semantic` uses): `1.5Gi`, `1536Mi` and `1610612736` all give one key. `None` when `s` is not a
/// quantity (or has more digits than fit in 128 bits); such strings are compared as they are.
pub fn quantity_key(s: &str) -> Option<String> {
    crate::quantity::parse(s).ok().map(|q| q.canonical_key())
}

/// Writes into `raw` every change between `before` and `after` (two serialisations of the same typed object,
/// before and after a mutation), leaving everything else in `raw` — including fields the types dropped — as it was.
///
/// Only additions and replacements are carried over: defaulting never removes anything. New empty arrays and
/// nulls are not written (a typed round trip produces them for required-but-absent fields, e.g. `containers: []`,
/// and they are not defaults). Arrays are merged element by element when their lengths agree.
pub fn overlay(raw: &mut Value, before: &Value, after: &Value) {
    if before == after {
        return;
    }
    match after {
        Value::Object(after_map) => {
            if !raw.is_object() {
                *raw = Value::Object(Map::new());
            }
            let empty = Map::new();
            let before_map = before.as_object().unwrap_or(&empty);
            let Value::Object(raw_map) = raw else { return };
            for (key, after_value) in after_map {
                let before_value = before_map.get(key);
                if before_value == Some(after_value) {
                    continue;
                }
                if before_value.is_none() && is_empty_leaf(after_value) {
                    continue;
                }
                let slot = raw_map.entry(key.clone()).or_insert(Value::Null);
                overlay(slot, before_value.unwrap_or(&Value::Null), after_value);
            }
        }
        Value::Array(after_items) => match (before, &mut *raw) {
            (Value::Array(before_items), Value::Array(raw_items))
                if before_items.len() == after_items.len() && raw_items.len() == after_items.len() =>
            {
                for ((r, b), a) in raw_items.iter_mut().zip(before_items).zip(after_items) {
                    overlay(r, b, a);
                }
            }
            _ => *raw = after.clone(),
        },
        _ => *raw = after.clone(),
    }
}

fn is_empty_leaf(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Runs `f` on the object at `path` under `value`, creating objects on the way and replacing what is not one.
pub(crate) fn with_object_at(value: &mut Value, path: &[&str], f: impl FnOnce(&mut Map<String, Value>)) {
    let mut map = match std::mem::take(value) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    match path.split_first() {
        None => f(&mut map),
        Some((key, rest)) => with_object_at(map.entry(*key).or_insert(Value::Null), rest, f),
    }
    *value = Value::Object(map);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_treats_absent_null_and_empty_alike() {
        assert_eq!(normalize(json!({"a": null, "b": [], "c": {}, "d": {"e": []}})), None);
        assert_eq!(normalize(json!({"a": 0, "b": ""})), Some(json!({"a": 0, "b": ""})));
    }

    #[test]
    fn quantity_keys_compare_values() {
        let key = |s: &str| quantity_key(s).unwrap_or_else(|| panic!("{s} is a quantity"));
        for same in [["1.5Gi", "1536Mi", "1610612736"], ["1", "1000m", "0.001k"], ["1e3", "1k", "1000"]] {
            assert_eq!(key(same[0]), key(same[1]), "{same:?}");
            assert_eq!(key(same[0]), key(same[2]), "{same:?}");
        }
        assert_eq!(key("+2Gi"), key("2048Mi"));
        assert_eq!(key("0"), key("0Gi"));
        assert_eq!(key("-0.5"), key("-500m"));
        assert_ne!(key("1Gi"), key("1G"));
        assert_ne!(key("1"), key("-1"));
        assert_ne!(key("1Mi"), key("1Ki"));
        for not_a_quantity in
            ["", "Gi", "1..5", "1.2.3", "1Qi", "e3", "1e", "1e+", "abc", "１", "1e9223372036854775807"]
        {
            assert_eq!(quantity_key(not_a_quantity), None, "{not_a_quantity:?}");
        }
    }

    #[test]
    fn overlay_keeps_unknown_fields_and_adds_defaults() {
        let mut raw = json!({"spec": {"x-unknown": 1, "list": [{"keep": true, "name": "a"}]}});
        let before = json!({"spec": {"list": [{"name": "a"}]}});
        let after = json!({"spec": {"list": [{"name": "a", "mode": "Indexed", "sub": {"p": "OnFailure", "c": []}}],
            "network": {"on": true}}});
        overlay(&mut raw, &before, &after);
        assert_eq!(
            raw,
            json!({"spec": {"x-unknown": 1, "list": [{"keep": true, "name": "a", "mode": "Indexed",
                "sub": {"p": "OnFailure"}}], "network": {"on": true}}})
        );
    }

    #[test]
    fn overlay_replaces_changed_scalars_and_nulls() {
        let mut raw = json!({"a": "", "b": null, "c": 1});
        overlay(&mut raw, &json!({"a": ""}), &json!({"a": "x", "b": {"y": true}}));
        assert_eq!(raw, json!({"a": "x", "b": {"y": true}, "c": 1}));
    }
}
