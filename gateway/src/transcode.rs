//! JSON ⇄ protobuf for REST routes: the request message is built from the
//! JSON body (unknown fields refused), path variables and query parameters;
//! the answer is written as JSON with snake_case field names.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};

use crate::{
    problem::Problem,
    routes::{BodySpec, Route, percent_decode},
};

/// The request message of `route`, or the problem with the request.
pub fn request_message(
    route: &Route,
    bindings: &[(String, String)],
    query: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<DynamicMessage, Problem> {
    let desc = route.rpc.input();
    let mut message = match &route.body {
        BodySpec::Whole => parse_body(desc.clone(), &body)?,
        BodySpec::Raw(field) => raw_body(&desc, field, content_type, body)?,
        BodySpec::None if !body.iter().all(u8::is_ascii_whitespace) => {
            return Err(Problem::new(
                400,
                "invalid_argument",
                "this route takes no request body",
            ));
        }
        BodySpec::None => DynamicMessage::new(desc.clone()),
    };
    for (name, raw) in query_pairs(query)? {
        if route.body == BodySpec::Whole {
            return Err(Problem::field(name, "query parameters are not accepted on this route"));
        }
        if route.template.fields().any(|f| f == name) {
            return Err(Problem::field(name, "is given by the path"));
        }
        set_scalar(&mut message, &desc, &name, &raw, "unknown query parameter")?;
    }
    for (name, raw) in bindings {
        set_scalar(&mut message, &desc, name, raw, "unknown path variable")?;
    }
    Ok(message)
}

/// A request whose `field` (a `google.api.HttpBody`) holds the body as it
/// arrived, with its media type.
fn raw_body(
    desc: &MessageDescriptor,
    field: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<DynamicMessage, Problem> {
    if body.is_empty() {
        return Err(Problem::new(400, "invalid_body", "this route takes a request body"));
    }
    let field = desc
        .get_field_by_name(field)
        .ok_or_else(|| Problem::new(500, "internal", "the route's body field is missing"))?;
    let Kind::Message(body_desc) = field.kind() else {
        return Err(Problem::new(500, "internal", "the route's body field is not a message"));
    };
    let mut part = DynamicMessage::new(body_desc);
    part.set_field_by_name(
        "content_type",
        Value::String(content_type.unwrap_or_default().to_string()),
    );
    part.set_field_by_name("data", Value::Bytes(body.into()));
    let mut message = DynamicMessage::new(desc.clone());
    message.set_field(&field, Value::Message(part));
    Ok(message)
}

fn parse_body(desc: MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, Problem> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Problem::new(400, "invalid_body", "the request body is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(Problem::new(
            400,
            "invalid_body",
            "this route takes a JSON object as its body",
        ));
    }
    // Decoding reads null as the default anywhere; the contract allows it
    // only where a field has presence.
    let nulls = fleet_proto::json::misplaced_nulls(&desc, body)
        .map_err(|e| Problem::new(400, "invalid_body", format!("malformed JSON: {e}")))?;
    if !nulls.is_empty() {
        let mut problem = Problem::new(400, "invalid_argument", "the request body breaks the contract");
        problem.errors = nulls
            .into_iter()
            .map(|v| crate::problem::FieldError {
                field: v.field,
                message: v.message,
            })
            .collect();
        return Err(problem);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(desc, &mut de, &options)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| Problem::new(400, "invalid_body", format!("invalid request body: {e}")))?;
    Ok(message)
}

fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Problem> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            return Err(Problem::new(400, "invalid_argument", "the query string is not valid"));
        };
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(Problem::field(k, "is given more than once"));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

fn set_scalar(
    message: &mut DynamicMessage,
    desc: &MessageDescriptor,
    name: &str,
    raw: &str,
    unknown: &str,
) -> Result<(), Problem> {
    let Some(field) = desc.get_field_by_name(name) else {
        return Err(Problem::field(name, unknown));
    };
    let value = scalar(&field, raw).ok_or_else(|| Problem::field(name, format!("must be {}", kind_name(&field))))?;
    message.set_field(&field, value);
    Ok(())
}

fn scalar(field: &FieldDescriptor, raw: &str) -> Option<Value> {
    if field.is_list() || field.is_map() {
        return None;
    }
    Some(match field.kind() {
        Kind::String => Value::String(raw.to_string()),
        Kind::Bool => Value::Bool(raw.parse().ok()?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(raw.parse().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(raw.parse().ok()?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(raw.parse().ok()?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(raw.parse().ok()?),
        _ => return None,
    })
}

fn kind_name(field: &FieldDescriptor) -> &'static str {
    match field.kind() {
        Kind::Bool => "true or false",
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "an integer",
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => "a non-negative integer",
        Kind::String => "a string",
        _ => "a value this route cannot take from a URL",
    }
}

/// The JSON of an answer: snake_case names, 64-bit integers as numbers, and
/// every declared field present at every depth — defaults as `0`, `""`,
/// `false` or `[]`, and unset fields with presence (optional scalars,
/// messages) as `null` — so clients read the shapes the contract declares.
pub fn response_json(message: &DynamicMessage) -> Result<Vec<u8>, serde_json::Error> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let mut value = message.serialize_with_options(serde_json::value::Serializer, &options)?;
    fill_unset(message, &mut value);
    whole_numbers(&mut value);
    serde_json::to_vec(&value)
}

/// Prints a whole floating-point number as an integer (`5`, not `5.0`): a
/// `google.protobuf.Struct` holds every number as a double, and JSON does
/// not tell the two apart.
fn whole_numbers(value: &mut serde_json::Value) {
    /// Doubles represent every integer up to 2^53 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                #[allow(clippy::cast_possible_truncation)] // whole and within ±2^53
                let whole = f as i64;
                *value = serde_json::Value::from(whole);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Writes `null` for every unset field with presence, in `message` and in
/// every message below it. Well-known types have JSON forms of their own and
/// are left as they are; so are the members of a real `oneof`, where the one
/// present member is the answer.
fn fill_unset(message: &DynamicMessage, json: &mut serde_json::Value) {
    let serde_json::Value::Object(map) = json else { return };
    if message.descriptor().package_name() == "google.protobuf" {
        return;
    }
    for field in message.descriptor().fields() {
        let name = field.name();
        if !message.has_field(&field) {
            let in_real_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
            if field.supports_presence() && !in_real_oneof {
                map.insert(name.to_string(), serde_json::Value::Null);
            }
            continue;
        }
        let Some(slot) = map.get_mut(name) else { continue };
        match &*message.get_field(&field) {
            Value::Message(inner) => fill_unset(inner, slot),
            Value::List(items) => {
                if let serde_json::Value::Array(slots) = slot {
                    for (item, slot) in items.iter().zip(slots) {
                        if let Value::Message(inner) = item {
                            fill_unset(inner, slot);
                        }
                    }
                }
            }
            Value::Map(entries) => {
                if let serde_json::Value::Object(slots) = slot {
                    for (key, item) in entries {
                        if let (Value::Message(inner), Some(slot)) = (item, key_slot(slots, key)) {
                            fill_unset(inner, slot);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn key_slot<'a>(
    slots: &'a mut serde_json::Map<String, serde_json::Value>,
    key: &prost_reflect::MapKey,
) -> Option<&'a mut serde_json::Value> {
    use prost_reflect::MapKey;
    let name = match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    };
    slots.get_mut(&name)
}

/// Whether an answer is empty (`google.protobuf.Empty`): it goes out as 204.
pub fn is_empty_message(desc: &MessageDescriptor) -> bool {
    desc.full_name() == "google.protobuf.Empty"
}

#[cfg(test)]
mod tests {
    use http::Method;
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::routes::{RouteMatch, RouteTable};

    fn with_route<T>(method: Method, path: &str, f: impl FnOnce(&Route, Vec<(String, String)>) -> T) -> T {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table =
            RouteTable::from_pool(&pool, &["fleet.users.v1.UsersService", "fleet.auth.v1.AuthService"]).unwrap();
        match table.find(&method, path) {
            RouteMatch::Found(route, bindings) => f(route, bindings),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bodies_paths_and_queries_fill_the_request() {
        let msg = with_route(Method::PATCH, "/api/v1/users/abc", |r, b| {
            request_message(r, &b, None, None, br#"{"display_name":"Ada","version":3}"#.to_vec())
        })
        .unwrap();
        assert_eq!(msg.get_field_by_name("id").unwrap().as_str(), Some("abc"));
        assert_eq!(msg.get_field_by_name("display_name").unwrap().as_str(), Some("Ada"));
        let msg = with_route(Method::GET, "/api/v1/users", |r, b| {
            request_message(r, &b, Some("limit=5&q=a+b%21"), None, Vec::new())
        })
        .unwrap();
        assert_eq!(msg.get_field_by_name("limit").unwrap().as_u32(), Some(5));
        assert_eq!(msg.get_field_by_name("q").unwrap().as_str(), Some("a b!"));
    }

    #[test]
    fn bad_requests_are_problems() {
        let login = |body: &[u8]| {
            with_route(Method::POST, "/api/v1/auth/login", |r, b| {
                request_message(r, &b, None, None, body.to_vec())
            })
        };
        for body in [
            &b"{"[..],
            b"{\"email\":5}",
            b"{\"nope\":1}",
            b"\xff\xfe",
            b"{} trailing",
            b"{\"email\":null,\"password\":\"x\"}",
        ] {
            let problem = login(body).unwrap_err();
            assert_eq!(problem.status, 400, "{:?}", String::from_utf8_lossy(body));
        }
        let list = |q: &str| {
            with_route(Method::GET, "/api/v1/users", |r, b| {
                request_message(r, &b, Some(q), None, Vec::new())
            })
        };
        let null = login(b"{\"email\":null,\"password\":\"x\"}").unwrap_err();
        assert_eq!(null.errors[0].field, "email", "null only where a field has presence");
        assert_eq!(list("limit=many").unwrap_err().errors[0].field, "limit");
        assert_eq!(list("color=red").unwrap_err().errors[0].field, "color");
        assert_eq!(list("q=a&q=b").unwrap_err().errors[0].field, "q");
        let with_body = with_route(Method::GET, "/api/v1/users/me", |r, b| {
            request_message(r, &b, None, None, b"{}".to_vec())
        });
        assert_eq!(with_body.unwrap_err().status, 400);
    }

    #[test]
    fn answers_print_every_field_at_every_depth() {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        let desc = pool.get_message_by_name("fleet.users.v1.ListUsersResponse").unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&response_json(&DynamicMessage::new(desc)).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"items": [], "next_cursor": null}));
        let desc = pool.get_message_by_name("fleet.auth.v1.LoginResponse").unwrap();
        let mut msg = DynamicMessage::new(desc);
        msg.set_field_by_name("access_token", Value::String("t".into()));
        msg.set_field_by_name("expires_in", Value::U32(900));
        let json: serde_json::Value = serde_json::from_slice(&response_json(&msg).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "access_token": "t", "refresh_token": "", "token_type": "", "expires_in": 900,
                "user": null, "mfa_required": false, "mfa_token": "", "methods": [],
            })
        );
        // Whole doubles print as integers; others as they are.
        let mut numbers = serde_json::json!({"a": 5.0, "b": [0.5, -2.0], "c": {"d": 1e300}});
        whole_numbers(&mut numbers);
        assert_eq!(numbers, serde_json::json!({"a": 5, "b": [0.5, -2], "c": {"d": 1e300}}));
        assert!(numbers["a"].is_i64() && numbers["c"]["d"].is_f64());
        // At every depth: a list item's unset fields are null, its defaults printed.
        let desc = pool.get_message_by_name("fleet.users.v1.ListUsersResponse").unwrap();
        let user_desc = pool.get_message_by_name("fleet.users.v1.User").unwrap();
        let mut user = DynamicMessage::new(user_desc);
        user.set_field_by_name("id", Value::String("u1".into()));
        let mut msg = DynamicMessage::new(desc);
        msg.set_field_by_name("items", Value::List(vec![Value::Message(user)]));
        let json: serde_json::Value = serde_json::from_slice(&response_json(&msg).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "items": [{
                    "id": "u1", "email": null, "display_name": "", "role": null, "status": null,
                    "created_at": null, "updated_at": null, "version": null,
                }],
                "next_cursor": null,
            })
        );
    }
}
