//! The SSRF policy for hosts a client chooses (`x-portkey-custom-host`,
//! `custom_host` in a config).
//!
//! A custom host must be `http` or `https`, carry no credentials, and reach only
//! public addresses — private (RFC 1918, CGNAT, unique-local), link-local, cloud
//! metadata, unspecified, multicast and reserved addresses are refused — unless the
//! server config allow-lists the network or host name. Loopback is allowed by
//! default so local model servers (Ollama, LM Studio, vLLM) work; turn it off in
//! shared deployments with `ssrf.allow_loopback = false`.
//!
//! Names are checked where they are resolved: the client for custom hosts uses
//! [`GuardedResolver`], so a name that resolves (or re-resolves, DNS rebinding) to a
//! refused address never gets a connection. Hosts from the server's own config are
//! trusted and use a separate client.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Names that are cloud metadata services whatever they resolve to.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// What client-chosen hosts may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct SsrfPolicy {
    /// Allow 127.0.0.0/8 and ::1 (default true).
    pub allow_loopback: bool,
    /// Networks allowed whatever their class.
    pub allow_nets: Vec<IpNet>,
    /// Host names allowed whatever they resolve to (lower case).
    pub allow_hosts: Vec<String>,
}

impl Default for SsrfPolicy {
    fn default() -> Self {
        Self {
            allow_loopback: true,
            allow_nets: Vec::new(),
            allow_hosts: Vec::new(),
        }
    }
}

/// A refusal, kept as a distinct error type so it can be found again inside a
/// connection error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl SsrfPolicy {
    /// Adds one allow-list entry: a CIDR, an IP address or a host name.
    pub fn allow(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            self.allow_nets.push(net);
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            self.allow_nets.push(IpNet::from(ip));
        } else if !entry.is_empty()
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            self.allow_hosts.push(entry.to_ascii_lowercase());
        } else {
            return Err(format!(
                "`{entry}` is not a CIDR, an IP address or a host name"
            ));
        }
        Ok(())
    }

    /// Whether `host` is allow-listed by name.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow_hosts.contains(&host)
    }

    /// Checks what can be checked without DNS: scheme, credentials, literal
    /// addresses and metadata host names.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "scheme `{}` is not allowed; use http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("credentials in the URL are not allowed".into()));
        }
        match url.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_HOSTS.contains(&lower.as_str()) && !self.host_allowed(&lower) {
                    Err(Refused(format!("`{name}` is a cloud metadata service")))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks one resolved (or literal) address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Loopback if self.allow_loopback => Ok(()),
            class => Err(Refused(format!(
                "{ip} is a {} address; allow it under [ssrf] in the server config if it is meant",
                class.name()
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    Unspecified,
    Multicast,
    Reserved,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Metadata => "cloud metadata",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }
}

/// IPv4-mapped and NAT64 IPv6 addresses are judged as the IPv4 they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, d] = ip.octets();
    match (a, b, c, d) {
        (169, 254, 169, 254) | (100, 100, 100, 200) => Class::Metadata,
        (0, ..) => Class::Unspecified,
        (127, ..) => Class::Loopback,
        (10, ..) | (192, 168, ..) => Class::Private,
        (172, 16..=31, ..) => Class::Private,
        (100, 64..=127, ..) => Class::Private,
        (169, 254, ..) => Class::LinkLocal,
        (224..=239, ..) => Class::Multicast,
        (240..=255, ..) => Class::Reserved,
        (192, 0, 0, _) | (198, 18..=19, ..) => Class::Reserved,
        _ => Class::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_unspecified() {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if s[0] == 0xfd00 && s[1] == 0x0ec2 && s[7] == 0x254 && s[2..7].iter().all(|x| *x == 0) {
        Class::Metadata
    } else if s[0] & 0xfe00 == 0xfc00 {
        Class::Private
    } else if s[0] & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        Class::Multicast
    } else if s[0] & 0xe000 == 0x2000 {
        Class::Public
    } else {
        // Outside 2000::/3 nothing is globally routed unicast.
        Class::Reserved
    }
}

/// The resolver of the client for custom hosts: resolves, then keeps only the
/// addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<SsrfPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.host_allowed(&host) {
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(Refused(why))) => {
                    Err(Box::new(Refused(format!("`{host}` resolves to {why}")))
                        as Box<dyn std::error::Error + Send + Sync>)
                }
                (true, None) => Err(Box::new(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{host}` has no addresses"),
                ))
                    as Box<dyn std::error::Error + Send + Sync>),
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Finds a [`Refused`] in an error's source chain.
pub fn find_refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &SsrfPolicy, url: &str) -> Result<(), String> {
        policy
            .check_url(&url::Url::parse(url).map_err(|e| e.to_string())?)
            .map_err(|e| e.0)
    }

    #[test]
    fn refuses_private_link_local_and_metadata_by_default() {
        let p = SsrfPolicy::default();
        for url in [
            "http://10.1.2.3/v1",
            "http://172.20.0.1/v1",
            "http://192.168.1.1/v1",
            "http://100.64.0.1/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.10.10/",
            "http://100.100.100.200/",
            "http://0.0.0.0:8080/",
            "http://[::]/",
            "http://[fd00:ec2::254]/",
            "http://[fc00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://224.0.0.1/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
        ] {
            assert!(check(&p, url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn allows_public_and_loopback_by_default() {
        let p = SsrfPolicy::default();
        for url in [
            "https://api.example.com/v1",
            "http://8.8.8.8/",
            "http://127.0.0.1:11434/v1",
            "http://[::1]:8000/v1",
            "https://[2606:4700::1111]/",
        ] {
            assert_eq!(check(&p, url), Ok(()), "{url}");
        }
        let strict = SsrfPolicy {
            allow_loopback: false,
            ..SsrfPolicy::default()
        };
        assert!(check(&strict, "http://127.0.0.1/").is_err());
    }

    #[test]
    fn the_allow_list_opens_networks_and_names() {
        let mut p = SsrfPolicy::default();
        p.allow("10.0.0.0/8").expect("cidr");
        p.allow("192.168.1.7").expect("ip");
        p.allow("Models.Internal").expect("host");
        assert!(p.allow("not a host!").is_err());
        assert_eq!(check(&p, "http://10.9.9.9/v1"), Ok(()));
        assert_eq!(check(&p, "http://192.168.1.7/v1"), Ok(()));
        assert!(check(&p, "http://192.168.1.8/v1").is_err());
        assert!(p.host_allowed("models.internal."));
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        let strict = Arc::new(SsrfPolicy {
            allow_loopback: false,
            ..SsrfPolicy::default()
        });
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let err = match GuardedResolver::new(strict).resolve(name).await {
            Ok(_) => panic!("localhost must be refused when loopback is off"),
            Err(e) => e,
        };
        assert!(find_refusal(err.as_ref()).is_some(), "{err}");

        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addrs: Vec<_> = GuardedResolver::new(Arc::new(SsrfPolicy::default()))
            .resolve(name)
            .await
            .map_err(|e| e.to_string())
            .expect("loopback allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
