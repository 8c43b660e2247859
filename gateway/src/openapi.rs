//! The OpenAPI 3.1 document, generated from the same descriptor set and
//! route table the gateway serves. What the services enforce is what it
//! says: field rules (`fleet.api.v1.rules`) become lengths, formats,
//! patterns, enums and required lists; answers list every field, nullable
//! where it has presence; each operation names its security, its problem
//! answers and the operations its answer feeds (`fleet.api.v1.links`).

use std::collections::BTreeMap;

use fleet_proto::{
    api::v1::Link,
    rules::{self, FieldRules},
};
use prost::Message;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value as Reflected};
use serde_json::{Value, json};

use crate::routes::{BodySpec, RouteTable};

/// The problem statuses every operation may answer besides its success.
const PROBLEM_STATUSES: &[&str] = &["400", "401", "403", "404", "409", "413", "429", "500", "503", "504"];

/// Which way a message travels: requests are described by their rules,
/// answers by the transcoder's promise that every field is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Answer,
}

/// The document for `routes`.
pub fn document(routes: &RouteTable, version: &str) -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut schemas = Schemas::default();
    for route in routes.routes() {
        let input = route.rpc.input();
        let output = route.rpc.output();
        let path_fields: Vec<&str> = route.template.fields().collect();
        let mut parameters: Vec<Value> = path_fields
            .iter()
            .map(|name| {
                let schema = input
                    .get_field_by_name(name)
                    .map_or(json!({"type": "string"}), |f| constrained(&f, scalar_schema(&f)));
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if route.body == BodySpec::None {
            for field in input
                .fields()
                .filter(|f| !path_fields.contains(&f.name()) && !f.is_list() && !f.is_map())
            {
                if matches!(field.kind(), Kind::Message(_) | Kind::Enum(_)) {
                    continue;
                }
                parameters.push(json!({
                    "name": field.name(),
                    "in": "query",
                    "required": rules::of(&field).is_some_and(|r| r.required),
                    "schema": constrained(&field, scalar_schema(&field)),
                }));
            }
        }
        let anonymous = method_flag(&route.rpc, "fleet.api.v1.anonymous");
        let mut operation = json!({
            "operationId": route.rpc.name(),
            "tags": [route.rpc.parent_service().name()],
            "summary": route.rpc.full_name(),
            "parameters": parameters,
            "security": if anonymous { json!([]) } else { json!([{"bearer": []}]) },
        });
        if let Some(field) = &route.session_cookie {
            operation["description"] = json!(format!(
                "With the request header `Fleet-Session: cookie` (a browser on the gateway's own origin), \
                 `{field}` is kept in the `{}` cookie (HttpOnly, Secure, SameSite=Strict): an answer's value \
                 goes there and the field is empty, an empty request field is filled from it, and a logout \
                 or a 401 clears it.",
                crate::session_cookie::COOKIE
            ));
        }
        if route.body == BodySpec::Whole {
            let schema = collect(&input, Direction::Request, &mut schemas);
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        if let BodySpec::Raw(_) = route.body {
            let content = media_types(&route.rpc, "fleet.api.v1.consumes", Direction::Request, &mut schemas);
            operation["requestBody"] = json!({"required": true, "content": content});
        }
        let mut responses = serde_json::Map::new();
        let empty = crate::transcode::is_empty_message(&output);
        let mut success = if route.streams_body() {
            streamed(&route.rpc, &mut schemas)
        } else if empty {
            json!({"description": "Done"})
        } else {
            let schema = collect(&output, Direction::Answer, &mut schemas);
            json!({
                "description": "Success",
                "content": {"application/json": {"schema": schema}},
            })
        };
        let links = links(&route.rpc);
        if !links.is_empty() {
            success["links"] = Value::Object(links);
        }
        let status = if empty { 204 } else { route.success_status };
        responses.insert(status.to_string(), success);
        for status in PROBLEM_STATUSES.iter().chain(&["default"]) {
            responses.insert((*status).to_string(), json!({"$ref": "#/components/responses/Problem"}));
        }
        operation["responses"] = Value::Object(responses);
        paths
            .entry(route.template.as_str().to_string())
            .or_default()
            .insert(route.method.as_str().to_lowercase(), operation);
    }
    schemas.map.insert("Problem".to_string(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Fleet API",
            "version": version,
            "description": "User accounts: registration, login, sessions, profiles. Generated from the gRPC contracts.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.map,
            "responses": {
                "Problem": {
                    "description": "An error (RFC 9457 problem details)",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    })
}

fn method_flag(rpc: &MethodDescriptor, extension: &str) -> bool {
    let Some(ext) = rpc.parent_pool().get_extension_by_name(extension) else {
        return false;
    };
    rpc.options().get_extension(&ext).as_bool().unwrap_or(false)
}

/// A streamed answer: its media types from `fleet.api.v1.produces`, sent
/// as an attachment.
fn streamed(rpc: &MethodDescriptor, schemas: &mut Schemas) -> Value {
    let content = media_types(rpc, "fleet.api.v1.produces", Direction::Answer, schemas);
    json!({
        "description": "Streamed as it is read (chunked on HTTP/1.1), as an attachment",
        "headers": {
            "Content-Disposition": {
                "schema": {"type": "string"},
                "description": "attachment; filename=\"…\"",
            },
        },
        "content": content,
    })
}

/// The media types an RPC lists in `option` (`fleet.api.v1.produces` or
/// `consumes`), each with its schema: JSON is the message named by
/// `fleet.api.v1.document` (any object without one), anything else text.
fn media_types(
    rpc: &MethodDescriptor,
    option: &str,
    direction: Direction,
    schemas: &mut Schemas,
) -> serde_json::Map<String, Value> {
    let pool = rpc.parent_pool();
    let options = rpc.options();
    let document = pool
        .get_extension_by_name("fleet.api.v1.document")
        .and_then(|ext| options.get_extension(&ext).as_str().map(str::to_string))
        .and_then(|name| pool.get_message_by_name(&name));
    let mut content = serde_json::Map::new();
    let Some(ext) = pool.get_extension_by_name(option) else {
        return content;
    };
    let listed = options.get_extension(&ext);
    for media in listed
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(Reflected::as_str)
    {
        let schema = match (&document, media) {
            (Some(message), "application/json") => collect(message, direction, schemas),
            (None, "application/json") => json!({"type": "object"}),
            _ => json!({"type": "string"}),
        };
        content.insert(media.to_string(), json!({"schema": schema}));
    }
    content
}

/// The OpenAPI links of an RPC's success answer, from `fleet.api.v1.links`.
fn links(rpc: &MethodDescriptor) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(ext) = rpc.parent_pool().get_extension_by_name("fleet.api.v1.links") else {
        return out;
    };
    let options = rpc.options();
    let value = options.get_extension(&ext);
    let Some(items) = value.as_list() else { return out };
    for item in items {
        let Reflected::Message(m) = item else { continue };
        let Ok(link) = Link::decode(m.encode_to_vec().as_slice()) else {
            continue;
        };
        out.insert(
            format!("{}_{}", link.operation, link.parameter),
            json!({
                "operationId": link.operation,
                "parameters": {link.parameter.as_str(): format!("$response.body#{}", link.pointer)},
            }),
        );
    }
    out
}

/// The schemas of the document, and the direction each was made for.
#[derive(Default)]
struct Schemas {
    map: BTreeMap<String, Value>,
    directions: std::collections::HashMap<String, Direction>,
}

/// A message's schema is named after it; a message used both ways (sent
/// and answered, whose schemas differ in what is required and nullable)
/// has a second schema, for the direction it met second, named with that
/// direction (`…_request`, `…_answer`).
fn schema_name(desc: &MessageDescriptor, direction: Direction, schemas: &Schemas) -> String {
    let base = desc.full_name().replace('.', "_");
    match schemas.directions.get(&base) {
        Some(first) if *first != direction => match direction {
            Direction::Request => format!("{base}_request"),
            Direction::Answer => format!("{base}_answer"),
        },
        _ => base,
    }
}

/// Adds the schema of `desc` (and of the messages in it) for `direction`,
/// once; its reference.
fn collect(desc: &MessageDescriptor, direction: Direction, schemas: &mut Schemas) -> Value {
    let name = schema_name(desc, direction, schemas);
    let reference = json!({"$ref": format!("#/components/schemas/{name}")});
    if schemas.map.contains_key(&name) {
        return reference;
    }
    schemas.map.insert(name.clone(), Value::Null);
    schemas.directions.entry(name.clone()).or_insert(direction);
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for field in desc.fields() {
        let mut schema = field_schema(&field, direction, schemas);
        let nullable = match direction {
            // A request may leave an optional field out or send null.
            Direction::Request => field.containing_oneof().is_some_and(|o| o.is_synthetic()),
            // An answer prints every field; those with presence as null when unset.
            Direction::Answer => field.supports_presence() && !field.is_list(),
        };
        if nullable {
            schema = json!({"anyOf": [schema, {"type": "null"}]});
        }
        let must = match direction {
            Direction::Request => rules::of(&field).is_some_and(|r| r.required),
            Direction::Answer => true,
        };
        if must {
            required.push(field.name().to_string());
        }
        properties.insert(field.name().to_string(), schema);
    }
    let mut schema =
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    let group = rules::exactly_one_of(desc);
    if direction == Direction::Request && !group.is_empty() {
        schema["oneOf"] = exactly_one(&group);
    }
    schemas.map.insert(name, schema);
    reference
}

/// One alternative per field of an `exactly_one_of` group: that field
/// non-empty, the others absent or empty.
fn exactly_one(group: &[String]) -> Value {
    let alternatives = group.iter().map(|chosen| {
        let properties: serde_json::Map<String, Value> = group
            .iter()
            .map(|f| {
                let bound = if f == chosen {
                    json!({"minLength": 1})
                } else {
                    json!({"maxLength": 0})
                };
                (f.clone(), bound)
            })
            .collect();
        json!({"required": [chosen], "properties": properties})
    });
    Value::Array(alternatives.collect())
}

fn field_schema(field: &FieldDescriptor, direction: Direction, schemas: &mut Schemas) -> Value {
    let single = match field.kind() {
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            json!({"type": "string", "format": "date-time"})
        }
        // Well-known types with JSON forms of their own.
        Kind::Message(m) if m.full_name() == "google.protobuf.Struct" => json!({"type": "object"}),
        Kind::Message(m) if m.full_name() == "google.protobuf.Value" => json!({}),
        Kind::Message(m) if field.is_map() => {
            let value = m.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": field_schema(&value, direction, schemas)});
        }
        Kind::Message(m) => collect(&m, direction, schemas),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
        }
        _ => constrained(field, scalar_schema(field)),
    };
    if field.is_list() {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

/// `schema` narrowed by the field's rules.
fn constrained(field: &FieldDescriptor, mut schema: Value) -> Value {
    let Some(rules) = rules::of(field) else {
        return schema;
    };
    let FieldRules {
        required,
        min_len,
        max_len,
        format,
        pattern,
        one_of,
        minimum,
        maximum,
        ..
    } = rules;
    // A string without presence that is not required is unset when empty,
    // and the services take "" as "not given": the document says so.
    let narrowed = min_len.is_some() || !format.is_empty() || !pattern.is_empty() || !one_of.is_empty();
    if let Some(n) = min_len.or((required && field.kind() == Kind::String).then_some(1)) {
        schema["minLength"] = json!(n);
    }
    if let Some(n) = max_len {
        schema["maxLength"] = json!(n);
    }
    if !format.is_empty() {
        schema["format"] = json!(format);
    }
    if !pattern.is_empty() {
        schema["pattern"] = json!(pattern);
    }
    if !one_of.is_empty() {
        schema["enum"] = json!(one_of);
    }
    if let Some(n) = minimum {
        schema["minimum"] = json!(n);
    }
    if let Some(n) = maximum {
        schema["maximum"] = json!(n);
    }
    if field.kind() == Kind::String && !field.supports_presence() && !required && narrowed {
        return json!({"anyOf": [{"type": "string", "maxLength": 0}, schema]});
    }
    schema
}

fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        _ => json!({"type": "string"}),
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "code", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn every_route_is_documented_with_its_schemas() {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = RouteTable::from_pool(
            &pool,
            &[
                "fleet.users.v1.UsersService",
                "fleet.auth.v1.AuthService",
                "fleet.transfer.v1.TransferService",
            ],
        )
        .unwrap();
        let doc = document(&routes, "test");
        assert_eq!(doc["openapi"], "3.1.0");
        for route in routes.routes() {
            let op = &doc["paths"][route.template.as_str()][route.method.as_str().to_lowercase()];
            assert_eq!(
                op["operationId"],
                route.rpc.name(),
                "{} {}",
                route.method,
                route.template.as_str()
            );
        }
        assert!(doc["paths"]["/api/v1/auth/register"]["post"]["responses"]["201"].is_object());
        assert!(doc["paths"]["/api/v1/auth/logout"]["post"]["responses"]["204"].is_object());
        let export = &doc["paths"]["/api/v1/export"]["get"]["responses"]["200"];
        let document = json!({"$ref": "#/components/schemas/fleet_transfer_v1_ExportDocument"});
        assert_eq!(export["content"]["application/json"]["schema"], document, "{export}");
        assert_eq!(export["content"]["text/csv"]["schema"]["type"], "string", "{export}");
        assert!(export["headers"]["Content-Disposition"].is_object(), "{export}");
        let import = &doc["paths"]["/api/v1/import"]["post"]["requestBody"]["content"];
        let sent = json!({"$ref": "#/components/schemas/fleet_transfer_v1_ExportDocument_request"});
        assert_eq!(import["application/json"]["schema"], sent, "{import}");
        let answered = &doc["components"]["schemas"]["fleet_transfer_v1_ExportProfile"]["required"];
        let sent = &doc["components"]["schemas"]["fleet_transfer_v1_ExportProfile_request"]["required"];
        assert_eq!(
            answered.as_array().unwrap().len(),
            7,
            "an answer has every field: {answered}"
        );
        assert_eq!(sent, &json!(["display_name"]), "a request needs what the rules say");
        let entry = &doc["components"]["schemas"]["fleet_transfer_v1_ExportEntry"];
        assert_eq!(entry["properties"]["occurred_at"]["format"], "date-time", "{entry}");
        let user = &doc["components"]["schemas"]["fleet_users_v1_User"]["properties"];
        assert_eq!(user["created_at"]["anyOf"][0]["format"], "date-time");
        let list = &doc["paths"]["/api/v1/users"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["limit", "cursor", "q"]);
    }

    fn doc() -> Value {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes =
            RouteTable::from_pool(&pool, &["fleet.users.v1.UsersService", "fleet.auth.v1.AuthService"]).unwrap();
        document(&routes, "test")
    }

    #[test]
    fn field_rules_become_constraints_and_required_lists() {
        let doc = doc();
        let register = &doc["components"]["schemas"]["fleet_auth_v1_RegisterRequest"];
        assert_eq!(register["required"], json!(["email", "password", "display_name"]));
        assert_eq!(register["properties"]["email"]["format"], "email");
        assert_eq!(register["properties"]["email"]["maxLength"], 254);
        assert_eq!(register["properties"]["password"]["minLength"], 12);
        assert!(register["properties"]["display_name"]["pattern"].is_string());
        let update = &doc["components"]["schemas"]["fleet_users_v1_UpdateUserRequest"];
        assert_eq!(
            update["properties"]["role"]["anyOf"][0]["enum"],
            json!(["user", "admin"])
        );
        let id = &doc["paths"]["/api/v1/users/{id}"]["get"]["parameters"][0];
        assert_eq!(id["schema"]["format"], "uuid");
        let mfa = &doc["components"]["schemas"]["fleet_auth_v1_LoginMfaRequest"];
        assert_eq!(mfa["oneOf"][0]["required"], json!(["code"]));
        assert_eq!(mfa["oneOf"][1]["properties"]["code"]["maxLength"], 0);
        let limit = &doc["paths"]["/api/v1/users"]["get"]["parameters"][0];
        assert_eq!(
            (limit["schema"]["minimum"].clone(), limit["schema"]["maximum"].clone()),
            (json!(1), json!(100))
        );
    }

    #[test]
    fn answers_declare_every_field_and_null_where_a_field_has_presence() {
        let doc = doc();
        let user = &doc["components"]["schemas"]["fleet_users_v1_User"];
        assert_eq!(user["required"].as_array().unwrap().len(), 8);
        assert_eq!(user["properties"]["email"]["anyOf"][1]["type"], "null");
        assert_eq!(user["properties"]["id"]["type"], "string");
        let page = &doc["components"]["schemas"]["fleet_users_v1_ListUsersResponse"];
        assert_eq!(page["required"], json!(["items", "next_cursor"]));
        assert_eq!(page["properties"]["items"]["type"], "array");
    }

    #[test]
    fn operations_name_their_security_problems_and_links() {
        let doc = doc();
        let register = &doc["paths"]["/api/v1/auth/register"]["post"];
        assert_eq!(register["security"], json!([]));
        assert_eq!(
            doc["paths"]["/api/v1/users/me"]["get"]["security"],
            json!([{"bearer": []}])
        );
        let link = &register["responses"]["201"]["links"]["GetUser_id"];
        assert_eq!(link["operationId"], "GetUser");
        assert_eq!(link["parameters"]["id"], "$response.body#/user/id");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in ["400", "401", "429", "default"] {
                    assert_eq!(
                        op["responses"][status]["$ref"], "#/components/responses/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        let problem = &doc["components"]["responses"]["Problem"]["content"]["application/problem+json"];
        assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
    }
}
