//! One rank of a test job: initialises a communicator from the launcher's
//! environment (`OXCCL_RANK`, `OXCCL_WORLD_SIZE`, `OXCCL_MASTER_ADDR`, ...,
//! `OXCCL_TRANSPORT`) and runs the scenario its argument names:
//!
//! - `barrier`: one barrier; `rank R ok` and exit 0 (for repeated set-ups).
//! - `device-collectives`: the grid on device memory (an emulated device
//!   per process, staged through the transport), checked; as `collectives`.
//! - `device-loop`: all-reduce 1 MiB of device memory forever, as `loop`.
//! - `device-streamed`: the device grid through stream-ordered calls between
//!   the processes (over shm; 1 KiB device messages), checked.
//! - `device-streamed-loop`: stream-ordered device all-reduces forever, as `loop`.
//! - `collectives`: every collective × algorithm × count × placement, f32
//!   sum and i32 max, checked; `rank R ok` and exit 0, or what was wrong and
//!   exit 1.
//! - `loop [shared] [algo=ring|tree|rhd|direct]`: all-reduce 1 MiB forever
//!   (`shared`: buffers from `alloc_shared`, which `direct` needs across
//!   processes; `algo=`: every call names that algorithm, else the auto
//!   rule picks); `rank R ready` after the first; on an error
//!   `rank R error: <error>` and exit 3.
//! - `wedge [shared] [algo=...]`: as `loop`, but rank 1 sleeps for an hour
//!   after the first call.
//! - `abort [shared] [algo=...]`: as `loop`, but rank 0 aborts the group
//!   after the first call.
//!
//! The options of the loops come in any order after the scenario's name.
//!
//! A watchdog ends the process (exit 4) when its parent dies or after
//! `OXCCL_RANK_LIFETIME` seconds (default 600), so a test that is killed
//! leaves no rank looping behind.

use std::time::Duration;

use oxccl::{Algorithm, Communicator, Config};
use oxccl_tests::scenarios::{self, say, Loop, LoopOptions};
use oxccl_tests::{EXIT_INIT, EXIT_WATCHDOG};

enum Scenario {
    Barrier,
    DeviceCollectives,
    DeviceLoop,
    DeviceStreamed,
    DeviceStreamedLoop,
    Collectives,
    Loop(Loop, LoopOptions),
}

fn usage() -> ! {
    eprintln!(
        "usage: oxccl-rank barrier | collectives | device-collectives | device-loop | device-streamed | \
         device-streamed-loop | \
         (loop | wedge | abort) \
         [shared] [algo=ring|tree|rhd|direct]"
    );
    std::process::exit(64)
}

/// Exits the process when the parent goes away or the lifetime is over.
fn watchdog(rank: &str) {
    let parent = std::os::unix::process::parent_id();
    let lifetime = std::env::var("OXCCL_RANK_LIFETIME")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(600), Duration::from_secs_f64);
    let rank = rank.to_string();
    let began = std::time::Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        if std::os::unix::process::parent_id() != parent {
            say(&format!("rank {rank} watchdog: parent {parent} is gone, exiting"));
            std::process::exit(EXIT_WATCHDOG);
        }
        if began.elapsed() > lifetime {
            say(&format!("rank {rank} watchdog: lifetime of {lifetime:?} is over, exiting"));
            std::process::exit(EXIT_WATCHDOG);
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = LoopOptions::default();
    for a in args.iter().skip(1) {
        if a == "shared" && !opts.shared {
            opts.shared = true;
        } else if let Some(name) = a.strip_prefix("algo=").filter(|_| opts.algorithm.is_none()) {
            match name.parse::<Algorithm>() {
                Ok(algo) => opts.algorithm = Some(algo),
                Err(e) => {
                    eprintln!("{e}");
                    usage()
                }
            }
        } else {
            usage()
        }
    }
    let plain = opts == LoopOptions::default();
    let scenario = match args.first().map(String::as_str) {
        Some("barrier") if plain => Scenario::Barrier,
        Some("collectives") if plain => Scenario::Collectives,
        Some("device-collectives") if plain => Scenario::DeviceCollectives,
        Some("device-loop") if plain => Scenario::DeviceLoop,
        Some("device-streamed") if plain => Scenario::DeviceStreamed,
        Some("device-streamed-loop") if plain => Scenario::DeviceStreamedLoop,
        Some("loop") => Scenario::Loop(Loop::Plain, opts),
        Some("wedge") => Scenario::Loop(Loop::Wedge, opts),
        Some("abort") => Scenario::Loop(Loop::Abort, opts),
        _ => usage(),
    };
    let env_rank = std::env::var("OXCCL_RANK").unwrap_or_else(|_| "?".into());
    watchdog(&env_rank);
    // Small device messages, so that the streamed grid cuts its buffers.
    let config = match scenario {
        Scenario::DeviceStreamed => Config { device_slice_bytes: 1024, ..Config::default() },
        _ => Config::default(),
    };
    let comm = match Communicator::init(config) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("rank {env_rank} error: init: {e}"));
            std::process::exit(EXIT_INIT);
        }
    };
    let r = comm.rank();
    let transport = if scenarios::shares_memory(&comm) { "shm" } else { "tcp" };
    say(&format!("rank {r} pid {} transport {transport} world {}", std::process::id(), comm.world()));
    match scenario {
        Scenario::DeviceStreamed => std::process::exit(oxccl_tests::device::device_streamed(comm)),
        Scenario::DeviceStreamedLoop => std::process::exit(oxccl_tests::device::device_streamed_loop(comm)),
        _ => {}
    }
    let code = match scenario {
        Scenario::Barrier => scenarios::barrier(&comm),
        Scenario::Collectives => scenarios::collectives(&comm),
        Scenario::DeviceCollectives => oxccl_tests::device::device_collectives(&comm),
        Scenario::DeviceLoop => oxccl_tests::device::device_loop(&comm),
        Scenario::DeviceStreamed | Scenario::DeviceStreamedLoop => unreachable!("run above"),
        Scenario::Loop(kind, opts) => scenarios::looping(&comm, kind, opts),
    };
    // Skip the communicator's orderly teardown only on failure; a clean
    // end drops it (TCP lets peers take what was sent).
    if code == 0 {
        drop(comm);
    }
    std::process::exit(code)
}
