//! Choosing the device, port and GID, and the errors when there is nothing
//! to choose. Runs in the Soft-RoCE guest (`RXE_DEV` set: a filter that
//! matches nothing, or a GID index the port lacks, is an error that says
//! what is there) and on the host in CI (no device at all: an error that
//! says how to get one).
#![cfg(feature = "verbs")]

use std::time::Duration;

use oxccl::{Config, Error};
use oxccl_rdma::config::RdmaConfig;
use oxccl_rdma::verbs::Device;

fn config(vars: &[(&str, &str)]) -> RdmaConfig {
    let cfg = Config { timeout: Duration::from_secs(5), slice_bytes: 4096, algorithm: None, ..Config::default() };
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    RdmaConfig::from_vars(&cfg, |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).unwrap()
}

fn message(r: oxccl::Result<std::sync::Arc<Device>>) -> String {
    match r {
        Ok(d) => panic!("opened {d:?}"),
        Err(Error::System(m) | Error::InvalidArgument(m)) => m,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn devices_are_chosen_or_refused_with_what_is_there() {
    let Ok(dev) = std::env::var("RXE_DEV") else {
        // No device on this machine.
        let m = message(Device::open(&config(&[])));
        assert!(m.contains("no RDMA device found") && m.contains("rdma link add"), "{m}");
        return;
    };
    let d = Device::open(&config(&[])).unwrap();
    assert_eq!(d.name(), dev);
    assert_eq!(d.port(), 1);
    assert!(d.is_ethernet());
    // The guest's /init picks the IPv4-mapped RoCE v2 GID, as the default does.
    let want: u8 = std::env::var("RXE_GID_INDEX").unwrap().parse().unwrap();
    assert_eq!(d.gid_index(), want);
    assert_eq!(&d.address().gid[10..], &[0xff, 0xff, 127, 0, 0, 1]);

    let exact = Device::open(&config(&[("OXCCL_IB_HCA", &format!("={dev}:1"))])).unwrap();
    assert_eq!(exact.name(), dev);

    let m = message(Device::open(&config(&[("OXCCL_IB_HCA", "mlx5")])));
    assert!(m.contains("no usable RDMA port") && m.contains(&dev), "{m}");
    let m = message(Device::open(&config(&[("OXCCL_IB_HCA", &format!("^{dev}"))])));
    assert!(m.contains(&dev), "{m}");
    let m = message(Device::open(&config(&[("OXCCL_IB_HCA", &format!("{dev}:2"))])));
    assert!(m.contains("no usable RDMA port"), "{m}");
    let m = message(Device::open(&config(&[("OXCCL_IB_GID_INDEX", "77")])));
    assert!(m.contains("OXCCL_IB_GID_INDEX=77") && m.contains(&dev), "{m}");
}
