//! Where a webhook may be sent. An endpoint URL is a request this service makes on a user's
//! behalf from inside its own network, so a URL that reaches loopback, a private network, the
//! cloud's metadata address or any other address that is not the public internet is refused:
//! at registration, and again at each delivery, because what a name resolves to can change.
//! An IP literal is checked as it is; a name is checked by what it resolves to, every address
//! of it (see [`crate::resolver`], which makes the connection use only the checked addresses).
//!
//! An operator can allow named networks (`WEBHOOK_ALLOWED_NETWORKS`, for receivers on a
//! company network, and for tests on loopback) and refuse plain `http` (`WEBHOOK_HTTPS_ONLY`).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::LazyLock;
use url::{Host, Url};

/// The longest endpoint URL taken.
pub const MAX_URL_BYTES: usize = 2048;

/// What may be sent where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Networks allowed although they are not public.
    pub allowed_networks: AllowedNetworks,
    /// Whether plain `http` URLs are refused.
    pub https_only: bool,
}

/// Networks an operator allows although they are not public (`10.1.0.0/16, ::1`; an address
/// alone is a network of one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<IpNet>);

impl AllowedNetworks {
    /// These networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }
}

impl FromStr for AllowedNetworks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{item}` is not a network (`10.0.0.0/8`) or an address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// Why a destination is refused. The messages are for the endpoint's owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a URL.
    #[error("the webhook URL is not a URL: {0}")]
    NotUrl(String),
    /// Longer than [`MAX_URL_BYTES`].
    #[error("the webhook URL is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    /// Neither `http` nor `https`, or `http` where only `https` is allowed.
    #[error("the webhook URL must use {allowed}, not `{scheme}`")]
    Scheme {
        /// The URL's scheme.
        scheme: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A user name or password in the URL, which would be sent and logged with it.
    #[error(
        "the webhook URL must not carry a user name or password; put a token in its path or query"
    )]
    Credentials,
    /// The URL names no host.
    #[error("the webhook URL names no host")]
    NoHost,
    /// The host's name does not resolve.
    #[error("the webhook URL's host `{0}` does not resolve to any address")]
    Unresolvable(String),
    /// The host is, or resolves to, an address that is not on the public internet.
    #[error(
        "the webhook URL's host `{host}` is {ip}, a {range} address; webhooks go to public addresses only"
    )]
    Forbidden {
        /// The host as the URL names it.
        host: String,
        /// The address refused.
        ip: IpAddr,
        /// The kind of address it is.
        range: &'static str,
    },
}

impl DestinationPolicy {
    /// Checks a URL's form and, when its host is an IP literal, the address; a host name is
    /// checked when it is resolved ([`DestinationPolicy::resolve`]).
    pub fn check_url(&self, text: &str) -> Result<Url, Refusal> {
        if text.len() > MAX_URL_BYTES {
            return Err(Refusal::TooLong);
        }
        let url = Url::parse(text).map_err(|error| Refusal::NotUrl(error.to_string()))?;
        let allowed = if self.https_only {
            "https"
        } else {
            "http or https"
        };
        match url.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            other => {
                return Err(Refusal::Scheme {
                    scheme: other.to_owned(),
                    allowed,
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(&format!("[{ip}]"), IpAddr::V6(ip))?,
            Some(Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Checks one address `host` stands for.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if self.allowed_networks.contains(ip) {
            return Ok(());
        }
        match forbidden_range(ip) {
            Some(range) => Err(Refusal::Forbidden {
                host: host.to_owned(),
                ip,
                range,
            }),
            None => Ok(()),
        }
    }

    /// Checks `url` and every address its host resolves to; the addresses, each with the
    /// URL's port, when all of them may be used.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refusal> {
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(Host::Ipv4(ip)) => {
                self.check_ip(&ip.to_string(), IpAddr::V4(ip))?;
                Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)])
            }
            Some(Host::Ipv6(ip)) => {
                self.check_ip(&format!("[{ip}]"), IpAddr::V6(ip))?;
                Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)])
            }
            Some(Host::Domain(name)) => self.resolve_name(name, port).await,
        }
    }

    /// Every address `name` resolves to, if all of them may be used: a name with one private
    /// address among public ones is refused, since the connection could go to any of them.
    pub async fn resolve_name(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| Refusal::Unresolvable(name.to_owned()))?
            .collect();
        if addresses.is_empty() {
            return Err(Refusal::Unresolvable(name.to_owned()));
        }
        for address in &addresses {
            self.check_ip(name, address.ip())?;
        }
        Ok(addresses)
    }
}

/// The kind of address `ip` is when it is not a public one.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(ip) => v4_range(ip),
        IpAddr::V6(ip) => v6_range(ip),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    in_table(&V4_RANGES, IpAddr::V4(ip))
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    // Prefixes that carry an IPv4 address: the address they lead to is what is judged.
    let segments = ip.segments();
    let embedded_v4 =
        |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64's well-known prefix.
        return v4_range(embedded_v4(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        // 6to4.
        return v4_range(embedded_v4(segments[1], segments[2]));
    }
    in_table(&V6_RANGES, IpAddr::V6(ip))
}

fn in_table(table: &[(IpNet, &'static str)], ip: IpAddr) -> Option<&'static str> {
    table
        .iter()
        .find(|(network, _)| network.contains(&ip))
        .map(|(_, name)| *name)
}

fn table(entries: &[(&str, &'static str)]) -> Vec<(IpNet, &'static str)> {
    entries
        .iter()
        .map(|(network, name)| (network.parse().expect("a valid network"), *name))
        .collect()
}

/// IPv4 space that is not the public internet (IANA's special-purpose registry).
static V4_RANGES: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    table(&[
        ("0.0.0.0/8", "\"this network\" (unspecified)"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (and broadcast)"),
    ])
});

/// IPv6 space that is not the public internet.
static V6_RANGES: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    table(&[
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    ])
});

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_off_the_public_internet_are_named() {
        for (address, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "\"this network\" (unspecified)"),
            ("10.0.0.5", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.100.0.1", "shared (carrier-grade NAT)"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("192.0.2.7", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.7", "documentation"),
            ("198.19.0.1", "benchmarking"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "reserved (and broadcast)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("64:ff9b::a00:5", "private"),
            ("2002:a9fe:a9fe::1", "link-local (cloud metadata)"),
            ("::7f00:1", "IPv4-compatible (deprecated)"),
            ("fd00::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol"),
            ("fd00:ec2::254", "unique local (private)"),
        ] {
            assert_eq!(forbidden_range(ip(address)), Some(range), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(forbidden_range(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn urls_are_checked_for_form_and_literal_addresses() {
        let policy = DestinationPolicy::default();
        assert!(
            policy
                .check_url("https://hooks.example.com/mp3?token=abc")
                .is_ok()
        );
        assert!(policy.check_url("http://93.184.215.14:8080/hook").is_ok());
        for (url, says) in [
            ("http://127.0.0.1:9000/", "127.0.0.1, a loopback address"),
            ("http://[::1]/", "::1, a loopback address"),
            ("http://10.0.0.5/", "10.0.0.5, a private address"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "link-local (cloud metadata)",
            ),
            ("http://[::ffff:7f00:1]/", "127.0.0.1, a loopback address"),
            ("http://2130706433/", "127.0.0.1, a loopback address"),
            ("http://0x7f.1/", "127.0.0.1, a loopback address"),
            ("ftp://example.com/", "must use http or https, not `ftp`"),
            ("https://user:pw@example.com/", "user name or password"),
            ("not a url", "not a URL"),
        ] {
            let refused = policy.check_url(url).unwrap_err().to_string();
            assert!(refused.contains(says), "{url}: {refused}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(policy.check_url(&long), Err(Refusal::TooLong));
    }

    #[test]
    fn https_only_refuses_plain_http() {
        let policy = DestinationPolicy {
            https_only: true,
            ..DestinationPolicy::default()
        };
        let refused = policy.check_url("http://example.com/").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the webhook URL must use https, not `http`"
        );
        assert!(policy.check_url("https://example.com/").is_ok());
    }

    #[test]
    fn allowed_networks_let_named_private_addresses_through_and_nothing_else() {
        let allowed: AllowedNetworks = "127.0.0.0/8, ::1, 10.1.0.0/16".parse().unwrap();
        let policy = DestinationPolicy {
            allowed_networks: allowed,
            https_only: false,
        };
        for address in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"] {
            assert!(policy.check_ip(address, ip(address)).is_ok(), "{address}");
        }
        for address in ["10.2.0.1", "169.254.169.254", "fe80::1"] {
            assert!(policy.check_ip(address, ip(address)).is_err(), "{address}");
        }
        let bad = "10.0.0.0/33".parse::<AllowedNetworks>().unwrap_err();
        assert!(bad.contains("`10.0.0.0/33`"), "{bad}");
        assert_eq!(
            "".parse::<AllowedNetworks>().unwrap(),
            AllowedNetworks::default()
        );
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_it_resolves_to() {
        let policy = DestinationPolicy::default();
        let url = policy.check_url("http://localhost:9/hook").unwrap();
        let refused = policy.resolve(&url).await.unwrap_err();
        assert!(
            matches!(&refused, Refusal::Forbidden { host, range: "loopback", .. } if host == "localhost"),
            "{refused:?}"
        );
        let unknown = policy.check_url("http://no-such-host.invalid/").unwrap();
        assert_eq!(
            policy.resolve(&unknown).await,
            Err(Refusal::Unresolvable("no-such-host.invalid".into()))
        );
    }
}
