//! Smoke test of the verbs stack the transport stands on, in the Soft-RoCE guest.
//!
//! It runs only inside the guest (`rdma/guest/run.sh`, which CI's `rdma/guest/ci.sh` calls), where
//! `RXE_DEV` names the device; anywhere else it fails and says so. It checks the chain end to end:
//! the `ibverbs` crate's bindings (generated from its bundled rdma-core headers) against the
//! system `libibverbs`, which must load the rxe provider; the device's GID table and the
//! transport's default GID choice on it; and two RC queue pairs of this process, connected to each
//! other, carrying one message from a send to a posted receive.
#![cfg(feature = "verbs")]

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use ibverbs::ibv_wc_opcode::{IBV_WC_RECV, IBV_WC_SEND};
use oxccl_rdma::config::default_gid_index;

/// `IBV_GID_TYPE_ROCE_V2` of `enum ibv_gid_type` (verbs.h).
const ROCE_V2: ibverbs::ibv_gid_type = 2;
/// Bytes of the message.
const LEN: usize = 4096;
const SEND_ID: u64 = 1;
const RECV_ID: u64 = 2;
/// Longest wait for the two completions (emulated machine: generous).
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn rc_send_recv_between_two_queue_pairs_of_one_process() {
    let want = std::env::var("RXE_DEV").unwrap_or_else(|_| {
        panic!(
            "RXE_DEV is not set: this test runs only inside the Soft-RoCE guest, through \
             rdma/guest/run.sh (CI: rdma/guest/ci.sh), which sets it to the guest's rxe device"
        )
    });

    // The device, by name.
    let devices = ibverbs::devices().expect("ibv_get_device_list");
    let names: Vec<String> =
        devices.iter().map(|d| d.name().map_or("?".into(), |n| n.to_string_lossy().into_owned())).collect();
    println!("verbs devices: {names:?}");
    let dev = devices
        .iter()
        .find(|d| d.name().is_some_and(|n| n.to_bytes() == want.as_bytes()))
        .unwrap_or_else(|| panic!("RXE_DEV={want} is not among the verbs devices {names:?}"));
    let ctx = dev.open().unwrap_or_else(|e| panic!("opening {want}: {e}"));
    check_libraries(&want);

    // Its GID table, and the GID the transport would pick by default: the one the guest chose.
    let table: Vec<(u8, [u8; 16], bool)> = ctx
        .gid_table()
        .iter()
        .map(|e| {
            let mut gid = [0; 16];
            gid[..8].copy_from_slice(&e.gid.subnet_prefix().to_be_bytes());
            gid[8..].copy_from_slice(&e.gid.interface_id().to_be_bytes());
            (u8::try_from(e.gid_index).expect("GID index over 255"), gid, e.gid_type == ROCE_V2)
        })
        .collect();
    for (i, gid, v2) in &table {
        println!("gid[{i}] {} ({})", Ipv6Addr::from(*gid), if *v2 { "RoCE v2" } else { "RoCE v1" });
    }
    let gid_index = default_gid_index(&table);
    if let Ok(guest) = std::env::var("RXE_GID_INDEX") {
        assert_eq!(gid_index.to_string(), guest, "default_gid_index disagrees with the guest's pick");
    }
    println!("using gid index {gid_index}");

    // Protection domain, completion queue, registered memory: [message sent | received].
    let pd = ctx.alloc_pd().expect("ibv_alloc_pd");
    let cq = ctx.create_cq(16, 0).expect("ibv_create_cq");
    let mut mr = pd.allocate::<u8>(2 * LEN).expect("ibv_reg_mr");
    for (i, b) in mr[..LEN].iter_mut().enumerate() {
        *b = (i * 7 + 1) as u8;
    }

    // Two RC queue pairs, each connected to the other.
    let qp = || {
        pd.create_qp(&cq, &cq, ibverbs::ibv_qp_type::IBV_QPT_RC)
            .set_gid_index(u32::from(gid_index))
            .build()
            .expect("ibv_create_qp")
    };
    let (a, b) = (qp(), qp());
    let (ea, eb) = (a.endpoint(), b.endpoint());
    println!("queue pairs {} and {}", ea.num, eb.num);
    let mut a = a.handshake(eb).expect("connecting the first queue pair to the second");
    let mut b = b.handshake(ea).expect("connecting the second queue pair to the first");

    // One message, from a send on `a` into a receive posted on `b`.
    // SAFETY: both ranges lie in `mr`, which is neither read nor written nor dropped until both
    // work requests have completed (the queue pairs are dropped first if the test panics).
    unsafe { b.post_receive(&mut mr, LEN.., RECV_ID) }.expect("ibv_post_recv");
    // SAFETY: as above.
    unsafe { a.post_send(&mut mr, ..LEN, SEND_ID) }.expect("ibv_post_send");
    let start = Instant::now();
    let mut completions = [ibverbs::ibv_wc::default(); 4];
    let (mut sent, mut received) = (false, false);
    while !(sent && received) {
        assert!(start.elapsed() < DEADLINE, "no completion after {DEADLINE:?} (sent: {sent}, received: {received})");
        for wc in cq.poll(&mut completions).expect("ibv_poll_cq") {
            if let Some((status, vendor)) = wc.error() {
                panic!("work request {} failed: status {status}, vendor error {vendor}", wc.wr_id());
            }
            match (wc.wr_id(), wc.opcode()) {
                (SEND_ID, IBV_WC_SEND) => sent = true,
                (RECV_ID, IBV_WC_RECV) => {
                    assert_eq!(wc.len(), LEN, "bytes received");
                    received = true;
                }
                (id, op) => panic!("unexpected completion: work request {id}, opcode {op}"),
            }
        }
        std::thread::yield_now();
    }
    println!("{LEN} bytes sent and received in {:?}", start.elapsed());
    assert!(mr[LEN..] == mr[..LEN], "the received bytes differ from those sent");
}

/// Prints the verbs libraries mapped into this process; for an rxe device, the rxe provider
/// must be one of them (libibverbs loaded it when the device list was built).
fn check_libraries(device: &str) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let mut libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("libibverbs") || p.contains("rdmav"))
        .collect();
    libs.dedup();
    println!("verbs libraries loaded: {libs:?}");
    if device.starts_with("rxe") {
        assert!(libs.iter().any(|p| p.contains("librxe")), "the rxe provider is not loaded: {libs:?}");
    }
}
