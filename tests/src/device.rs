//! Device memory in rank processes: each process has an emulated device of
//! its own, and the staged algorithms (ring, tree, halving-doubling) carry
//! device data through the transport's host slots — what ranks on
//! different hosts do with GPU buffers ([`oxccl::Communicator::run_in`]
//! with an [`EmuSpace`]); `direct`, which must reach peers' device memory,
//! is refused with a clear error.
//!
//! [`device_collectives`] runs the test kit's grid on device buffers (the
//! inputs uploaded, the call run, the outputs downloaded and checked);
//! [`device_streamed`] runs it through the stream-ordered calls between
//! processes (areas shared through emulated IPC handles);
//! [`device_loop`] all-reduces 1 MiB of device memory over and over, for
//! the failure tests.

use std::sync::Arc;
use std::time::Instant;

use oxccl::{Algorithm, Call, Collective, Communicator, DType, ReduceOp, Regions};
use oxccl_cuda::{EmuBuffer, EmuDevice, EmuPlatform, EmuSpace, EmuStream, StreamComm};
use oxccl_testkit::call::{Memory, Output};
use oxccl_testkit::grid::{Buffers, Grid};
use oxccl_testkit::Num;

use crate::scenarios::{end, say, LOOP_ELEMENTS};

/// Per-rank counts of the device grid: the emulated reducer kernels take
/// milliseconds a launch, so the largest count is smaller than the host's.
pub const COUNTS: [usize; 5] = [0, 1, 7, 1001, 20_011];

/// A process's emulated device and the memory space its calls use.
pub struct Device {
    dev: Arc<EmuDevice>,
    space: EmuSpace,
}

impl Device {
    pub fn new() -> Device {
        let dev = EmuPlatform::new(1).device(0).expect("one emulated device");
        let space = EmuSpace::new(dev.new_stream());
        Device { dev, space }
    }

    fn upload<T: Num>(&self, data: &[T]) -> oxccl::Result<EmuBuffer> {
        let sys = |e: oxccl_cuda::Error| oxccl::Error::System(e.to_string());
        let buf = self.dev.alloc(std::mem::size_of_val(data)).map_err(sys)?;
        buf.upload(bytemuck::cast_slice(data)).map_err(sys)?;
        Ok(buf)
    }
}

impl Default for Device {
    fn default() -> Self {
        Device::new()
    }
}

fn download<T: Num>(buf: &EmuBuffer) -> Vec<T> {
    buf.download().chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}

impl Memory for Device {
    fn run<T: Num>(
        &self,
        comm: &Communicator,
        call: &Call,
        input: &[T],
        in_place: bool,
        _shared: bool,
    ) -> oxccl::Result<Output<T>> {
        let (n, r, c, count) = (comm.world(), comm.rank(), call.collective, call.count);
        let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
        if in_place {
            let (io, oo) = c.in_place_offsets(r, count);
            let mut whole = vec![T::poison(); c.in_place_len(n, count)];
            whole[io..io + in_len].copy_from_slice(input);
            let buf = self.upload(&whole)?;
            // SAFETY: the buffer is this device's memory and lives until after the call.
            unsafe { comm.run_in(&self.space, call, Regions::InPlace(buf.region())) }?;
            Ok(Output { out: download::<T>(&buf)[oo..oo + out_len].to_vec(), input_kept: true })
        } else {
            let (send, recv) = (self.upload(input)?, self.upload(&vec![T::poison(); out_len])?);
            let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
            // SAFETY: both are this device's memory and live until after the call.
            unsafe { comm.run_in(&self.space, call, bufs) }?;
            Ok(Output { out: download(&recv), input_kept: download::<T>(&send) == input })
        }
    }
}

/// The device grid: ring, tree and halving-doubling, every collective ×
/// [`COUNTS`] × placement, f32 sum and i32 max, and f32 avg all-reduces.
pub fn grid() -> Grid {
    grid_of(&COUNTS)
}

/// Counts of the stream-ordered grid between processes: 1001 and 4099
/// floats take several 1 KiB messages.
pub const STREAMED_COUNTS: [usize; 5] = [0, 1, 7, 1001, 4099];

/// [`grid`] at other counts.
pub fn grid_of(counts: &[usize]) -> Grid {
    let mut grid = Grid::new();
    for algo in [Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling] {
        grid = grid.every_collective(Some(algo), DType::F32, ReduceOp::Sum, counts, Buffers::Heap).every_collective(
            Some(algo),
            DType::I32,
            ReduceOp::Max,
            counts,
            Buffers::Heap,
        );
        for count in [7, 1001] {
            for in_place in [false, true] {
                grid = grid.cell(oxccl_testkit::Cell::new(
                    Collective::AllReduce,
                    algo,
                    DType::F32,
                    ReduceOp::Avg,
                    count,
                    in_place,
                ));
            }
        }
    }
    grid
}

/// The device-collectives scenario; returns the process's exit status.
pub fn device_collectives(comm: &Communicator) -> i32 {
    let r = comm.rank();
    let began = Instant::now();
    let device = Device::new();
    let mut wrong = Vec::new();
    if let Err(w) = direct_is_refused(comm, &device) {
        wrong.push(w);
    }
    end(r, grid().run_rank_in(comm, &device), wrong, began, "device calls")
}

/// Direct on device memory across processes: an invalid argument naming
/// the algorithm, and the communicator still works.
fn direct_is_refused(comm: &Communicator, device: &Device) -> Result<(), String> {
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 4,
        root: 0,
        algorithm: Some(Algorithm::Direct),
    };
    match device.run::<f32>(comm, &call, &[1.0; 4], false, false) {
        Err(oxccl::Error::InvalidArgument(m)) if m.contains("direct") => {}
        other => return Err(format!("direct on device memory across processes: {:?}", other.map(|o| o.out))),
    }
    let ok = device.run::<f32>(comm, &Call { algorithm: Some(Algorithm::Ring), ..call }, &[1.0; 4], false, false);
    match ok {
        Ok(o) if o.out == vec![comm.world() as f32; 4] => Ok(()),
        other => Err(format!("the call after direct was refused: {:?}", other.map(|o| o.out))),
    }
}

/// All-reduces [`LOOP_ELEMENTS`] floats of device memory with the ring
/// over and over, checking each result; `rank R ready` after the first.
/// Returns only on an error (`rank R error: ...`, exit status 3).
pub fn device_loop(comm: &Communicator) -> i32 {
    let (r, n) = (comm.rank(), comm.world());
    let device = Device::new();
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: LOOP_ELEMENTS,
        root: 0,
        algorithm: Some(Algorithm::Ring),
    };
    let want = (n * (n + 1) / 2) as f32;
    let mut first = true;
    loop {
        match device.run::<f32>(comm, &call, &vec![(r + 1) as f32; LOOP_ELEMENTS], false, false) {
            Ok(o) if o.out.iter().all(|&x| x == want) => {}
            Ok(_) => {
                say(&format!("rank {r} wrong: device all-reduce"));
                return crate::EXIT_WRONG;
            }
            Err(e) => {
                say(&format!("rank {r} error: {e}"));
                return crate::EXIT_LOOP_ERROR;
            }
        }
        if std::mem::take(&mut first) {
            say(&format!("rank {r} ready"));
        }
    }
}

/// Stream-ordered calls between rank processes: a [`StreamComm`] per
/// process on its own emulated device, the ranks' areas shared through
/// emulated IPC handles, calls enqueued on a stream and waited for.
pub struct Streamed {
    sc: StreamComm,
    stream: EmuStream,
}

impl Memory for Streamed {
    fn run<T: Num>(
        &self,
        _comm: &Communicator,
        call: &Call,
        input: &[T],
        in_place: bool,
        _shared: bool,
    ) -> oxccl::Result<Output<T>> {
        let (n, r, c, count) = (self.sc.world(), self.sc.rank(), call.collective, call.count);
        let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
        let sys = |e: oxccl_cuda::Error| oxccl::Error::System(e.to_string());
        let dev = self.sc.device();
        let upload = |data: &[T]| -> oxccl::Result<EmuBuffer> {
            let buf = dev.alloc(std::mem::size_of_val(data)).map_err(sys)?;
            buf.upload(bytemuck::cast_slice(data)).map_err(sys)?;
            Ok(buf)
        };
        let run = |bufs: Regions| -> oxccl::Result<()> {
            // SAFETY: the buffers live until after the stream is waited for, just below.
            unsafe { self.sc.enqueue(call, bufs, &self.stream) }?;
            self.stream.synchronize().map_err(|e| self.sc.async_error().unwrap_or(oxccl::Error::System(e.to_string())))
        };
        if in_place {
            let (io, oo) = c.in_place_offsets(r, count);
            let mut whole = vec![T::poison(); c.in_place_len(n, count)];
            whole[io..io + in_len].copy_from_slice(input);
            let buf = upload(&whole)?;
            run(Regions::InPlace(buf.region()))?;
            Ok(Output { out: download::<T>(&buf)[oo..oo + out_len].to_vec(), input_kept: true })
        } else {
            let (send, recv) = (upload(input)?, upload(&vec![T::poison(); out_len])?);
            run(Regions::OutOfPlace { send: send.region(), recv: recv.region() })?;
            Ok(Output { out: download(&recv), input_kept: download::<T>(&send) == input })
        }
    }
}

/// The stream-ordered scenario: the device grid through [`Streamed`],
/// direct refused with a clear error; returns the process's exit status.
pub fn device_streamed(comm: Communicator) -> i32 {
    let r = comm.rank();
    let began = Instant::now();
    let dev = EmuPlatform::new(1).device(0).expect("one emulated device");
    let sc = match StreamComm::init(comm, dev.clone()) {
        Ok(sc) => sc,
        Err(e) => {
            say(&format!("rank {r} error: {e}"));
            return crate::EXIT_WRONG;
        }
    };
    let mem = Streamed { sc, stream: dev.new_stream() };
    let mut wrong = Vec::new();
    let direct = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 4,
        root: 0,
        algorithm: Some(Algorithm::Direct),
    };
    match mem.run::<f32>(mem.sc.communicator(), &direct, &[1.0; 4], false, false) {
        Err(oxccl::Error::InvalidArgument(m)) if m.contains("direct") => {}
        other => wrong.push(format!("direct between processes: {:?}", other.map(|o| o.out))),
    }
    let report = grid_of(&STREAMED_COUNTS).run_rank_in(mem.sc.communicator(), &mem);
    end(r, report, wrong, began, "stream-ordered calls")
}

/// All-reduces 64 Ki floats of device memory over and over through the
/// stream-ordered calls between processes (ring, one message a step, the
/// host's reducers), checking each result; `rank R ready` after the first.
/// Returns only on an error, reported by the async-error query
/// (`rank R error: ...`, exit status 3).
pub fn device_streamed_loop(comm: Communicator) -> i32 {
    let (r, n) = (comm.rank(), comm.world());
    let platform = EmuPlatform::with_reducer(1, oxccl_cuda::Reducer::Host);
    let dev = platform.device(0).expect("one emulated device");
    let sc = match StreamComm::init(comm, dev.clone()) {
        Ok(sc) => sc,
        Err(e) => {
            say(&format!("rank {r} error: {e}"));
            return crate::EXIT_LOOP_ERROR;
        }
    };
    let stream = dev.new_stream();
    let count = 64 << 10;
    let (send, recv) = (dev.alloc(count * 4).expect("device memory"), dev.alloc(count * 4).expect("device memory"));
    send.upload(bytemuck::cast_slice(&vec![(r + 1) as f32; count])).expect("upload");
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count,
        root: 0,
        algorithm: Some(Algorithm::Ring),
    };
    let want = (n * (n + 1) / 2) as f32;
    let mut first = true;
    loop {
        let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
        // SAFETY: the buffers live until the stream is waited for, just below.
        let ran = unsafe { sc.enqueue(&call, bufs, &stream) }.and_then(|()| {
            stream.synchronize().map_err(|e| sc.async_error().unwrap_or(oxccl::Error::System(e.to_string())))
        });
        if let Err(e) = ran {
            say(&format!("rank {r} error: {}", sc.async_error().unwrap_or(e)));
            return crate::EXIT_LOOP_ERROR;
        }
        if download::<f32>(&recv).iter().any(|&x| x != want) {
            say(&format!("rank {r} wrong: stream-ordered all-reduce"));
            return crate::EXIT_WRONG;
        }
        if std::mem::take(&mut first) {
            say(&format!("rank {r} ready"));
        }
    }
}
