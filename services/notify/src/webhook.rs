//! Webhooks as the Standard Webhooks specification has them: `whsec_`
//! secrets, `v1` HMAC-SHA256 signatures over `{id}.{timestamp}.{body}`, and
//! the three `webhook-*` headers; and the guard that keeps them off the
//! fleet's own network: `https` only, and only public addresses, checked on
//! every address a name resolves to, at the moment of connecting.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ring::hmac;
use url::Url;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification allows 24 to 64).
const SECRET_BYTES: usize = 32;
/// How long an attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `v1,<base64>` signature of a message under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| anyhow::anyhow!("a webhook secret is not base64"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Which URLs webhooks may go to (`notify.webhooks.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Allow `http` URLs (development and tests).
    pub allow_http: bool,
    /// Allow loopback, private, link-local and other non-public addresses
    /// (development and tests).
    pub allow_private_networks: bool,
}

/// Why an address may not be called: `None` for a public one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private (RFC 1918) address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if a == 0 || ip.is_broadcast() || a >= 240 {
        Some("a reserved address")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (18..20).contains(&b)) || ip.is_documentation() {
        Some("a special-purpose address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |s: [u16; 8]| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_loopback() || ip.is_unspecified() {
        Some("a loopback or unspecified address")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("a unique local address")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        Some("a documentation address")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // IPv4-compatible and NAT64 forms reach the IPv4 address they embed.
        forbidden_v4(embedded_v4(segments)).or(Some("an IPv4-embedding address"))
    } else if segments[0] == 0x2002 {
        // 6to4 carries an IPv4 address in its second and third segments.
        let v4 = Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        );
        forbidden_v4(v4)
    } else {
        None
    }
}

/// Checks a webhook URL as far as it can be without DNS: scheme, host,
/// credentials, and a literal address. The URL, or why not.
pub fn check_url(raw: &str, settings: WebhookSettings) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "must be an absolute https URL".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_http => {}
        "http" => return Err("must use https".into()),
        _ => return Err("must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let literal = match url.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = literal
        && !settings.allow_private_networks
        && let Some(why) = forbidden(ip)
    {
        return Err(format!("must not point to {why}"));
    }
    Ok(url)
}

/// Resolves `host` and checks every address it resolves to.
pub async fn resolve_checked(host: &str, port: u16, settings: WebhookSettings) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("host {host} does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host {host} does not resolve"));
    }
    if !settings.allow_private_networks
        && let Some(why) = addrs.iter().find_map(|a| forbidden(a.ip()))
    {
        return Err(format!("must not point to {why} ({host} resolves to one)"));
    }
    Ok(addrs)
}

/// Checks a URL a user sets, resolving its host.
pub async fn check_url_resolving(raw: &str, settings: WebhookSettings) -> Result<Url, String> {
    let url = check_url(raw, settings)?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        resolve_checked(host, port, settings).await?;
    }
    Ok(url)
}

/// The resolver the webhook client connects through: a name whose
/// addresses are not all allowed resolves to nothing.
struct GuardedResolver(WebhookSettings);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let settings = self.0;
        Box::pin(async move {
            let addrs = resolve_checked(name.as_str(), 0, settings).await.map_err(|why| {
                let err: Box<dyn std::error::Error + Send + Sync> = why.into();
                err
            })?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code, if the endpoint answered.
    pub status: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed, or "".
    pub error: String,
    /// The `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl Answer {
    fn failed(error: String, started: Instant) -> Self {
        Self {
            status: None,
            latency: started.elapsed(),
            error,
            retry_after: None,
        }
    }
}

/// Posts signed messages.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl WebhookClient {
    /// A client under `settings`: 15 s per attempt, no redirects followed.
    pub fn new(settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(settings)))
            .user_agent(concat!("fleet-notify/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Self { client, settings })
    }

    /// Posts `body` to `url` as message `id`, signed with `signatures`.
    pub async fn post(&self, url: &str, id: &str, timestamp: i64, body: String, signatures: &str) -> Answer {
        let started = Instant::now();
        if let Err(why) = check_url(url, self.settings) {
            return Answer::failed(format!("the URL {why}"), started);
        }
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = if code == 429 || code == 503 {
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after)
                } else {
                    None
                };
                // The body is not read: what the endpoint says is not kept.
                drop(response);
                let error = if (200..300).contains(&code) {
                    String::new()
                } else {
                    format!("the endpoint answered {code}")
                };
                Answer {
                    status: Some(code),
                    latency: started.elapsed(),
                    error,
                    retry_after,
                }
            }
            Err(err) => {
                let why = if err.is_timeout() {
                    "no answer within 15 s".to_string()
                } else if err.is_connect() {
                    format!("could not connect: {}", root_cause(&err))
                } else {
                    root_cause(&err)
                };
                Answer::failed(why, started)
            }
        }
    }
}

fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(raw: &str) -> Option<Duration> {
    if let Ok(secs) = raw.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_test_vector_signs_alike() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn new_secrets_are_whsec_and_32_random_bytes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let key = STANDARD.decode(a.strip_prefix(SECRET_PREFIX).unwrap()).unwrap();
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn only_public_addresses_are_allowed() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
        ] {
            assert!(forbidden(refused.parse().unwrap()).is_some(), "{refused} allowed");
        }
        for allowed in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert_eq!(forbidden(allowed.parse().unwrap()), None, "{allowed} refused");
        }
    }

    #[tokio::test]
    async fn urls_are_refused_by_default_and_allowed_when_settings_say_so() {
        let strict = WebhookSettings::default();
        for refused in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.0.0.8/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://localhost/hook",
            "ftp://example.com/hook",
            "not a url",
            "https://user:pass@example.com/hook",
        ] {
            assert!(check_url_resolving(refused, strict).await.is_err(), "{refused} allowed");
        }
        let open = WebhookSettings {
            allow_http: true,
            allow_private_networks: true,
        };
        for allowed in [
            "http://127.0.0.1:8080/hook",
            "https://localhost/hook",
            "http://[::1]:9/x",
        ] {
            assert!(check_url_resolving(allowed, open).await.is_ok(), "{allowed} refused");
        }
        assert!(check_url_resolving("ftp://127.0.0.1/", open).await.is_err());
    }

    #[test]
    fn retry_after_takes_seconds() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
