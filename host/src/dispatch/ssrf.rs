//! The SSRF guard: a tenant's `base_url` may only reach a public address
//! over https, unless its exact host is in `RETEN_DISPATCH_ALLOW_HOSTS`.
//!
//! It checks twice. At config time the URL is parsed and its host resolved;
//! a private, loopback, link-local or unspecified address is refused. At send
//! time the dispatcher's client resolves through [`GuardedResolver`], which
//! refuses the same addresses, and the connection then uses exactly the
//! addresses it returned, so a name that changed its answer since (DNS
//! rebinding) is refused then. IP literals never reach a resolver, so
//! [`HostPolicy::check_url`] refuses them before any send.
//!
//! `is_public` is written here because the standard library's
//! `IpAddr::is_global` is not stable; the table follows the IANA special
//! purpose registries.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest `base_url` accepted.
pub const MAX_URL_LEN: usize = 2_048;
/// How long resolving a host at config time may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which hosts dispatch may reach.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Hosts exempt from both rules (https, public address), matched exactly.
    allow: BTreeSet<String>,
    /// Whether hosts that are not allow-listed may be reached at all. Off,
    /// nothing outside the allow list is resolved or reached (tests, sandboxes).
    allow_public: bool,
}

/// Why a URL or an address is refused; the message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The error the guarded resolver fails a connection with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AddressRefused(pub String);

impl HostPolicy {
    /// A policy from the allow list (hostnames or IP literals; IPv6 with or
    /// without brackets) and whether public hosts may be reached.
    pub fn new(allow_hosts: &[String], allow_public: bool) -> Self {
        let allow = allow_hosts
            .iter()
            .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Self { allow, allow_public }
    }

    /// Whether `host` (as a URL names it) is allow-listed. `localhost` is not
    /// `127.0.0.1`: each must be listed as used.
    pub fn is_allowed(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.allow.contains(&bare)
    }

    /// The checks that need no resolver: the scheme, no credentials in the
    /// URL, and an IP literal that must be public.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host_str().ok_or_else(|| Refusal("must name a host".into()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal("must not carry a user name or password; put credentials in `credentials`".into()));
        }
        let allowed = self.is_allowed(host);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            "http" => return Err(Refusal(format!("must be https:// ({host} is not in RETEN_DISPATCH_ALLOW_HOSTS)"))),
            other => return Err(Refusal(format!("must be https://, not {other}://"))),
        }
        if allowed {
            return Ok(());
        }
        if !self.allow_public {
            return Err(Refusal(format!("{host} is not in RETEN_DISPATCH_ALLOW_HOSTS, the only hosts allowed here")));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match literal {
            Some(ip) if !is_public(ip) => Err(Refusal(format!("{host} is not a public address"))),
            _ => Ok(()),
        }
    }

    /// Parses and checks a config's `base_url`, resolving its host: every
    /// address it resolves to must be public (unless it is allow-listed).
    pub async fn check_config_url(&self, raw: &str) -> Result<Url, Refusal> {
        if raw.len() > MAX_URL_LEN {
            return Err(Refusal(format!("must be at most {MAX_URL_LEN} characters")));
        }
        let url = Url::parse(raw).map_err(|e| Refusal(format!("is not a valid URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Refusal("must not have a query or a fragment (`/activities` is appended to it)".into()));
        }
        self.check_url(&url)?;
        let host = url.host_str().unwrap_or_default();
        if self.is_allowed(host) || !matches!(url.host(), Some(url::Host::Domain(_))) {
            return Ok(url);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = resolve(host, port).await.map_err(|e| Refusal(format!("{host} does not resolve: {e}")))?;
        match addrs.iter().find(|a| !is_public(a.ip())) {
            Some(private) => {
                Err(Refusal(format!("{host} resolves to {}, which is not a public address", private.ip())))
            }
            None => Ok(url),
        }
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((host.to_owned(), port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the lookup timed out"))??
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}

/// The dispatcher's resolver: allow-listed names resolve as usual; any other
/// name must resolve to public addresses only, and the connection uses what
/// this returns.
#[derive(Debug)]
pub struct GuardedResolver {
    pub hosts: Arc<HostPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let hosts = Arc::clone(&self.hosts);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed = hosts.is_allowed(&host);
            if !allowed && !hosts.allow_public {
                return Err(Box::new(AddressRefused(format!("{host} is not in RETEN_DISPATCH_ALLOW_HOSTS"))) as _);
            }
            // The port is set by the connector; 0 here.
            let addrs = resolve(&host, 0).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            if !allowed && let Some(private) = addrs.iter().find(|a| !is_public(a.ip())) {
                let why = format!("{host} resolves to {}, which is not a public address", private.ip());
                return Err(Box::new(AddressRefused(why)) as _);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether an address is one the public internet routes: not private,
/// loopback, link-local, unspecified, shared, multicast, documentation or
/// otherwise reserved. IPv6 forms that embed an IPv4 address are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // shared (CGNAT)
        || (a == 169 && b == 254)              // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 168)              // private
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]       // IPv4-compatible (deprecated)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] & 0xfe00) == 0xfc00           // unique local
        || (s[0] & 0xffc0) == 0xfe80           // link-local
        || (s[0] & 0xffc0) == 0xfec0           // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00           // multicast
        || (s[0] == 0x2001 && s[1] == 0xdb8)   // documentation
        || (s[0] == 0x2001 && s[1] == 0)) // Teredo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn private_loopback_link_local_and_unspecified_addresses_are_not_public() {
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(!public(ip), "{ip} counted as public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(public(ip), "{ip} counted as not public");
        }
    }

    #[test]
    fn literals_schemes_and_credentials_are_checked_without_a_resolver() {
        let policy = HostPolicy::new(&[], true);
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        assert!(check("https://10.0.0.1/hooks").is_err());
        assert!(check("https://[::1]/").is_err());
        assert!(check("https://0x7f.1/").is_err(), "the URL parser's IPv4 forms are literals too");
        assert!(check("http://8.8.8.8/").is_err(), "http is refused");
        assert!(check("https://user:pw@8.8.8.8/").is_err());
        assert!(check("ftp://8.8.8.8/").is_err());
        assert!(check("https://8.8.8.8/").is_ok());
        assert!(check("https://hooks.example.com/").is_ok(), "names are checked by resolving them");
    }

    #[test]
    fn the_allow_list_matches_the_exact_host_and_lifts_both_rules() {
        let policy = HostPolicy::new(&["127.0.0.1".into(), "[::1]".into()], false);
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        assert!(check("http://127.0.0.1:8080/").is_ok());
        assert!(check("http://[::1]:8080/").is_ok());
        assert!(check("http://localhost:8080/").is_err(), "localhost is not 127.0.0.1");
        assert!(check("https://8.8.8.8/").is_err(), "without public hosts, only the list");
    }
}
