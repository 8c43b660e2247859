//! `google.protobuf.Struct` and JSON objects, both ways: the free-form
//! `details` of activity entries travel as one and are stored and printed
//! as the other.

use prost_types::{ListValue, Struct, value::Kind};
use serde_json::{Map, Number, Value};

/// A JSON object as a `Struct`.
pub fn to_struct(map: Map<String, Value>) -> Struct {
    Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `Struct` as a JSON object; whole numbers are integers again, as the
/// REST API prints them.
pub fn from_struct(s: Struct) -> Map<String, Value> {
    s.fields.into_iter().map(|(k, v)| (k, from_value(v))).collect()
}

fn from_value(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => whole(n)
            .map(Value::from)
            .or_else(|| Number::from_f64(n).map(Value::Number))
            .unwrap_or(Value::Null),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(from_struct(s)),
    }
}

/// `n` as an integer when it is one that a double holds exactly.
fn whole(n: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    #[allow(clippy::cast_possible_truncation)]
    (n.fract() == 0.0 && n.abs() <= EXACT).then_some(n as i64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_round_trip_and_whole_numbers_stay_integers() {
        let Value::Object(map) = json!({"amr": ["pwd"], "n": 2, "f": 0.5, "ok": true, "none": null, "in": {"a": [1]}})
        else {
            unreachable!()
        };
        let s = to_struct(map.clone());
        assert_eq!(s.fields.len(), 6);
        assert!(matches!(s.fields["amr"].kind, Some(Kind::ListValue(_))));
        let back = from_struct(s);
        assert_eq!(back, map);
        assert_eq!(
            Value::Object(back).to_string(),
            r#"{"amr":["pwd"],"f":0.5,"in":{"a":[1]},"n":2,"none":null,"ok":true}"#
        );
    }
}
