//! How a rank's RDMA transport is set up: which device, port and GID it
//! uses, and the slot size and deadline it takes from the communicator.
//!
//! Environment ([`RdmaConfig::from_env`]):
//! - `OXCCL_IB_HCA`: the devices (and ports) to use, in `NCCL_IB_HCA`
//!   syntax ([`HcaFilter`]): a comma-separated list of `name[:port]`; names
//!   are prefixes unless the list starts with `=` (exact names); a leading
//!   `^` turns it into a list to avoid. `mlx5_0:1,mlx5_1:1` uses port 1 of
//!   the two devices, `^=mlx5_1` every device but `mlx5_1`.
//! - `OXCCL_IB_GID_INDEX`: the GID table index the rank is addressed by
//!   (RoCE). Unset: [`default_gid_index`] picks one from the port's table.
//!
//! An empty variable counts as unset; a malformed one is
//! [`Error::InvalidArgument`] naming the variable, its value and what is
//! wrong with it.

#![forbid(unsafe_code)]

use std::net::Ipv6Addr;
use std::time::Duration;

use oxccl::{Config, Error, Result};

/// How a rank's RDMA transport is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Devices and ports to use or avoid; `OXCCL_IB_HCA`. `None`: any.
    pub hca: Option<HcaFilter>,
    /// Use this port of the device (ports are numbered from 1). `None`: the
    /// first active port that [`RdmaConfig::hca`] admits. Not read from the
    /// environment: a port named in `OXCCL_IB_HCA` narrows the filter.
    pub port: Option<u8>,
    /// GID table index of the port to address this rank by;
    /// `OXCCL_IB_GID_INDEX`. `None`: [`default_gid_index`].
    pub gid_index: Option<u8>,
    /// Deadline of connecting, and of any wait on the device or a peer.
    pub timeout: Duration,
    /// Bytes per message: the communicator's slice rounded up to 64. Every
    /// rank must agree.
    pub slot_bytes: usize,
}

impl RdmaConfig {
    /// The transport for a communicator with `config` (its slice and its
    /// timeout): any device, its first active port, the default GID.
    pub fn new(config: &Config) -> RdmaConfig {
        RdmaConfig {
            hca: None,
            port: None,
            gid_index: None,
            timeout: config.timeout,
            slot_bytes: config.slice_bytes.div_ceil(64) * 64,
        }
    }

    /// [`RdmaConfig::new`], then `OXCCL_IB_HCA` and `OXCCL_IB_GID_INDEX`
    /// where set.
    pub fn from_env(config: &Config) -> Result<RdmaConfig> {
        RdmaConfig::from_vars(config, |name| std::env::var(name).ok())
    }

    /// [`RdmaConfig::from_env`] with the variables read through `get`.
    pub fn from_vars(config: &Config, get: impl Fn(&str) -> Option<String>) -> Result<RdmaConfig> {
        let mut c = RdmaConfig::new(config);
        let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if let Some(s) = var("OXCCL_IB_HCA") {
            c.hca = Some(
                HcaFilter::parse_list(&s).map_err(|why| Error::InvalidArgument(format!("OXCCL_IB_HCA={s}: {why}")))?,
            );
        }
        if let Some(s) = var("OXCCL_IB_GID_INDEX") {
            c.gid_index = Some(s.parse().map_err(|_| {
                Error::InvalidArgument(format!("OXCCL_IB_GID_INDEX={s}: not a GID table index (0 ..= 255)"))
            })?);
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        if self.port == Some(0) {
            return Err(Error::InvalidArgument("RDMA port 0 (ports are numbered from 1)".into()));
        }
        if self.slot_bytes == 0 || self.slot_bytes > 1 << 30 || self.slot_bytes % 64 != 0 {
            return Err(Error::InvalidArgument(format!(
                "slots of {} bytes (must be a multiple of 64 in 64 B ..= 1 GiB)",
                self.slot_bytes
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidArgument("zero RDMA timeout".into()));
        }
        Ok(())
    }

    /// The GID index to use on a port whose GID table is `table` (rows as
    /// [`default_gid_index`] takes them): the configured one, which must be
    /// a non-zero GID of the table, else the default.
    pub fn gid_index_for(&self, table: &[(u8, [u8; 16], bool)]) -> Result<u8> {
        let Some(want) = self.gid_index else { return Ok(default_gid_index(table)) };
        if table.iter().any(|&(i, gid, _)| i == want && gid != [0; 16]) {
            return Ok(want);
        }
        let have: Vec<String> =
            table.iter().filter(|(_, gid, _)| *gid != [0; 16]).map(|(i, _, _)| i.to_string()).collect();
        Err(Error::InvalidArgument(format!(
            "OXCCL_IB_GID_INDEX={want}: the port has no GID at that index (it has: {})",
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        )))
    }
}

/// A device and port filter in `NCCL_IB_HCA` syntax.
///
/// A comma-separated list of entries `name[:port]`. A name matches a device
/// whose name starts with it, or only the device of exactly that name when
/// the list starts with `=`; an entry without a port matches every port of
/// the device. A leading `^` (before any `=`) inverts the list: the filter
/// admits what no entry matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcaFilter {
    exclude: bool,
    exact: bool,
    entries: Vec<HcaEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HcaEntry {
    name: String,
    port: Option<u8>,
}

impl HcaFilter {
    /// Parses a filter; an empty list, an entry without a name and a port
    /// that is not a number in 1 ..= 255 are [`Error::InvalidArgument`].
    pub fn parse(s: &str) -> Result<HcaFilter> {
        HcaFilter::parse_list(s).map_err(|why| Error::InvalidArgument(format!("HCA filter {s:?}: {why}")))
    }

    fn parse_list(s: &str) -> std::result::Result<HcaFilter, String> {
        let mut rest = s.trim();
        let exclude = rest.starts_with('^');
        if exclude {
            rest = &rest[1..];
        }
        let exact = rest.starts_with('=');
        if exact {
            rest = &rest[1..];
        }
        let mut entries = Vec::new();
        for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, port) = match item.split_once(':') {
                None => (item, None),
                Some((name, port)) => {
                    let p = port.trim();
                    let port = match p.parse::<u8>() {
                        Ok(0) => return Err(format!("{item}: port 0 (ports are numbered from 1)")),
                        Ok(n) => n,
                        Err(_) => return Err(format!("{item}: port {p:?} is not a number in 1 ..= 255")),
                    };
                    (name.trim(), Some(port))
                }
            };
            if name.is_empty() {
                return Err(format!("{item}: no device name"));
            }
            entries.push(HcaEntry { name: name.to_string(), port });
        }
        if entries.is_empty() {
            return Err("no device names".into());
        }
        Ok(HcaFilter { exclude, exact, entries })
    }

    /// Whether the filter admits port `port` of device `device_name`.
    pub fn matches(&self, device_name: &str, port: u8) -> bool {
        let hit = self.entries.iter().any(|e| {
            let name = if self.exact { device_name == e.name } else { device_name.starts_with(e.name.as_str()) };
            name && e.port.is_none_or(|p| p == port)
        });
        hit != self.exclude
    }
}

/// The GID index a rank uses when none is configured, from its port's GID
/// table: rows of (index, the GID's 16 bytes in network order, whether it
/// is a RoCE v2 GID). All-zero GIDs are empty rows and never chosen.
///
/// In order of preference, the lowest index of:
/// 1. a RoCE v2 GID that is an IPv4-mapped address (`::ffff:a.b.c.d`):
///    routable over IPv4, what RoCE networks are set up for;
/// 2. any other RoCE v2 GID (an IPv6 address, link-local included);
/// 3. index 0 (InfiniBand, RoCE v1 only, or an empty table).
pub fn default_gid_index(table: &[(u8, [u8; 16], bool)]) -> u8 {
    let v2 = || table.iter().filter(|&&(_, gid, v2)| v2 && gid != [0; 16]);
    let ipv4 = |gid: &[u8; 16]| Ipv6Addr::from(*gid).to_ipv4_mapped().is_some();
    v2().filter(|(_, gid, _)| ipv4(gid))
        .map(|&(i, _, _)| i)
        .min()
        .or_else(|| v2().map(|&(i, _, _)| i).min())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn comm_config() -> Config {
        Config { timeout: Duration::from_secs(7), slice_bytes: 100, algorithm: None, ..Config::default() }
    }

    fn gid(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn configuration_from_the_environment() {
        let cfg = comm_config();
        let c = RdmaConfig::from_vars(&cfg, vars(&[])).unwrap();
        assert_eq!(c, RdmaConfig::new(&cfg));
        assert_eq!((c.hca, c.port, c.gid_index, c.timeout, c.slot_bytes), (None, None, None, cfg.timeout, 128));
        let c = RdmaConfig::from_vars(&cfg, vars(&[("OXCCL_IB_HCA", " mlx5_0:1 "), ("OXCCL_IB_GID_INDEX", " 3 ")]))
            .unwrap();
        assert_eq!(c.hca, Some(HcaFilter::parse("mlx5_0:1").unwrap()));
        assert_eq!(c.gid_index, Some(3));
        // Empty counts as unset.
        let c = RdmaConfig::from_vars(&cfg, vars(&[("OXCCL_IB_HCA", " "), ("OXCCL_IB_GID_INDEX", "")])).unwrap();
        assert_eq!(c, RdmaConfig::new(&cfg));
    }

    #[test]
    fn bad_variables_are_invalid_arguments_that_name_them() {
        let cfg = comm_config();
        for (name, value) in [
            ("OXCCL_IB_GID_INDEX", "x"),
            ("OXCCL_IB_GID_INDEX", "-1"),
            ("OXCCL_IB_GID_INDEX", "256"),
            ("OXCCL_IB_HCA", "^"),
            ("OXCCL_IB_HCA", "^="),
            ("OXCCL_IB_HCA", ",,"),
            ("OXCCL_IB_HCA", ":1"),
            ("OXCCL_IB_HCA", "mlx5_0:"),
            ("OXCCL_IB_HCA", "mlx5_0:0"),
            ("OXCCL_IB_HCA", "mlx5_0:x"),
            ("OXCCL_IB_HCA", "mlx5_0:256"),
            ("OXCCL_IB_HCA", "mlx5_0:1:2"),
        ] {
            let e = RdmaConfig::from_vars(&cfg, vars(&[(name, value)])).unwrap_err();
            let Error::InvalidArgument(msg) = &e else { panic!("{name}={value}: {e}") };
            assert!(msg.starts_with(&format!("{name}={value}: ")), "{msg}");
        }
        let e = HcaFilter::parse("mlx5_0:x").unwrap_err().to_string();
        assert_eq!(e, r#"invalid argument: HCA filter "mlx5_0:x": mlx5_0:x: port "x" is not a number in 1 ..= 255"#);
        let zero_timeout = Config { timeout: Duration::ZERO, ..comm_config() };
        assert!(matches!(RdmaConfig::from_vars(&zero_timeout, vars(&[])), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn hca_filter_prefixes_exact_names_ports_and_exclusion() {
        let f = |s: &str| HcaFilter::parse(s).unwrap();
        // Prefixes, any port.
        let p = f("mlx5");
        assert!(p.matches("mlx5_0", 1) && p.matches("mlx5_10", 2) && !p.matches("rxe0", 1));
        // Exact names.
        let e = f("=mlx5_1");
        assert!(e.matches("mlx5_1", 1) && !e.matches("mlx5_10", 1) && !e.matches("mlx5_", 1));
        // Ports per entry.
        let ports = f(" mlx5_0:1 , mlx5_1 : 2 ,");
        assert!(ports.matches("mlx5_0", 1) && !ports.matches("mlx5_0", 2));
        assert!(ports.matches("mlx5_1", 2) && !ports.matches("mlx5_1", 1));
        assert!(!ports.matches("rxe0", 1));
        // Exclusion, by prefix and exactly.
        let x = f("^mlx5_1");
        assert!(x.matches("mlx5_0", 1) && !x.matches("mlx5_1", 1) && !x.matches("mlx5_10", 1));
        let xe = f("^=mlx5_1:1,rxe");
        assert!(!xe.matches("mlx5_1", 1) && xe.matches("mlx5_1", 2) && xe.matches("mlx5_10", 1));
        assert!(!xe.matches("rxe", 1) && xe.matches("rxe0", 1));
    }

    #[test]
    fn default_gid_prefers_ipv4_mapped_roce_v2() {
        let ll = gid("fe80::200:ff:fe00:0");
        let v4 = gid("::ffff:127.0.0.1");
        let v6 = gid("::1");
        // Soft-RoCE on loopback (Linux 6.1): RoCE v2 only.
        assert_eq!(default_gid_index(&[(0, ll, true), (1, v4, true), (2, v6, true)]), 1);
        // A RoCE NIC: each address twice, RoCE v1 then v2.
        let table = [(0, ll, false), (1, ll, true), (2, v4, false), (3, v4, true), (4, v6, false), (5, v6, true)];
        assert_eq!(default_gid_index(&table), 3);
        // The table's order does not matter; the lowest index wins among equals.
        let mut shuffled = table;
        shuffled.reverse();
        assert_eq!(default_gid_index(&shuffled), 3);
        let two_v4 = [(7, v4, true), (6, gid("::ffff:10.0.0.1"), true), (1, ll, true)];
        assert_eq!(default_gid_index(&two_v4), 6);
        // No IPv4-mapped RoCE v2 GID: the first RoCE v2 GID.
        assert_eq!(default_gid_index(&[(0, ll, false), (1, v6, true), (2, v4, false), (3, ll, true)]), 1);
        // Empty rows are never chosen.
        assert_eq!(default_gid_index(&[(0, ll, false), (1, [0; 16], true), (2, v6, true)]), 2);
        // RoCE v1 or InfiniBand only, or nothing: index 0.
        assert_eq!(default_gid_index(&[(0, ll, false), (1, v4, false)]), 0);
        assert_eq!(default_gid_index(&[]), 0);
    }

    #[test]
    fn a_configured_gid_index_must_exist() {
        let table = [(0, gid("fe80::1"), false), (1, gid("fe80::1"), true), (2, [0; 16], true)];
        let c = RdmaConfig::new(&comm_config());
        assert_eq!(c.gid_index_for(&table).unwrap(), 1);
        assert_eq!(RdmaConfig { gid_index: Some(0), ..c.clone() }.gid_index_for(&table).unwrap(), 0);
        for missing in [2, 9] {
            let e = RdmaConfig { gid_index: Some(missing), ..c.clone() }.gid_index_for(&table).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid argument: OXCCL_IB_GID_INDEX={missing}: the port has no GID at that index (it has: 0, 1)"
                )
            );
        }
    }
}
