//! The session cookie: where a browser keeps the one field of a route marked
//! `(fleet.api.v1.session_cookie)` (the refresh token) out of reach of
//! script. A client asks for it per request with `Fleet-Session: cookie`;
//! the cookie is `__Host-` prefixed (Secure, `Path=/`, no domain), HttpOnly
//! and SameSite=Strict, and lasts the browser session. A cross-site page
//! can neither send it (SameSite) nor add the header without a CORS
//! preflight the gateway refuses to origins it does not allow.

use http::{HeaderMap, HeaderValue, header};
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

/// The cookie's name.
pub const COOKIE: &str = "__Host-fleet_session";

/// The request header by which a client asks for the cookie.
pub const HEADER: &str = "fleet-session";

const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Strict";

/// Whether the request asks for the cookie (`Fleet-Session: cookie`).
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"))
}

/// The cookie's value in the request, if it has one that is not empty.
pub fn read(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` keeping `value`, or `None` when it is not a valid cookie
/// value (RFC 6265 cookie-octets), which is then not kept.
pub fn keep(value: &str) -> Option<HeaderValue> {
    let octets = |b: u8| {
        b == 0x21
            || (0x23..=0x2b).contains(&b)
            || (0x2d..=0x3a).contains(&b)
            || (0x3c..=0x5b).contains(&b)
            || (0x5d..=0x7e).contains(&b)
    };
    if value.is_empty() || !value.bytes().all(octets) {
        return None;
    }
    HeaderValue::try_from(format!("{COOKIE}={value}; {ATTRIBUTES}")).ok()
}

/// `Set-Cookie` that removes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static("__Host-fleet_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Sets the request's `field` from the cookie when the client left it
/// empty.
pub fn fill(message: &mut DynamicMessage, field: &str, cookie: Option<&str>) {
    let (Some(desc), Some(cookie)) = (message.descriptor().get_field_by_name(field), cookie) else {
        return;
    };
    if message.get_field(&desc).as_str().is_none_or(str::is_empty) {
        message.set_field(&desc, Value::String(cookie.to_string()));
    }
}

/// Takes the answer's `field` out of it (it stays, empty): the value to
/// keep in the cookie, or `None` when the answer has no such value.
pub fn take(message: &mut DynamicMessage, field: &str) -> Option<String> {
    let desc = message.descriptor().get_field_by_name(field)?;
    let value = message.get_field(&desc).as_str().map(str::to_string)?;
    message.clear_field(&desc);
    Some(value).filter(|v| !v.is_empty())
}

/// The `Set-Cookie` of a successful answer: keeps the answer's value, or
/// clears the cookie when the answer has none (a logout).
pub fn after_success(message: &mut DynamicMessage, field: &str) -> HeaderValue {
    take(message, field).and_then(|v| keep(&v)).unwrap_or_else(clear)
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn message(name: &str) -> DynamicMessage {
        let pool = DescriptorPool::decode(fleet_proto::FILE_DESCRIPTOR_SET).unwrap();
        DynamicMessage::new(pool.get_message_by_name(name).unwrap())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_a_request_that_asks_uses_the_cookie() {
        assert!(requested(&headers(&[("fleet-session", "cookie")])));
        assert!(requested(&headers(&[("fleet-session", " Cookie ")])));
        assert!(!requested(&headers(&[("fleet-session", "body")])));
        assert!(!requested(&headers(&[])));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_in_any_cookie_header() {
        let one = headers(&[("cookie", "a=1; __Host-fleet_session=tok-1_x; b=2")]);
        assert_eq!(read(&one), Some("tok-1_x"));
        let split = headers(&[("cookie", "a=1"), ("cookie", "__Host-fleet_session=\"tok\"")]);
        assert_eq!(read(&split), Some("tok"));
        // Another cookie whose name merely contains it, or an empty one, is none.
        let other = headers(&[("cookie", "x__Host-fleet_session=no; __Host-fleet_session=")]);
        assert_eq!(read(&other), None);
    }

    #[test]
    fn the_cookie_is_host_only_secure_http_only_and_strict() {
        let set = keep("abc-_.~123").unwrap();
        assert_eq!(
            set.to_str().unwrap(),
            "__Host-fleet_session=abc-_.~123; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "é"] {
            assert!(keep(bad).is_none(), "{bad:?}");
        }
        let cleared = clear();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.starts_with("__Host-fleet_session=;"));
        assert!(cleared.ends_with(&format!("{ATTRIBUTES}; Max-Age=0")));
    }

    #[test]
    fn an_empty_request_field_is_filled_and_a_given_one_kept() {
        let mut refresh = message("fleet.auth.v1.RefreshRequest");
        fill(&mut refresh, "refresh_token", Some("from-cookie"));
        assert_eq!(
            refresh.get_field_by_name("refresh_token").unwrap().as_str(),
            Some("from-cookie")
        );
        fill(&mut refresh, "refresh_token", Some("another"));
        assert_eq!(
            refresh.get_field_by_name("refresh_token").unwrap().as_str(),
            Some("from-cookie")
        );
        // A request without the field (a login) is left alone.
        let mut login = message("fleet.auth.v1.LoginRequest");
        fill(&mut login, "refresh_token", Some("x"));
        assert_eq!(login.fields().count(), 0);
    }

    #[test]
    fn the_answer_field_moves_into_the_cookie_and_an_answer_without_one_clears_it() {
        let mut answer = message("fleet.auth.v1.LoginResponse");
        answer.set_field_by_name("refresh_token", Value::String("r1".into()));
        answer.set_field_by_name("access_token", Value::String("a1".into()));
        let set = after_success(&mut answer, "refresh_token");
        assert!(set.to_str().unwrap().starts_with("__Host-fleet_session=r1;"));
        assert_eq!(answer.get_field_by_name("refresh_token").unwrap().as_str(), Some(""));
        assert_eq!(answer.get_field_by_name("access_token").unwrap().as_str(), Some("a1"));
        // The first step of a login with 2FA on has no token yet: nothing is kept.
        let mut pending = message("fleet.auth.v1.LoginResponse");
        assert_eq!(after_success(&mut pending, "refresh_token"), clear());
        let mut empty = message("google.protobuf.Empty");
        assert_eq!(after_success(&mut empty, "refresh_token"), clear());
    }
}
