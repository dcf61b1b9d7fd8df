//! Arbitrary bytes through the strict request-body parser (`json::parse_strict_object`).
//!
//! Properties: nothing panics; an accepted body is also accepted by plain serde_json
//! with the same value (strict never accepts what serde_json rejects); it is an object
//! nested at most `MAX_DEPTH` deep in which no two keys of any object are equal under
//! Go's key folding; re-serialised (as the host forwards it) and re-parsed it is
//! accepted and equal; `get_folded` finds every key as itself, and `canonicalise_key`
//! keeps the value Go would read. The strict scanner (`scan::check`) and the checked
//! body (`body::CheckedBody`, which keeps bulky fields as written) accept exactly what
//! the tree parser accepts, and forward the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::json::{canonicalise_key, get_folded, go_fold, parse_strict_object, MAX_DEPTH};
use serde_json::{Map, Value};

/// Depth of nesting as the parser counts it (the top-level object is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// No two keys of any object fold to the same Go key.
fn check_folds(v: &Value) {
    match v {
        Value::Array(a) => a.iter().for_each(check_folds),
        Value::Object(o) => {
            let mut seen: Vec<String> = o.keys().map(|k| go_fold(k)).collect();
            seen.sort();
            let n = seen.len();
            seen.dedup();
            assert_eq!(seen.len(), n, "keys equal under Go folding: {:?}", o.keys());
            o.values().for_each(check_folds);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let tree = parse_strict_object(data);
    let checked = protocol::body::CheckedBody::parse_native(bytes::Bytes::copy_from_slice(data));
    assert_eq!(
        tree.is_ok(),
        checked.is_ok(),
        "tree parser and checked body disagree: {:?} vs {:?}",
        tree.as_ref().err(),
        checked.as_ref().err()
    );
    let obj = match tree {
        Ok(o) => o,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let checked = checked.expect("agreed above");
    assert_eq!(
        checked.to_value(),
        Value::Object(obj.clone()),
        "checked body forwards another value"
    );
    let value = Value::Object(obj.clone());

    let plain: Value =
        serde_json::from_slice(data).expect("strict accepted what serde_json rejects");
    assert_eq!(plain, value, "strict and serde_json read different values");
    assert!(depth(&value) <= MAX_DEPTH, "nesting {}", depth(&value));
    check_folds(&value);

    let bytes = serde_json::to_vec(&value).expect("serialise");
    let again = parse_strict_object(&bytes).expect("re-serialised body is refused");
    assert_eq!(again, obj, "round trip changed the body");

    for (k, v) in &obj {
        let (found, fv) = get_folded(&obj, k).expect("key found");
        assert_eq!((found, fv), (k.as_str(), v));
    }
    for field in ["model", "name", "options", "stream", "messages"] {
        let before = get_folded(&obj, field).map(|(_, v)| v.clone());
        let mut m: Map<String, Value> = obj.clone();
        canonicalise_key(&mut m, field);
        assert_eq!(m.get(field).cloned(), before, "canonicalise_key({field})");
        assert_eq!(m.len(), obj.len());
    }
});
