//! Field rules (`fleet.api.v1.rules`): the constraints of request fields,
//! written once in the contracts. The services check them when they decode a
//! request ([`crate::codec`]) and the gateway publishes them in the OpenAPI
//! document, so the two cannot disagree.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, RwLock},
};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};
use regex::Regex;

pub use crate::api::v1::FieldRules;

/// Every Fleet contract, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
        #[allow(clippy::expect_used)] // built by this crate's build script
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("the compiled descriptor set decodes")
    });
    &POOL
}

/// The rules of `field`, if it has any.
pub fn of(field: &FieldDescriptor) -> Option<FieldRules> {
    let ext = field.parent_pool().get_extension_by_name("fleet.api.v1.rules")?;
    let options = field.options();
    if !options.has_extension(&ext) {
        return None;
    }
    match &*options.get_extension(&ext) {
        Value::Message(rules) => FieldRules::decode(rules.encode_to_vec().as_slice()).ok(),
        _ => None,
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, snake_case (`user.email` for a nested one).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every broken rule of `message` and of the messages set inside it.
pub fn check(message: &DynamicMessage) -> Vec<Violation> {
    let mut out = Vec::new();
    check_into(message, "", &mut out);
    out
}

/// What the rules of the string field `field` (`package.Message.field`)
/// say of `text`: `None` when it passes. For tests that hold a domain type to
/// its contract.
pub fn check_text(field: &str, text: &str) -> Option<String> {
    let (message, name) = field.rsplit_once('.')?;
    let field = pool().get_message_by_name(message)?.get_field_by_name(name)?;
    let rules = of(&field)?;
    // An empty string is "unset" for a field without presence.
    if text.is_empty() && !field.supports_presence() {
        return rules.required.then(|| "is required".to_string());
    }
    broken_string(&field, &rules, text)
}

/// Whether a message of this type, or one inside it, has rules to check.
pub fn has_rules(desc: &MessageDescriptor) -> bool {
    static CACHE: LazyLock<RwLock<HashMap<String, bool>>> = LazyLock::new(Default::default);
    let name = desc.full_name();
    if let Some(known) = CACHE.read().ok().and_then(|c| c.get(name).copied()) {
        return known;
    }
    let found = has_rules_below(desc, &mut Vec::new());
    if let Ok(mut cache) = CACHE.write() {
        cache.insert(name.to_string(), found);
    }
    found
}

/// The fields of `desc` of which exactly one must hold a value
/// (`fleet.api.v1.exactly_one_of`); empty when it has no such rule.
pub fn exactly_one_of(desc: &MessageDescriptor) -> Vec<String> {
    let Some(ext) = desc.parent_pool().get_extension_by_name("fleet.api.v1.exactly_one_of") else {
        return Vec::new();
    };
    let options = desc.options();
    if !options.has_extension(&ext) {
        return Vec::new();
    }
    let value = options.get_extension(&ext);
    value
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn has_rules_below(desc: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|s| s == desc.full_name()) {
        return false;
    }
    seen.push(desc.full_name().to_string());
    let table = message_rules(desc);
    !table.group.is_empty()
        || table.fields.iter().any(|(f, rules)| {
            rules.is_some()
                || match f.kind() {
                    Kind::Message(inner) => has_rules_below(&inner, seen),
                    _ => false,
                }
        })
}

/// A message type's rules, read from its options once.
struct MessageRules {
    /// `exactly_one_of`, if any.
    group: Vec<String>,
    /// Each field with rules, or of a message type (whose own rules apply).
    fields: Vec<(FieldDescriptor, Option<FieldRules>)>,
}

fn message_rules(desc: &MessageDescriptor) -> Arc<MessageRules> {
    static CACHE: LazyLock<RwLock<HashMap<String, Arc<MessageRules>>>> = LazyLock::new(Default::default);
    if let Some(known) = CACHE.read().ok().and_then(|c| c.get(desc.full_name()).cloned()) {
        return known;
    }
    let rules = Arc::new(MessageRules {
        group: exactly_one_of(desc),
        fields: desc
            .fields()
            .filter_map(|f| {
                let rules = of(&f);
                (rules.is_some() || matches!(f.kind(), Kind::Message(_))).then_some((f, rules))
            })
            .collect(),
    });
    if let Ok(mut cache) = CACHE.write() {
        cache.insert(desc.full_name().to_string(), rules.clone());
    }
    rules
}

fn check_into(message: &DynamicMessage, prefix: &str, out: &mut Vec<Violation>) {
    let table = message_rules(&message.descriptor());
    if let Some(first) = table.group.first() {
        let given = table
            .group
            .iter()
            .filter(|name| message.has_field_by_name(name))
            .count();
        if given != 1 {
            out.push(Violation {
                field: format!("{prefix}{first}"),
                message: format!("give exactly one of {}", table.group.join(", ")),
            });
        }
    }
    for (field, rules) in &table.fields {
        let set = message.has_field(field);
        let path = || format!("{prefix}{}", field.name());
        if let Some(rules) = rules {
            if !set {
                if rules.required {
                    out.push(Violation::new(path(), "is required"));
                }
            } else if let Some(message) = broken(field, rules, &message.get_field(field)) {
                out.push(Violation::new(path(), message));
            }
        }
        if set {
            match &*message.get_field(field) {
                Value::Message(inner) => check_into(inner, &format!("{}.", path()), out),
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Message(inner) = item {
                            check_into(inner, &format!("{}[{i}].", path()), out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// What is wrong with a set value, or `None`.
fn broken(field: &FieldDescriptor, rules: &FieldRules, value: &Value) -> Option<String> {
    if let Some(text) = value.as_str() {
        return broken_string(field, rules, text);
    }
    let number: i128 = match value {
        Value::U32(n) => (*n).into(),
        Value::U64(n) => (*n).into(),
        Value::I32(n) => (*n).into(),
        Value::I64(n) => (*n).into(),
        _ => return None,
    };
    let (min, max) = (rules.minimum.map(i128::from), rules.maximum.map(i128::from));
    match (min, max) {
        (Some(min), Some(max)) if number < min || number > max => Some(format!("must be between {min} and {max}")),
        (Some(min), None) if number < min => Some(format!("must be at least {min}")),
        (None, Some(max)) if number > max => Some(format!("must be at most {max}")),
        _ => None,
    }
}

fn broken_string(field: &FieldDescriptor, rules: &FieldRules, text: &str) -> Option<String> {
    let chars = text.chars().count();
    if let Some(min) = rules.min_len
        && chars < min as usize
    {
        return Some(format!("must be at least {min} {}", plural(min, "character")));
    }
    if let Some(max) = rules.max_len
        && chars > max as usize
    {
        return Some(format!("must be at most {max} {}", plural(max, "character")));
    }
    match rules.format.as_str() {
        "email" if !is_email(text) => return Some("is not a valid email address".to_string()),
        "uuid" if !is_uuid(text) => return Some("must be a UUID".to_string()),
        "date-time" if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
            return Some("must be an RFC 3339 date-time, such as 2026-01-31T12:00:00Z".to_string());
        }
        _ => {}
    }
    if !rules.pattern.is_empty() && !pattern(field, &rules.pattern).is_some_and(|re| re.is_match(text)) {
        let message = if rules.pattern_message.is_empty() {
            format!("must match {}", rules.pattern)
        } else {
            rules.pattern_message.clone()
        };
        return Some(message);
    }
    if !rules.one_of.is_empty() && !rules.one_of.iter().any(|v| v == text) {
        return Some(format!("must be one of: {}", rules.one_of.join(", ")));
    }
    None
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

/// The compiled pattern of `field`, compiled once per field.
fn pattern(field: &FieldDescriptor, source: &str) -> Option<Regex> {
    static CACHE: LazyLock<RwLock<HashMap<String, Option<Regex>>>> = LazyLock::new(Default::default);
    let name = field.full_name();
    if let Some(known) = CACHE.read().ok().and_then(|c| c.get(name).cloned()) {
        return known;
    }
    let compiled = Regex::new(source).ok();
    if let Ok(mut cache) = CACHE.write() {
        cache.insert(name.to_string(), compiled.clone());
    }
    compiled
}

const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";

/// An address of the form local@domain as RFC 5321 mailboxes are commonly
/// accepted: a dot-atom local part of at most 64 characters and a domain of
/// two or more letter-digit-hyphen labels; at most 254 characters in all.
pub fn is_email(text: &str) -> bool {
    if text.len() > 254 {
        return false;
    }
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// A UUID in its hyphenated form (8-4-4-4-12 hex digits), the only form the
/// API takes.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, json: serde_json::Value) -> DynamicMessage {
        let desc = pool().get_message_by_name(name).unwrap();
        DynamicMessage::deserialize(desc, json).unwrap()
    }

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn every_broken_field_is_reported_at_once() {
        let bad = message(
            "fleet.auth.v1.RegisterRequest",
            serde_json::json!({"email": "not-an-email", "password": "short", "display_name": " \t"}),
        );
        let found = check(&bad);
        assert_eq!(fields(&found), ["email", "password", "display_name"], "{found:?}");
        assert_eq!(found[1].message, "must be at least 12 characters");
        let missing = message("fleet.auth.v1.RegisterRequest", serde_json::json!({}));
        assert!(check(&missing).iter().all(|v| v.message == "is required"));
        assert_eq!(check(&missing).len(), 3);
        let good = message(
            "fleet.auth.v1.RegisterRequest",
            serde_json::json!({"email": "Ada@Example.com", "password": "correct horse", "display_name": "Ada"}),
        );
        assert_eq!(check(&good), []);
    }

    #[test]
    fn optional_fields_are_checked_only_when_set_and_bounds_hold() {
        let list = |json| check(&message("fleet.users.v1.ListUsersRequest", json));
        assert_eq!(list(serde_json::json!({})), []);
        assert_eq!(fields(&list(serde_json::json!({"limit": 0}))), ["limit"]);
        assert_eq!(fields(&list(serde_json::json!({"limit": 101}))), ["limit"]);
        assert_eq!(
            list(serde_json::json!({"limit": 100, "cursor": "AAAAAAAAAAAAAAAAAAAAAQ"})),
            []
        );
        assert_eq!(fields(&list(serde_json::json!({"cursor": "nope"}))), ["cursor"]);
        let update = |json| check(&message("fleet.users.v1.UpdateUserRequest", json));
        let found = update(serde_json::json!({"id": "1", "role": "root", "status": "gone", "version": 0}));
        assert_eq!(fields(&found), ["id", "role", "status", "version"], "{found:?}");
        assert_eq!(found[1].message, "must be one of: user, admin");
    }

    #[test]
    fn exactly_one_of_a_group_must_be_given() {
        let mfa = |json| check(&message("fleet.auth.v1.LoginMfaRequest", json));
        assert_eq!(mfa(serde_json::json!({"mfa_token": "t", "code": "123456"})), []);
        assert_eq!(mfa(serde_json::json!({"mfa_token": "t", "backup_code": "abcd"})), []);
        for json in [
            serde_json::json!({"mfa_token": "t"}),
            serde_json::json!({"mfa_token": "t", "code": "", "backup_code": ""}),
            serde_json::json!({"mfa_token": "t", "code": "1", "backup_code": "2"}),
        ] {
            let found = mfa(json);
            assert_eq!(fields(&found), ["code"]);
            assert_eq!(found[0].message, "give exactly one of code, backup_code");
        }
    }

    #[test]
    fn formats_are_strict() {
        assert!(is_uuid("0191c5e2-7a3b-7c4d-8e5f-a1b2c3d4e5f6"));
        for bad in [
            "0191c5e27a3b7c4d8e5fa1b2c3d4e5f6",
            "{0191c5e2-7a3b-7c4d-8e5f-a1b2c3d4e5f6}",
            "urn:uuid:0191c5e2-7a3b-7c4d-8e5f-a1b2c3d4e5f6",
            "0191c5e2-7a3b-7c4d-8e5f-a1b2c3d4e5fg",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
        assert!(is_email("Ada.L+x@mail.example.com"));
        for bad in [
            "ada",
            "ada@",
            "@x.com",
            "a..b@x.com",
            "ada@x",
            " ada@x.com",
            "ada@-x.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn every_pattern_in_the_contracts_compiles() {
        for message in pool().all_messages() {
            for field in message.fields() {
                if let Some(rules) = of(&field)
                    && !rules.pattern.is_empty()
                {
                    assert!(Regex::new(&rules.pattern).is_ok(), "{}", field.full_name());
                }
            }
        }
    }
}
