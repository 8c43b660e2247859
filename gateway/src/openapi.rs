//! The OpenAPI 3.1 document, generated from the same descriptor set and
//! route table the gateway serves.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::routes::{BodySpec, RouteTable};

/// The document for `routes`.
pub fn document(routes: &RouteTable, version: &str) -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for route in routes.routes() {
        let input = route.rpc.input();
        let output = route.rpc.output();
        let path_fields: Vec<&str> = route.template.fields().collect();
        let mut parameters: Vec<Value> = path_fields
            .iter()
            .map(|name| {
                let schema = input
                    .get_field_by_name(name)
                    .map_or(json!({"type": "string"}), |f| scalar_schema(&f));
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
                    "required": false,
                    "schema": scalar_schema(&field),
                }));
            }
        }
        let mut operation = json!({
            "operationId": route.rpc.name(),
            "tags": [route.rpc.parent_service().name()],
            "summary": format!("{}", route.rpc.full_name()),
            "parameters": parameters,
            "responses": {},
        });
        if route.body == BodySpec::Whole {
            collect(&input, &mut schemas);
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": reference(&input)}},
            });
        }
        let responses = &mut operation["responses"];
        if crate::transcode::is_empty_message(&output) {
            responses["204"] = json!({"description": "Done"});
        } else {
            collect(&output, &mut schemas);
            responses[route.success_status.to_string()] = json!({
                "description": "Success",
                "content": {"application/json": {"schema": reference(&output)}},
            });
        }
        responses["default"] = json!({
            "description": "An error (RFC 9457)",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        });
        paths
            .entry(route.template.as_str().to_string())
            .or_default()
            .insert(route.method.as_str().to_lowercase(), operation);
    }
    schemas.insert("Problem".to_string(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Fleet API",
            "version": version,
            "description": "User accounts: registration, login, sessions, profiles. Generated from the gRPC contracts.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}, {}],
    })
}

fn schema_name(desc: &MessageDescriptor) -> String {
    desc.full_name().replace('.', "_")
}

fn reference(desc: &MessageDescriptor) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(desc))})
}

fn collect(desc: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    let name = schema_name(desc);
    if schemas.contains_key(&name) {
        return;
    }
    schemas.insert(name.clone(), Value::Null);
    let mut properties = serde_json::Map::new();
    for field in desc.fields() {
        let mut schema = field_schema(&field, schemas);
        if field.containing_oneof().is_some_and(|o| o.is_synthetic()) {
            schema = json!({"anyOf": [schema, {"type": "null"}]});
        }
        properties.insert(field.name().to_string(), schema);
    }
    schemas.insert(
        name,
        json!({"type": "object", "properties": properties, "additionalProperties": false}),
    );
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let single = match field.kind() {
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            json!({"type": "string", "format": "date-time"})
        }
        Kind::Message(m) if field.is_map() => {
            let value = m.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
        }
        Kind::Message(m) => {
            collect(&m, schemas);
            reference(&m)
        }
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
        }
        _ => scalar_schema(field),
    };
    if field.is_list() {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "format": "int64", "minimum": 0}),
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
        let routes =
            RouteTable::from_pool(&pool, &["fleet.users.v1.UsersService", "fleet.auth.v1.AuthService"]).unwrap();
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
        let user = &doc["components"]["schemas"]["fleet_users_v1_User"]["properties"];
        assert_eq!(user["created_at"]["format"], "date-time");
        let list = &doc["paths"]["/api/v1/users"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["limit", "cursor", "q"]);
    }
}
