//! Sends and receives issued as a group (`Communicator::exchange`): every
//! rank sends to every peer before receiving from any, with transfers many
//! times larger than a channel's slots — which would deadlock one transfer
//! at a time — and every byte arrives; grouped transfers pair with plain
//! ones; a size mismatch is an error naming the peer on both sides.

use std::time::Duration;

use oxccl::{Communicator, Config, DType, ErrorKind, P2p};

fn group(n: usize) -> Vec<Communicator> {
    // Slots of 256 bytes: every transfer below takes many messages.
    let config = Config { timeout: Duration::from_secs(20), slice_bytes: 256, algorithm: None, ..Config::default() };
    Communicator::local_group_with(n, config).unwrap()
}

/// The bytes rank `from` sends rank `to` in transfer `k`.
fn payload(from: usize, to: usize, k: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (from * 31 + to * 7 + k * 3 + i) as u8).collect()
}

#[test]
fn every_rank_sends_to_every_peer_before_receiving() {
    for n in [2, 3, 4] {
        for len in [0, 1, 4093, 100_003] {
            let comms = group(n);
            std::thread::scope(|s| {
                for comm in comms {
                    s.spawn(move || {
                        let r = comm.rank();
                        let peers: Vec<usize> = (0..n).filter(|&p| p != r).collect();
                        let outgoing: Vec<Vec<u8>> = peers.iter().map(|&p| payload(r, p, 0, len)).collect();
                        let mut incoming: Vec<Vec<u8>> = peers.iter().map(|_| vec![0u8; len]).collect();
                        let mut ops: Vec<P2p> = Vec::new();
                        for (&p, buf) in peers.iter().zip(&outgoing) {
                            ops.push(P2p::Send { buf, dtype: DType::U8, peer: p });
                        }
                        for (&p, buf) in peers.iter().zip(incoming.iter_mut()) {
                            ops.push(P2p::Recv { buf, dtype: DType::U8, peer: p });
                        }
                        comm.exchange(&mut ops).unwrap_or_else(|e| panic!("{n} ranks, {len} B, rank {r}: {e}"));
                        for (&p, got) in peers.iter().zip(&incoming) {
                            assert!(*got == payload(p, r, 0, len), "{n} ranks, {len} B: rank {r} from {p}");
                        }
                    });
                }
            });
        }
    }
}

/// Two transfers to the same peer in one group keep their order; a grouped
/// send pairs with a plain `recv`, a plain `send` with a grouped receive.
#[test]
fn grouped_transfers_keep_their_order_and_pair_with_plain_ones() {
    let comms = group(2);
    std::thread::scope(|s| {
        for comm in comms {
            s.spawn(move || {
                let (r, p) = (comm.rank(), 1 - comm.rank());
                let (a, b) = (payload(r, p, 0, 3001), payload(r, p, 1, 517));
                let (mut x, mut y) = (vec![0u8; 3001], vec![0u8; 517]);
                let mut ops = vec![
                    P2p::Send { buf: &a, dtype: DType::U8, peer: p },
                    P2p::Send { buf: &b, dtype: DType::U8, peer: p },
                    P2p::Recv { buf: &mut x, dtype: DType::U8, peer: p },
                    P2p::Recv { buf: &mut y, dtype: DType::U8, peer: p },
                ];
                comm.exchange(&mut ops).unwrap();
                assert_eq!((x, y), (payload(p, r, 0, 3001), payload(p, r, 1, 517)));
                // Rank 0 sends plainly and receives in a group; rank 1 the reverse.
                let c = payload(r, p, 2, 999);
                let mut z = vec![0u8; 999];
                if r == 0 {
                    comm.send(&c, p).unwrap();
                    comm.exchange(&mut [P2p::Recv { buf: &mut z, dtype: DType::U8, peer: p }]).unwrap();
                } else {
                    comm.exchange(&mut [P2p::Send { buf: &c, dtype: DType::U8, peer: p }]).unwrap();
                    comm.recv(&mut z, p).unwrap();
                }
                assert_eq!(z, payload(p, r, 2, 999));
            });
        }
    });
}

#[test]
fn a_size_mismatch_is_an_error_on_both_sides() {
    let comms = group(2);
    std::thread::scope(|s| {
        for comm in comms {
            s.spawn(move || {
                let (r, p) = (comm.rank(), 1 - comm.rank());
                // Each rank sends 1000 + its rank bytes and expects one more than its peer
                // sends: both receives mismatch, so neither rank can complete.
                let out = vec![1u8; 1000 + r];
                let mut odd = vec![0u8; 1001 + p];
                // Bad input is refused before anything moves (the group stays usable): not
                // whole elements, a peer out of range.
                let bad = comm.exchange(&mut [P2p::Send { buf: &out[..3], dtype: DType::F32, peer: p }]);
                assert!(bad.unwrap_err().to_string().contains("not whole"), "rank {r}");
                assert!(comm.exchange(&mut [P2p::Send { buf: &out, dtype: DType::U8, peer: 2 }]).is_err());
                let err = comm
                    .exchange(&mut [
                        P2p::Send { buf: &out, dtype: DType::U8, peer: p },
                        P2p::Recv { buf: &mut odd, dtype: DType::U8, peer: p },
                    ])
                    .unwrap_err();
                assert!(matches!(err.kind(), ErrorKind::InvalidUsage | ErrorKind::RemoteFailure), "rank {r}: {err}");
            });
        }
    });
}
