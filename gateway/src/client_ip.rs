//! Who the client is: the socket peer, or, behind trusted proxies, the
//! address they report in the one header the operator chose; and the
//! network a rate limit counts it under.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The header trusted proxies report the client in: exactly one is read, so
/// a client cannot pick its address by sending the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For` (what load balancers and nginx set).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ClientIpHeader {
    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }

    /// The addresses of every field line, in order (client first).
    fn chain(self, headers: &HeaderMap) -> Vec<IpAddr> {
        let lines = headers.get_all(self.name()).iter().filter_map(|v| v.to_str().ok());
        let elements = lines.flat_map(|line| line.split(','));
        match self {
            Self::XForwardedFor => elements.filter_map(parse_node).collect(),
            Self::Forwarded => elements
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_node(value))
                            .flatten()
                    })
                })
                .collect(),
        }
    }
}

/// The client's address: the socket peer, unless the peer is a trusted
/// proxy; then the right-most address of `header` (all its field lines)
/// that is not a trusted proxy. A chain of trusted proxies alone, or none
/// that parses, leaves the peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, header: ClientIpHeader, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    header
        .chain(headers)
        .into_iter()
        .map(|ip| ip.to_canonical())
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The network a per-IP limit counts `ip` under: the address itself for
/// IPv4, its `/prefix` for IPv6 (one subscriber usually holds a /64).
pub fn limit_network(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
            let network = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{prefix}")
        }
    }
}

/// An address from `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"` or `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    raw.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let (proxy, stranger) = (ip("10.1.2.3"), ip("198.51.100.9"));
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_ip(stranger, &spoofed, XFF, &trusted), stranger);
        let chain = headers(&[("x-forwarded-for", "203.0.113.5, 10.9.9.9")]);
        assert_eq!(client_ip(proxy, &chain, XFF, &trusted), ip("203.0.113.5"));
        let rfc = headers(&[("forwarded", r#"for=203.0.113.7;proto=https, for="[2001:db8::1]:4711""#)]);
        assert_eq!(
            client_ip(proxy, &rfc, ClientIpHeader::Forwarded, &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), XFF, &trusted), proxy);
        let garbage = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(client_ip(proxy, &garbage, XFF, &trusted), proxy);
    }

    #[test]
    fn only_the_configured_header_is_read_so_the_other_cannot_pick_an_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = ip("10.1.2.3");
        // The proxy sets X-Forwarded-For; the client adds a Forwarded of its own.
        let request = headers(&[("forwarded", "for=192.0.2.99"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_ip(proxy, &request, XFF, &trusted), ip("203.0.113.5"));
        let forwarded = ClientIpHeader::Forwarded;
        let request = headers(&[("x-forwarded-for", "192.0.2.99"), ("forwarded", "for=203.0.113.5")]);
        assert_eq!(client_ip(proxy, &request, forwarded, &trusted), ip("203.0.113.5"));
    }

    #[test]
    fn every_field_line_is_read_and_the_right_most_untrusted_wins() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = ip("10.1.2.3");
        // The client's own line comes first; the proxy appends its line.
        let request = headers(&[
            ("x-forwarded-for", "192.0.2.99"),
            ("x-forwarded-for", "203.0.113.5, 10.0.0.7"),
        ]);
        assert_eq!(client_ip(proxy, &request, XFF, &trusted), ip("203.0.113.5"));
        let mapped = headers(&[("x-forwarded-for", "::ffff:203.0.113.5")]);
        assert_eq!(client_ip(proxy, &mapped, XFF, &trusted), ip("203.0.113.5"));
    }

    #[test]
    fn ipv6_clients_count_by_their_prefix_and_ipv4_by_address() {
        assert_eq!(limit_network(ip("203.0.113.5"), 64), "203.0.113.5");
        assert_eq!(limit_network(ip("::ffff:203.0.113.5"), 64), "203.0.113.5");
        let (a, b) = (ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::2"));
        assert_eq!(limit_network(a, 64), "2001:db8:1:2::/64");
        assert_eq!(limit_network(a, 64), limit_network(b, 64));
        assert_ne!(limit_network(a, 64), limit_network(ip("2001:db8:1:3::1"), 64));
        assert_eq!(limit_network(a, 128), "2001:db8:1:2:aaaa::1/128");
        assert_eq!(limit_network(a, 0), "::/0");
        assert_eq!(limit_network(a, 200), "2001:db8:1:2:aaaa::1/128");
    }
}
