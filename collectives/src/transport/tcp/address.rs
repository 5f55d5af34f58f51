//! Choosing the address a rank listens on (and so the network its peers
//! reach it through).
//!
//! In order of precedence:
//! 1. an explicit address ([`TcpConfig::addr`], `OXCCL_SOCKET_ADDR`: an IP,
//!    or IP:port);
//! 2. an interface filter ([`TcpConfig::ifname`], `OXCCL_SOCKET_IFNAME`, with
//!    `NCCL_SOCKET_IFNAME`'s syntax: a comma-separated list of name
//!    prefixes, `=` before the list for exact names, `^` to exclude
//!    instead): the first interface that is up, matches, and has an IPv4
//!    address;
//! 3. loopback when every rank runs on this host ([`TcpConfig::all_local`]);
//! 4. the first non-loopback IPv4 address of an interface that is up, else
//!    loopback.
//!
//! [`TcpConfig::addr`]: super::TcpConfig::addr
//! [`TcpConfig::ifname`]: super::TcpConfig::ifname
//! [`TcpConfig::all_local`]: super::TcpConfig::all_local

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::error::{Error, Result};

/// One IPv4 address of a network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addr: Ipv4Addr,
    pub up: bool,
    pub loopback: bool,
}

/// Every IPv4 address of every interface, in the order the system lists them.
pub fn interfaces() -> Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocates into `head`,
    // which is a valid place for it; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::last_os_error("getifaddrs"));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which stays
        // valid until freeifaddrs below.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a socket address of the node, at least a
        // sockaddr header long.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in; read unaligned to be
        // safe whatever the allocation's alignment.
        let sin = unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_in) };
        // SAFETY: ifa_name is a NUL-terminated string owned by the node.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        let flags = ifa.ifa_flags;
        out.push(Interface {
            name,
            addr: Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference
    // into the list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// An interface filter in `NCCL_SOCKET_IFNAME` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfFilter {
    exclude: bool,
    exact: bool,
    names: Vec<String>,
}

impl IfFilter {
    pub fn parse(s: &str) -> IfFilter {
        let mut s = s.trim();
        let exclude = s.starts_with('^');
        if exclude {
            s = &s[1..];
        }
        let exact = s.starts_with('=');
        if exact {
            s = &s[1..];
        }
        let names = s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        IfFilter { exclude, exact, names }
    }

    pub fn matches(&self, name: &str) -> bool {
        let hit = self.names.iter().any(|n| if self.exact { name == n } else { name.starts_with(n.as_str()) });
        hit != self.exclude
    }
}

/// The address to listen on, from the configuration and the interfaces.
pub fn choose(
    addr: Option<SocketAddr>,
    ifname: Option<&str>,
    all_local: bool,
    interfaces: &[Interface],
) -> Result<SocketAddr> {
    if let Some(a) = addr {
        return Ok(a);
    }
    let any_port = |ip: Ipv4Addr| SocketAddr::new(IpAddr::V4(ip), 0);
    if let Some(f) = ifname {
        let filter = IfFilter::parse(f);
        return interfaces.iter().find(|i| i.up && filter.matches(&i.name)).map(|i| any_port(i.addr)).ok_or_else(
            || {
                let have: Vec<String> = interfaces.iter().map(|i| format!("{} {}", i.name, i.addr)).collect();
                Error::InvalidArgument(format!(
                    "OXCCL_SOCKET_IFNAME={f}: no interface that is up matches (IPv4 interfaces: {})",
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ))
            },
        );
    }
    if all_local {
        return Ok(any_port(Ipv4Addr::LOCALHOST));
    }
    Ok(any_port(interfaces.iter().find(|i| i.up && !i.loopback).map_or(Ipv4Addr::LOCALHOST, |i| i.addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addr: [u8; 4], loopback: bool) -> Interface {
        Interface { name: name.into(), addr: addr.into(), up: true, loopback }
    }

    #[test]
    fn filters_follow_nccl_syntax() {
        let f = IfFilter::parse("eth,ib");
        assert!(f.matches("eth0") && f.matches("ib1") && !f.matches("lo"));
        let f = IfFilter::parse("^docker,lo");
        assert!(!f.matches("docker0") && !f.matches("lo") && f.matches("eth0"));
        let f = IfFilter::parse("=eth0");
        assert!(f.matches("eth0") && !f.matches("eth01"));
        let f = IfFilter::parse("^=lo");
        assert!(!f.matches("lo") && f.matches("lo2"));
    }

    #[test]
    fn choice_in_order_of_precedence() {
        let ifs = [
            iface("lo", [127, 0, 0, 1], true),
            iface("docker0", [172, 17, 0, 1], false),
            iface("eth0", [10, 0, 0, 5], false),
        ];
        let ip = |s: SocketAddr| s.ip().to_string();
        let explicit: SocketAddr = "10.9.9.9:1234".parse().unwrap();
        assert_eq!(choose(Some(explicit), Some("eth"), true, &ifs).unwrap(), explicit);
        assert_eq!(ip(choose(None, Some("eth"), true, &ifs).unwrap()), "10.0.0.5");
        assert_eq!(ip(choose(None, Some("^docker,lo"), false, &ifs).unwrap()), "10.0.0.5");
        assert_eq!(ip(choose(None, Some("lo"), false, &ifs).unwrap()), "127.0.0.1");
        assert_eq!(ip(choose(None, None, true, &ifs).unwrap()), "127.0.0.1");
        assert_eq!(ip(choose(None, None, false, &ifs).unwrap()), "172.17.0.1");
        assert_eq!(ip(choose(None, None, false, &ifs[..1]).unwrap()), "127.0.0.1");
        let err = choose(None, Some("wlan"), false, &ifs).unwrap_err();
        assert!(err.to_string().contains("wlan") && err.to_string().contains("eth0 10.0.0.5"), "{err}");
    }

    #[test]
    fn this_machine_has_loopback() {
        let ifs = interfaces().unwrap();
        assert!(ifs.iter().any(|i| i.loopback && i.addr == Ipv4Addr::LOCALHOST), "{ifs:?}");
    }
}
