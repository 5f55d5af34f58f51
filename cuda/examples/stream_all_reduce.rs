//! Stream-ordered all-reduce on device memory, as in the README: two ranks
//! (threads) on one emulated device, each enqueues the call on its stream,
//! which returns at once; the stream holds the sum once it has run. Then
//! each rank captures an in-place all-reduce into a graph and replays it
//! three times: every replay doubles the buffer again.
//!
//! `cargo run --release -p oxccl-cuda --example stream_all_reduce`

use oxccl::{Call, Collective, Config, DType, ReduceOp, Regions};
use oxccl_cuda::{EmuPlatform, StreamComm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0)?;
    let comms = StreamComm::local_group(&[dev.clone(), dev.clone()], Config::default())?;
    std::thread::scope(|s| {
        for comm in comms {
            let dev = dev.clone();
            s.spawn(move || {
                let stream = dev.new_stream();
                let (send, recv) = (dev.alloc(4096).unwrap(), dev.alloc(4096).unwrap());
                send.upload(bytemuck::cast_slice(&[1f32; 1024])).unwrap();
                let call = Call {
                    collective: Collective::AllReduce,
                    dtype: DType::F32,
                    op: ReduceOp::Sum,
                    count: 1024,
                    root: 0,
                    algorithm: None,
                };
                let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                // SAFETY: the buffers outlive the stream's work (synchronized below).
                unsafe { comm.enqueue(&call, bufs, &stream) }.unwrap(); // returns at once
                stream.synchronize().unwrap(); // recv now holds 2.0 in every element
                assert!(comm.async_error().is_none());
                let sum: Vec<f32> =
                    recv.download().chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
                assert!(sum.iter().all(|&x| x == 2.0));
                println!("rank {}: 1024 sums of 2.0", comm.rank());

                // The call has run once on this buffer (sizing the rank's memory): capture it.
                stream.begin_capture().unwrap();
                // SAFETY: `recv` outlives the replays (synchronized below).
                unsafe { comm.enqueue(&call, Regions::InPlace(recv.region()), &stream) }.unwrap();
                let graph = stream.end_capture().unwrap();
                for _ in 0..3 {
                    graph.launch(&stream).unwrap();
                }
                stream.synchronize().unwrap(); // 2 · 2³ in every element
                let replayed: Vec<f32> =
                    recv.download().chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
                assert!(replayed.iter().all(|&x| x == 16.0), "{:?}", &replayed[..4]);
                println!("rank {}: three replays, 1024 values of 16.0", comm.rank());
            });
        }
    });
    Ok(())
}
