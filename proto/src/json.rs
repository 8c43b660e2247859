//! What JSON a request may hold beyond what decoding checks: protobuf's JSON
//! mapping reads `null` as "the default" for any field, but the OpenAPI
//! document allows `null` only for fields with explicit presence (proto3
//! `optional`). A `null` anywhere else breaks the contract, and is refused
//! with its place, as the field rules are. The text is read in one pass,
//! without building the document.

use std::{borrow::Cow, fmt};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::rules::Violation;

/// Messages whose JSON form is free-form: anything may be `null` inside.
const FREE_FORM: [&str; 3] = [
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
];

/// Where the JSON text `bytes` of a `desc` message holds a `null` its
/// schema does not allow, at any depth; a syntax error is the parser's.
pub fn misplaced_nulls(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<Violation>, serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let top = Place {
        message: Some(desc.clone()),
        nullable: false,
        list: false,
        path: String::new(),
        out: &mut out,
    };
    top.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

fn field_of(desc: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(key).or_else(|| desc.get_field_by_json_name(key))
}

/// One JSON value and what the contract says of its place: the message it
/// is (none: free-form or a scalar), whether it may be null, whether it is
/// a repeated field's list.
struct Place<'a> {
    message: Option<MessageDescriptor>,
    nullable: bool,
    list: bool,
    path: String,
    out: &'a mut Vec<Violation>,
}

impl<'de> DeserializeSeed<'de> for Place<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Place<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        if !self.nullable {
            self.out.push(Violation::new(self.path, "must not be null"));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.list {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let mut i = 0;
        loop {
            let item = Place {
                message: self.message.clone(),
                nullable: false,
                list: false,
                path: format!("{}[{i}]", self.path),
                out: &mut *self.out,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(message) = self.message else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(field) = field_of(&message, &key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let inner = match field.kind() {
                Kind::Message(m) if !field.is_map() && !FREE_FORM.contains(&m.full_name()) => Some(m),
                _ => None,
            };
            let dot = if self.path.is_empty() { "" } else { "." };
            map.next_value_seed(Place {
                message: inner,
                nullable: field.containing_oneof().is_some_and(|o| o.is_synthetic()),
                list: field.is_list(),
                path: format!("{}{dot}{}", self.path, field.name()),
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str) -> MessageDescriptor {
        crate::rules::pool().get_message_by_name(name).unwrap()
    }

    fn places(name: &str, text: &str) -> Vec<String> {
        misplaced_nulls(&message(name), text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn null_is_refused_where_a_field_has_no_presence_at_any_depth() {
        let update = "fleet.users.v1.UpdateMeRequest";
        assert!(places(update, r#"{"display_name": null, "version": null}"#).is_empty());
        let document = r#"{
            "user_id": null,
            "data": {
                "profile": {"email": null, "id": null},
                "mfa": null,
                "activity_log": [{"id": "x", "details": {"a": null, "b": [null]}}, null]
            }
        }"#;
        assert_eq!(
            places("fleet.transfer.v1.ExportDocument", document),
            ["user_id", "data.profile.id", "data.mfa", "data.activity_log[1]"],
            "free-form details may hold null"
        );
        assert!(misplaced_nulls(&message(update), b"{\"display_name\": ").is_err());
    }
}
