//! Where a login came from, coarsely enough that a browser update or a new
//! address from the same provider is not news: the user agent's family and
//! the network (IPv4 by /24, IPv6 by /64).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A login's device and network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    /// The user agent's family (`Firefox`, `Chrome`, `curl`...).
    pub family: String,
    /// The network (`198.51.100.0/24`, `2001:db8:1:2::/64`), or the raw
    /// address when it is not one.
    pub network: String,
}

/// Products a user agent names, most specific first: Edge and Opera say
/// "Chrome" too, and Chrome says "Safari".
const FAMILIES: [(&str, &str); 9] = [
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
];

impl Device {
    /// The device of a login from `ip` with `user_agent`.
    pub fn of(user_agent: &str, ip: &str) -> Self {
        Self {
            family: family(user_agent),
            network: network(ip),
        }
    }
}

/// The family of a user agent: a known browser, else the first product's
/// name (`curl/8.5` → `curl`), else "unknown".
pub fn family(user_agent: &str) -> String {
    if let Some((_, name)) = FAMILIES.iter().find(|(token, _)| user_agent.contains(token)) {
        return (*name).to_string();
    }
    let product = user_agent.split_whitespace().next().unwrap_or("");
    let name = product.split('/').next().unwrap_or("").trim();
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name.chars().take(64).collect()
    }
}

/// The network of an address: IPv4 by /24, IPv6 by /64, an IPv4-mapped IPv6
/// address as its IPv4 one.
pub fn network(ip: &str) -> String {
    let Ok(addr) = ip.trim().parse::<IpAddr>() else {
        return ip.chars().take(64).collect();
    };
    let net = match addr.to_canonical() {
        IpAddr::V4(v4) => Ipv4Net::new(v4, 24).map(|n| IpNet::V4(n.trunc())),
        IpAddr::V6(v6) => Ipv6Net::new(v6, 64).map(|n| IpNet::V6(n.trunc())),
    };
    net.map_or_else(|_| addr.to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_common_agents() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let chrome = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
        let edge = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/126.0 Safari/537.36 Edg/126.0";
        let safari = "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
        assert_eq!(family(firefox), "Firefox");
        assert_eq!(family(chrome), "Chrome");
        assert_eq!(family(edge), "Edge");
        assert_eq!(family(safari), "Safari");
        assert_eq!(family("curl/8.5.0"), "curl");
        assert_eq!(family(""), "unknown");
    }

    #[test]
    fn networks_group_neighbours() {
        assert_eq!(network("198.51.100.7"), "198.51.100.0/24");
        assert_eq!(network("198.51.100.200"), "198.51.100.0/24");
        assert_eq!(network("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(network("::ffff:203.0.113.9"), "203.0.113.0/24");
        assert_eq!(network("not an ip"), "not an ip");
    }
}
