//! What JSON a request may hold beyond what decoding checks: protobuf's JSON
//! mapping reads `null` as "the default" for any field, but the OpenAPI
//! document allows `null` only for fields with explicit presence (proto3
//! `optional`). A `null` anywhere else breaks the contract, and is refused
//! with its place, as the field rules are.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use crate::rules::Violation;

/// Messages whose JSON form is free-form: anything may be `null` inside.
const FREE_FORM: [&str; 3] = [
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
];

/// Where `value` (the JSON of a `desc` message) holds a `null` its schema
/// does not allow, at any depth.
pub fn misplaced_nulls(desc: &MessageDescriptor, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    walk(desc, value, "", &mut out);
    out
}

fn field_of(desc: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key))
}

fn walk(desc: &MessageDescriptor, value: &Value, prefix: &str, out: &mut Vec<Violation>) {
    let Value::Object(map) = value else { return };
    for (key, item) in map {
        let Some(field) = field_of(desc, key) else { continue };
        let path = format!("{prefix}{}", field.name());
        if item.is_null() {
            if !field.containing_oneof().is_some_and(|o| o.is_synthetic()) {
                out.push(Violation::new(path, "must not be null"));
            }
            continue;
        }
        let Kind::Message(inner) = field.kind() else { continue };
        if FREE_FORM.contains(&inner.full_name()) || field.is_map() {
            continue;
        }
        match item {
            Value::Array(items) if field.is_list() => {
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        out.push(Violation::new(format!("{path}[{i}]"), "must not be null"));
                    } else {
                        walk(&inner, item, &format!("{path}[{i}]."), out);
                    }
                }
            }
            _ => walk(&inner, item, &format!("{path}."), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(name: &str) -> MessageDescriptor {
        crate::rules::pool().get_message_by_name(name).unwrap()
    }

    #[test]
    fn null_is_refused_where_a_field_has_no_presence_at_any_depth() {
        let update = message("fleet.users.v1.UpdateMeRequest");
        assert!(misplaced_nulls(&update, &json!({"display_name": null, "version": null})).is_empty());
        let document = message("fleet.transfer.v1.ExportDocument");
        let value = json!({
            "user_id": null,
            "data": {
                "profile": {"email": null, "id": null},
                "mfa": null,
                "activity_log": [{"id": "x", "details": {"a": null}}, null],
            },
        });
        let places: Vec<String> = misplaced_nulls(&document, &value)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            places,
            ["data.activity_log[1]", "data.mfa", "data.profile.id", "user_id"],
            "free-form details may hold null; keys are read in order"
        );
    }
}
