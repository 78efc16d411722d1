//! JSON objects built member by member: [`object!`].
//!
//! `serde_json::json!({"a": x, "b": y})` writes out, for every member, the code that makes
//! the key, serializes the value, checks the result and inserts it, all inline: about 120
//! bytes per member on a router, for the ~170 members of the daemon's answers. [`object!`]
//! makes the same object with one call of [`put`] per member.

use serde::Serialize;
use serde_json::{Map, Value};

/// `object!({"key": value, ...})`: the JSON object `json!` makes of the same members, in the
/// same way (each value serialized with `serde_json::to_value`, a later key replacing an
/// earlier one). Keys are string literals and values are Rust expressions: `Value::Null` for
/// `null`, and `json!` or `object!` for a nested literal.
macro_rules! object {
    ({ $($key:literal : $value:expr),* $(,)? }) => {{
        let mut members = serde_json::Map::new();
        $($crate::json::put(&mut members, $key, &$value);)*
        serde_json::Value::Object(members)
    }};
}
pub(crate) use object;

/// Adds `key: value` to `members`, `value` serialized as `json!` does it (which fails only for
/// maps whose keys are not strings: none here).
pub fn put<T: Serialize + ?Sized>(members: &mut Map<String, Value>, key: &str, value: &T) {
    members.insert(key.to_string(), serde_json::to_value(value).unwrap());
}

/// `value.to_string()`: the same compact text, made by the serializer that `serde_json::to_vec`
/// uses anyway (`Value`'s `Display` is a second copy of it).
pub fn text(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serializes")
}

/// `value[key] = json!(x)`: sets member `key` of the object `value` (a null `value` becomes an
/// object first; anything else that is not an object panics, as indexing does).
pub fn set<T: Serialize + ?Sized>(value: &mut Value, key: &str, x: &T) {
    value[key] = serde_json::to_value(x).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn makes_what_json_makes() {
        let name = String::from("gw");
        let list = vec![1, 2];
        let none: Option<u32> = None;
        let made = object!({"name": name, "list": list, "none": none, "null": Value::Null,
                            "nested": object!({"on": true}), "rtt": 1.5, "name": "again",});
        let want = json!({"name": name, "list": list, "none": none, "null": null,
                          "nested": {"on": true}, "rtt": 1.5, "name": "again"});
        assert_eq!(made, want);
        assert_eq!(made.to_string(), want.to_string());
    }

    #[test]
    fn text_is_what_display_writes() {
        let v = json!({"a": [1, "x\n\u{1}", null, 1.5], "b": {"c": true}});
        assert_eq!(text(&v), v.to_string());
    }

    #[test]
    fn sets_what_indexing_sets() {
        let mut v = Value::Null;
        set(&mut v, "a", &1);
        set(&mut v, "b", "x");
        set(&mut v, "a", &vec!["y"]);
        assert_eq!(v, json!({"a": ["y"], "b": "x"}));
    }
}
