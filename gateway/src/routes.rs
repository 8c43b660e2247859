//! The REST route table, built at start-up from the `google.api.http`
//! annotations in the descriptor set: nothing about a route is written by
//! hand in the gateway.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, bail};
use fleet_proto::google::api::{HttpRule, http_rule::Pattern};
use http::Method;
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A `{field}` variable bound to a top-level request field.
    Field(String),
}

/// A parsed path template such as `/api/v1/users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template; only whole-segment `{field}` variables are allowed.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let Some(rest) = text.strip_prefix('/') else {
            bail!("path template {text:?} must start with '/'");
        };
        let mut segments = Vec::new();
        for part in rest.split('/') {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    bail!("unsupported variable {part:?} in {text:?}: only {{field}} is supported");
                }
                segments.push(Segment::Field(inner.to_string()));
            } else if part.is_empty() || part.contains(['{', '}', '*']) {
                bail!("unsupported segment {part:?} in {text:?}");
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The template as written, e.g. for metrics labels.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The variables a path binds, with their literal-segment count, or
    /// `None` when it does not match.
    fn matches(&self, parts: &[&str]) -> Option<(usize, Bindings)> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut literals = 0;
        let mut bindings = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts.iter().copied()) {
            match segment {
                Segment::Literal(lit) if lit == part => literals += 1,
                Segment::Literal(_) => return None,
                Segment::Field(_) if part.is_empty() => return None,
                Segment::Field(name) => bindings.push((name.clone(), percent_decode(part)?)),
            }
        }
        Some((literals, bindings))
    }

    /// The variable names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }
}

/// Decodes `%XX` escapes; `None` for malformed escapes or invalid UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the request message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySpec {
    /// No body: fields come from the path and the query string.
    None,
    /// `body: "*"`: the whole JSON body is the request message.
    Whole,
    /// `body: "<field>"` where the field is a `google.api.HttpBody`: the
    /// body as it arrived (any media type) goes in that field; the other
    /// fields come from the path and the query string.
    Raw(String),
}

/// One REST route.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub template: PathTemplate,
    /// The RPC it calls.
    pub rpc: MethodDescriptor,
    /// Where the request message comes from.
    pub body: BodySpec,
    /// The status of a successful, non-empty answer.
    pub success_status: u16,
    /// The string field kept in the session cookie for clients that ask
    /// (`(fleet.api.v1.session_cookie)`).
    pub session_cookie: Option<String>,
}

impl Route {
    /// Whether the answer is a stream of `google.api.HttpBody` parts, served
    /// as one chunked body rather than transcoded.
    pub fn streams_body(&self) -> bool {
        self.rpc.is_server_streaming()
    }

    /// The gRPC path, `/package.Service/Method`.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.rpc.parent_service().full_name(), self.rpc.name())
    }
}

/// The message a streamed answer is made of.
pub const HTTP_BODY: &str = "google.api.HttpBody";

/// Path variables and their decoded values.
pub type Bindings = Vec<(String, String)>;

/// What a lookup found.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// A route and its path bindings.
    Found(&'a Route, Bindings),
    /// The path exists, but not for this method.
    MethodNotAllowed(Vec<Method>),
    /// No route has this path.
    NotFound,
}

/// Every REST route of the fleet.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// The RPCs outside callers may reach by gRPC pass-through, by path
    /// (`/fleet.auth.v1.AuthService/Login`), each with the name its rate
    /// limit policy is found under: the template of its first route, or,
    /// for an RPC marked `(fleet.api.v1.public)` without a route, its path.
    edge: HashMap<String, String>,
    /// Every RPC of the routed services, by path.
    known: HashSet<String>,
}

impl RouteTable {
    /// Builds the table from every annotated RPC of `services` (full names)
    /// in `pool`. Unannotated RPCs get no route.
    pub fn from_pool(pool: &DescriptorPool, services: &[&str]) -> anyhow::Result<Self> {
        let http_ext = pool
            .get_extension_by_name("google.api.http")
            .context("the descriptor set lacks google.api.http")?;
        let status_ext = pool.get_extension_by_name("fleet.api.v1.success_status");
        let public_ext = pool.get_extension_by_name("fleet.api.v1.public");
        let cookie_ext = pool.get_extension_by_name("fleet.api.v1.session_cookie");
        let mut routes = Vec::new();
        let mut edge = HashMap::new();
        let mut known = HashSet::new();
        for name in services {
            let service = pool
                .get_service_by_name(name)
                .with_context(|| format!("service {name} is not in the descriptor set"))?;
            for rpc in service.methods() {
                let options = rpc.options();
                let path = format!("/{}/{}", service.full_name(), rpc.name());
                known.insert(path.clone());
                if !options.has_extension(&http_ext) {
                    let public = public_ext
                        .as_ref()
                        .filter(|ext| options.has_extension(ext))
                        .and_then(|ext| options.get_extension(ext).as_bool())
                        .unwrap_or(false);
                    if public {
                        edge.insert(path.clone(), path);
                    }
                    continue;
                }
                let rule_value = options.get_extension(&http_ext);
                let Value::Message(rule) = rule_value.as_ref() else {
                    bail!("{}: google.api.http is not a message", rpc.full_name());
                };
                let rule: HttpRule = rule.transcode_to().context("decoding google.api.http")?;
                let success_status = status_ext
                    .as_ref()
                    .filter(|ext| options.has_extension(ext))
                    .and_then(|ext| options.get_extension(ext).as_u32())
                    .map_or(200, |s| u16::try_from(s).unwrap_or(200));
                let cookie = cookie_ext
                    .as_ref()
                    .filter(|ext| options.has_extension(ext))
                    .and_then(|ext| options.get_extension(ext).as_str().map(str::to_string))
                    .filter(|field| !field.is_empty());
                if let Some(field) = &cookie {
                    session_cookie_field(&rpc, field)?;
                }
                let mut first = route(&rpc, &rule, success_status)?;
                first.session_cookie.clone_from(&cookie);
                edge.insert(path, first.template.as_str().to_string());
                routes.push(first);
                for extra in &rule.additional_bindings {
                    let mut more = route(&rpc, extra, success_status)?;
                    more.session_cookie.clone_from(&cookie);
                    routes.push(more);
                }
            }
        }
        Ok(Self { routes, edge, known })
    }

    /// Whether outside callers may call the RPC at a gRPC `path`, and if so
    /// the name of its rate limit policy (the same as its REST route's).
    pub fn edge_rpc(&self, path: &str) -> Option<&str> {
        self.edge.get(path).map(String::as_str)
    }

    /// Whether `path` names an RPC of a routed service, public or not.
    pub fn is_rpc(&self, path: &str) -> bool {
        self.known.contains(path)
    }

    /// Finds the route of a request. A path names the resource of the
    /// templates that match it with the most literal segments (`/users/me`
    /// over `/users/{id}`), whatever the method; the request's method must
    /// be one of that resource's, or the answer is 405 with those.
    pub fn find(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return RouteMatch::NotFound;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut matching: Vec<(usize, &Route, Bindings)> = self
            .routes
            .iter()
            .filter_map(|route| {
                let (literals, bindings) = route.template.matches(&parts)?;
                Some((literals, route, bindings))
            })
            .collect();
        let Some(most) = matching.iter().map(|(literals, _, _)| *literals).max() else {
            return RouteMatch::NotFound;
        };
        matching.retain(|(literals, _, _)| *literals == most);
        if let Some(found) = matching.iter().position(|(_, route, _)| route.method == *method) {
            let (_, route, bindings) = matching.swap_remove(found);
            return RouteMatch::Found(route, bindings);
        }
        let allowed: BTreeSet<String> = matching.iter().map(|(_, r, _)| r.method.to_string()).collect();
        RouteMatch::MethodNotAllowed(allowed.iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// Every route, in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn route(rpc: &MethodDescriptor, rule: &HttpRule, success_status: u16) -> anyhow::Result<Route> {
    let (method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (Method::GET, p),
        Some(Pattern::Put(p)) => (Method::PUT, p),
        Some(Pattern::Post(p)) => (Method::POST, p),
        Some(Pattern::Delete(p)) => (Method::DELETE, p),
        Some(Pattern::Patch(p)) => (Method::PATCH, p),
        Some(Pattern::Custom(c)) => (Method::from_bytes(c.kind.as_bytes())?, &c.path),
        None => bail!("{}: google.api.http has no pattern", rpc.full_name()),
    };
    let template = PathTemplate::parse(path).with_context(|| rpc.full_name().to_string())?;
    let input = rpc.input();
    for field in template.fields() {
        if input.get_field_by_name(field).is_none() {
            bail!(
                "{}: path variable {field} is not a field of {}",
                rpc.full_name(),
                input.full_name()
            );
        }
    }
    let body = match rule.body.as_str() {
        "" => BodySpec::None,
        "*" => BodySpec::Whole,
        field => match input.get_field_by_name(field).map(|f| f.kind()) {
            Some(prost_reflect::Kind::Message(m)) if m.full_name() == HTTP_BODY => BodySpec::Raw(field.to_string()),
            _ => bail!(
                "{}: body {field:?} is not supported (only \"*\" or a {HTTP_BODY} field)",
                rpc.full_name()
            ),
        },
    };
    if rpc.is_client_streaming() {
        bail!("{}: client-streaming RPCs have no REST route", rpc.full_name());
    }
    if rpc.is_server_streaming() && rpc.output().full_name() != HTTP_BODY {
        bail!("{}: a server-streaming route must answer {HTTP_BODY}", rpc.full_name());
    }
    if !rule.response_body.is_empty() {
        bail!("{}: response_body is not supported", rpc.full_name());
    }
    Ok(Route {
        method,
        template,
        rpc: rpc.clone(),
        body,
        success_status,
        session_cookie: None,
    })
}

/// Checks that a session cookie's `field` is a string field of the RPC's
/// request or answer (or both), and of neither as anything else.
fn session_cookie_field(rpc: &MethodDescriptor, field: &str) -> anyhow::Result<()> {
    let mut found = false;
    for message in [rpc.input(), rpc.output()] {
        if let Some(f) = message.get_field_by_name(field) {
            if f.kind() != prost_reflect::Kind::String || f.is_list() {
                bail!(
                    "{}: session_cookie {field:?} is not a string field of {}",
                    rpc.full_name(),
                    message.full_name()
                );
            }
            found = true;
        }
    }
    if !found && rpc.output().fields().next().is_some() {
        bail!(
            "{}: session_cookie {field:?} is a field of neither its request nor its answer",
            rpc.full_name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        RouteTable::from_pool(&pool, &["fleet.users.v1.UsersService", "fleet.auth.v1.AuthService"]).unwrap()
    }

    fn found(table: &RouteTable, method: Method, path: &str) -> (String, Vec<(String, String)>) {
        match table.find(&method, path) {
            RouteMatch::Found(route, bindings) => (route.rpc.name().to_string(), bindings),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn the_session_cookie_routes_are_those_the_contract_marks() {
        let t = table();
        let marked: Vec<(&str, Option<&str>)> = t
            .routes()
            .iter()
            .filter(|r| r.session_cookie.is_some())
            .map(|r| (r.rpc.name(), r.session_cookie.as_deref()))
            .collect();
        let token = Some("refresh_token");
        assert_eq!(
            marked,
            [
                ("Login", token),
                ("LoginMfa", token),
                ("Refresh", token),
                ("Logout", token)
            ]
        );
    }

    #[test]
    fn a_session_cookie_must_name_a_string_field_of_the_request_or_answer() {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        let auth = pool.get_service_by_name("fleet.auth.v1.AuthService").unwrap();
        let rpc = |name: &str| auth.methods().find(|m| m.name() == name).unwrap();
        session_cookie_field(&rpc("Refresh"), "refresh_token").unwrap();
        // An empty answer (a logout) may clear a cookie it never names.
        session_cookie_field(&rpc("Logout"), "refresh_token").unwrap();
        let not_string = session_cookie_field(&rpc("Login"), "user").unwrap_err();
        assert!(not_string.to_string().contains("not a string field"), "{not_string}");
        let absent = session_cookie_field(&rpc("Login"), "nothing").unwrap_err();
        assert!(absent.to_string().contains("neither"), "{absent}");
    }

    #[test]
    fn only_routed_or_public_rpcs_reach_the_edge_and_share_their_routes_policy() {
        let t = table();
        assert_eq!(
            t.edge_rpc("/fleet.auth.v1.AuthService/Login"),
            Some("/api/v1/auth/login")
        );
        assert_eq!(
            t.edge_rpc("/fleet.users.v1.UsersService/GetUser"),
            Some("/api/v1/users/{id}")
        );
        for internal in [
            "/fleet.auth.v1.AuthService/RotateSigningKey",
            "/fleet.users.v1.UsersService/CreateUser",
            "/fleet.users.v1.UsersService/GetUserByEmail",
            "/fleet.users.v1.UsersService/Nothing",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(t.edge_rpc(internal), None, "{internal}");
        }
        assert!(t.is_rpc("/fleet.auth.v1.AuthService/RotateSigningKey"));
        assert!(!t.is_rpc("/fleet.users.v1.UsersService/Nothing"));
    }

    #[test]
    fn a_literal_segment_names_its_own_resource_for_every_method() {
        let t = table();
        match t.find(&Method::DELETE, "/api/v1/users/me") {
            RouteMatch::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::GET, Method::PATCH]),
            other => panic!("DELETE /users/me must not reach delete-by-id: {other:?}"),
        }
        assert_eq!(
            found(&t, Method::DELETE, "/api/v1/users/0190a1b2-0000-7000-8000-000000000000").0,
            "DeleteUser"
        );
        match t.find(&Method::OPTIONS, "/api/v1/users/abc") {
            RouteMatch::MethodNotAllowed(allowed) => {
                assert_eq!(allowed, [Method::DELETE, Method::GET, Method::PATCH]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes_come_from_the_annotations() {
        let t = table();
        assert_eq!(found(&t, Method::GET, "/api/v1/users/me").0, "GetMe");
        let (rpc, bindings) = found(&t, Method::GET, "/api/v1/users/0190a1b2-0000-7000-8000-000000000000");
        assert_eq!(rpc, "GetUser");
        assert_eq!(
            bindings,
            [("id".to_string(), "0190a1b2-0000-7000-8000-000000000000".to_string())]
        );
        assert_eq!(
            found(&t, Method::DELETE, "/api/v1/auth/sessions/abc").0,
            "RevokeSession"
        );
        assert_eq!(found(&t, Method::GET, "/.well-known/jwks.json").0, "GetJwks");
        let register = t.routes().iter().find(|r| r.rpc.name() == "Register").unwrap();
        assert_eq!((register.success_status, &register.body), (201, &BodySpec::Whole));
    }

    #[test]
    fn unannotated_rpcs_have_no_route() {
        let t = table();
        for internal in ["CreateUser", "GetUserByEmail", "RotateSigningKey"] {
            assert!(
                t.routes().iter().all(|r| r.rpc.name() != internal),
                "{internal} must not be routed"
            );
        }
        assert!(matches!(
            t.find(&Method::POST, "/fleet.users.v1.UsersService/CreateUser"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn wrong_methods_and_unknown_paths_are_told_apart() {
        let t = table();
        match t.find(&Method::PUT, "/api/v1/users/me") {
            RouteMatch::MethodNotAllowed(allowed) => assert_eq!(allowed, [Method::GET, Method::PATCH]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.find(&Method::GET, "/api/v1/nothing"), RouteMatch::NotFound));
        assert!(matches!(t.find(&Method::GET, "/api/v1/users/"), RouteMatch::NotFound));
    }

    /// A probe service compiled at test time, with or without its annotation.
    fn probe_pool(annotated: bool) -> DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        let option = if annotated {
            r#"option (google.api.http) = {get: "/api/v1/probe/{name}"};"#
        } else {
            ""
        };
        let proto = format!(
            "syntax = \"proto3\";\npackage probe.v1;\nimport \"google/api/annotations.proto\";\n\
             message PingRequest {{ string name = 1; uint32 times = 2; }}\nmessage PingResponse {{ string echo = 1; }}\n\
             service Probe {{ rpc Ping(PingRequest) returns (PingResponse) {{ {option} }} }}\n"
        );
        std::fs::write(dir.path().join("probe.proto"), proto).unwrap();
        let contracts = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
        let mut compiler = protox::Compiler::new([dir.path().to_str().unwrap(), contracts]).unwrap();
        compiler.include_imports(true).open_file("probe.proto").unwrap();
        DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
    }

    #[test]
    fn an_rpc_is_routed_only_because_of_its_annotation() {
        let annotated = RouteTable::from_pool(&probe_pool(true), &["probe.v1.Probe"]).unwrap();
        let (rpc, bindings) = found(&annotated, Method::GET, "/api/v1/probe/sonar");
        assert_eq!((rpc.as_str(), bindings[0].1.as_str()), ("Ping", "sonar"));
        let bare = RouteTable::from_pool(&probe_pool(false), &["probe.v1.Probe"]).unwrap();
        assert!(bare.routes().is_empty());
        assert!(matches!(
            bare.find(&Method::GET, "/api/v1/probe/sonar"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn templates_reject_what_the_gateway_cannot_serve() {
        assert!(PathTemplate::parse("/a/{b=c/*}").is_err());
        assert!(PathTemplate::parse("a/b").is_err());
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%2"), None);
    }
}
