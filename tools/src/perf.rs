//! `oxccl perf <collective>`: an nccl-tests style sweep over local ranks.
//!
//! Flags keep nccl-tests' spellings (`-b -e -f -i -n -w -c -o -d -r`), plus
//! `--ranks`, `--algo`, `--slice`, `--timeout`, `--json` and `--csv`.
//! Exit status: 0 when every checked value is right, 1 when some are wrong or
//! the sweep fails, 2 for bad arguments.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oxccl::bootstrap::connect::TransportKind;
use oxccl::bootstrap::env::Launch;
use oxccl::{Algorithm, Collective, Config, DType, ReduceOp};
use oxccl_bench::{
    handoff, membw, perf, report, sizing, Backend, Floor, MemBw, Memory, Options, Row, SizeRange, Summary,
};

/// A comma-separated list of values, or `all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

fn parse_list<T: FromStr<Err = String> + Clone>(s: &str, all: &[T]) -> Result<List<T>, String> {
    if s.trim() == "all" {
        return Ok(List(all.to_vec()));
    }
    let items: Result<Vec<T>, String> = s.split(',').map(|p| p.trim().parse()).collect();
    let items = items?;
    if items.is_empty() {
        return Err("empty list".into());
    }
    Ok(List(items))
}

fn parse_ops(s: &str) -> Result<List<ReduceOp>, String> {
    parse_list(s, &ReduceOp::ALL)
}

fn parse_dtypes(s: &str) -> Result<List<DType>, String> {
    parse_list(s, &DType::ALL)
}

/// `--algo`: the algorithms to measure (`None`: the communicator's auto
/// rule), and whether they are `all` rather than named: of `all`, the
/// algorithms the group cannot run are skipped; a named one that cannot run
/// is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlgoList {
    pub algos: Vec<Option<Algorithm>>,
    pub all: bool,
}

/// `ring`, `tree`, `rhd`, `direct`, `auto` (the communicator's rule), a
/// comma-separated list of them, or `all` (every algorithm, then auto).
fn parse_algos(s: &str) -> Result<AlgoList, String> {
    if s.trim() == "all" {
        let mut algos: Vec<Option<Algorithm>> = Algorithm::ALL.iter().copied().map(Some).collect();
        algos.push(None);
        return Ok(AlgoList { algos, all: true });
    }
    let items: Result<Vec<Option<Algorithm>>, String> = s
        .split(',')
        .map(|p| match p.trim() {
            "auto" => Ok(None),
            other => other.parse::<Algorithm>().map(Some).map_err(|e| format!("{e}, auto or all")),
        })
        .collect();
    Ok(AlgoList { algos: items?, all: false })
}

/// A collective's name, also as nccl-tests' binary name (`all_reduce_perf`).
fn parse_collective(s: &str) -> Result<Collective, String> {
    let name = s.strip_suffix("_perf").unwrap_or(s);
    name.parse()
}

/// `--transport`: `None` for local (threads of this process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportArg(pub Option<TransportKind>);

fn parse_transport(s: &str) -> Result<TransportArg, String> {
    match s {
        "local" => Ok(TransportArg(None)),
        other => other.parse().map(|k| TransportArg(Some(k))).map_err(|e| format!("{e}, or local")),
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    sizing::parse_size(s)
}

fn parse_slice(s: &str) -> Result<usize, String> {
    match sizing::parse_size(s)? {
        0 => Err("the slice must be at least 1 byte".into()),
        n => Ok(n),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("invalid timeout '{s}' (seconds, e.g. 30 or 0.5)"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("the timeout must be a positive number of seconds, not '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Args, Debug)]
pub struct PerfArgs {
    /// all_reduce, reduce_scatter, all_gather, broadcast, reduce, alltoall or
    /// barrier (nccl-tests' names such as all_reduce_perf work too).
    #[arg(value_parser = parse_collective)]
    pub collective: Collective,

    /// Smallest size in bytes (K, M, G suffixes: 1K = 1024).
    #[arg(short = 'b', long = "minbytes", value_parser = parse_size, default_value = "32M")]
    pub minbytes: usize,

    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", value_parser = parse_size, default_value = "32M")]
    pub maxbytes: usize,

    /// Multiply the size by this factor each step (when above 1).
    #[arg(short = 'f', long = "stepfactor", default_value_t = 1)]
    pub stepfactor: usize,

    /// Otherwise add this many bytes each step.
    #[arg(short = 'i', long = "stepbytes", value_parser = parse_size, default_value = "1M")]
    pub stepbytes: usize,

    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub iters: usize,

    /// Warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub warmup_iters: usize,

    /// Check results (1) or not (0).
    #[arg(short = 'c', long = "check", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=1))]
    pub check: u8,

    /// Reduction: sum, prod, min, max, avg, a comma-separated list, or all.
    #[arg(short = 'o', long = "op", value_parser = parse_ops, default_value = "sum")]
    pub op: List<ReduceOp>,

    /// Data type: int8, uint8, int32, uint32, int64, uint64, half, float,
    /// double, bfloat16, a comma-separated list, or all.
    #[arg(short = 'd', long = "datatype", value_parser = parse_dtypes, default_value = "float")]
    pub datatype: List<DType>,

    /// Root rank of broadcast and reduce.
    #[arg(short = 'r', long = "root", default_value_t = 0)]
    pub root: usize,

    /// Ranks (threads of this process), with `--transport local`.
    #[arg(long, default_value_t = 4)]
    pub ranks: usize,

    /// local: ranks are threads of this process (`--ranks`). shm, tcp, rdma or
    /// auto: this process is one rank of a job started by `oxccl run`,
    /// mpirun, srun or torchrun, connected over that transport; rank 0 prints
    /// (rdma needs a build with `--features rdma`).
    #[arg(long, default_value = "local", value_parser = parse_transport)]
    pub transport: TransportArg,

    /// ring, tree, rhd, direct, auto, a comma-separated list, or all (each
    /// algorithm that can run on this group, then auto; the ones skipped are
    /// named on stderr: direct needs ranks that share an address space).
    #[arg(long, value_parser = parse_algos, default_value = "all")]
    pub algo: AlgoList,

    /// Largest message in bytes (default: the communicator's).
    #[arg(long, value_parser = parse_slice)]
    pub slice: Option<usize>,

    /// Deadline of every wait, in seconds (default: the communicator's).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print one JSON object per row, then a summary object.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print CSV with a header line.
    #[arg(long)]
    pub csv: bool,

    /// Skip measuring the floors (memory bandwidth, core-to-core handoff): no %floor.
    #[arg(long)]
    pub no_membw: bool,

    /// Where the buffers live: cpu (host memory); emu (the emulated
    /// device) or cuda (GPU 0): stream-ordered calls on device memory,
    /// ranks as threads sharing the device, %floor against the device's
    /// copy bandwidth (without a GPU, cuda reports the missing driver).
    #[arg(long, default_value = "cpu", value_parser = crate::device::DEVICES)]
    pub device: String,

    /// Whose collectives: oxccl, or nccl (with --device cuda: NCCL needs
    /// one GPU per rank, so a one-GPU machine runs one rank; NCCL picks its
    /// own algorithm, shown as `nccl`).
    #[arg(long, default_value = "oxccl", value_parser = ["oxccl", "nccl"])]
    pub backend: String,

    /// With --device emu|cuda: capture each rank's call into a graph once
    /// (a CUDA graph on a GPU) and time and check its replays, as a
    /// training step captured with its collectives runs them.
    #[arg(long)]
    pub graph: bool,
}

impl PerfArgs {
    fn size_range(&self) -> SizeRange {
        SizeRange {
            min_bytes: self.minbytes,
            max_bytes: self.maxbytes,
            step_factor: self.stepfactor,
            step_bytes: self.stepbytes,
        }
    }

    /// The sweep these flags describe.
    pub fn options(&self) -> Result<Options, String> {
        let sizes = if self.collective == Collective::Barrier { Vec::new() } else { self.size_range().sizes()? };
        let mut config = Config::default();
        if let Some(slice) = self.slice {
            config.slice_bytes = slice;
        }
        if let Some(timeout) = self.timeout {
            config.timeout = timeout;
        }
        // A launched job's world size is the launcher's.
        let ranks = match self.transport.0 {
            None => self.ranks,
            Some(_) => Launch::from_env().map_err(|e| e.to_string())?.world,
        };
        let opts = Options {
            collective: self.collective,
            ranks,
            sizes,
            dtypes: self.datatype.0.clone(),
            ops: self.op.0.clone(),
            root: self.root,
            algos: self.algo.algos.clone(),
            all_algos: self.algo.all,
            warmup: self.warmup_iters,
            iters: self.iters,
            check: self.check != 0,
            config,
            transport: self.transport.0,
            memory: match self.device.as_str() {
                "emu" => Memory::Emu,
                "cuda" => Memory::Cuda,
                _ => Memory::Host,
            },
            backend: match self.backend.as_str() {
                "nccl" => Backend::Nccl,
                _ => Backend::Oxccl,
            },
            graph: self.graph,
        };
        opts.validate()?;
        Ok(opts)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Csv,
}

/// Writes to stdout; a closed pipe ends the program quietly.
fn emit(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("oxccl perf: error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

fn progress_bar(rows: usize) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(rows as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rows  {msg}") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A spinner on stderr when it is a terminal.
fn spinner(msg: &'static str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn describe(spec: &oxccl_bench::RowSpec) -> String {
    format!(
        "{} B {} {} {}",
        spec.shape.bytes(),
        report::type_name(spec),
        report::redop_name(spec),
        report::algo_name(spec)
    )
}

pub fn main(args: PerfArgs) -> ExitCode {
    if let Err(code) = crate::device::check("perf", &args.device, true) {
        return code;
    }
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("oxccl perf: error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = if args.json {
        Format::Json
    } else if args.csv {
        Format::Csv
    } else {
        Format::Table
    };
    // In a launched job only rank 0 measures and prints.
    let rank = match opts.transport {
        None => 0,
        Some(_) => Launch::from_env().map_or(0, |l| l.rank),
    };
    if rank != 0 {
        return match perf::run(&opts, Floor::default(), |_| {}) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxccl perf (rank {rank}): error: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let membw: Option<MemBw> = match (args.no_membw, opts.memory) {
        (true, _) => None,
        (false, Memory::Host) => {
            let pb = spinner("measuring memory bandwidth");
            let m = membw::measure();
            pb.finish_and_clear();
            Some(m)
        }
        (false, device) => {
            let pb = spinner("measuring the device's copy bandwidth");
            let (copy, buffer_bytes) = match device {
                Memory::Emu => (oxccl_bench::device::device_copy_bandwidth(), 64 << 20),
                _ => (oxccl_bench::device::gpu_copy_bandwidth(), 1 << 30),
            };
            pb.finish_and_clear();
            match copy {
                Ok(copy) => Some(MemBw { read: 0.0, copy, add: 0.0, update: 0.0, threads: 1, buffer_bytes }),
                Err(e) => {
                    eprintln!("oxccl perf: error: measuring the device's copy bandwidth: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let handoff =
        (!args.no_membw && opts.memory == Memory::Host).then(|| handoff::measure(Duration::from_millis(100))).flatten();
    let floor = Floor { membw_gbps: membw.as_ref().map_or(0.0, MemBw::best), handoff_s: handoff.unwrap_or(0.0) };

    match format {
        Format::Table => {
            emit(&report::header(&opts, &args.size_range(), membw.as_ref(), handoff));
            emit(&report::table_header());
        }
        Format::Csv => emit(&format!("{}\n", report::csv_header())),
        Format::Json => {}
    }

    // Connects (a launched job) and leaves out the algorithms this group
    // cannot run: the rows to come are the sweep's plan, not the options'.
    let sweep = match perf::prepare(&opts) {
        Ok(sweep) => sweep,
        Err(e) => {
            eprintln!("oxccl perf: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = sweep.plan().to_vec();
    let pb = progress_bar(plan.len());
    if let Some(first) = plan.first() {
        pb.set_message(describe(first));
    }
    let result = sweep.run(floor, |row: &Row| {
        let line = match format {
            Format::Table => report::table_row(row),
            Format::Json => report::row_json(row).to_string(),
            Format::Csv => report::csv_row(row),
        };
        pb.suspend(|| emit(&format!("{line}\n")));
        pb.inc(1);
        if let Some(next) = plan.get(row.index + 1) {
            pb.set_message(describe(next));
        }
    });
    pb.finish_and_clear();

    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("oxccl perf: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = Summary::of(&rows);
    match format {
        Format::Table => emit(&report::trailer(&summary)),
        Format::Json => emit(&format!("{}\n", report::summary_json(&opts, &summary, membw.as_ref(), handoff))),
        Format::Csv => {}
    }
    match summary.wrong {
        Some(w) if w > 0 => {
            eprintln!("oxccl perf: {w} wrong values");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn parse(args: &[&str]) -> Result<PerfArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("perf").chain(args.iter().copied())).map(|c| c.perf)
    }

    #[test]
    fn defaults_follow_nccl_tests() {
        let a = parse(&["all_reduce"]).unwrap();
        assert_eq!(a.collective, Collective::AllReduce);
        assert_eq!((a.minbytes, a.maxbytes, a.stepfactor, a.stepbytes), (32 << 20, 32 << 20, 1, 1 << 20));
        assert_eq!((a.iters, a.warmup_iters, a.check, a.root, a.ranks), (20, 5, 1, 0, 4));
        assert_eq!(a.op.0, [ReduceOp::Sum]);
        assert_eq!(a.datatype.0, [DType::F32]);
        assert_eq!(a.algo.algos.len(), Algorithm::ALL.len() + 1);
        assert_eq!(a.algo.algos.last(), Some(&None));
        assert!(a.algo.all);
        let o = a.options().unwrap();
        assert_eq!(o.sizes, [32 << 20]);
        assert!(o.check);
        assert!(o.all_algos);
        let a = parse(&["all_reduce", "--algo", "all"]).unwrap();
        assert!(a.algo.all && a.options().unwrap().all_algos);
    }

    #[test]
    fn nccl_tests_spellings() {
        let a = parse(&[
            "all_gather_perf",
            "-b",
            "8",
            "-e",
            "64K",
            "-f",
            "8",
            "-n",
            "2",
            "-w",
            "1",
            "-c",
            "0",
            "-o",
            "all",
            "-d",
            "all",
            "-r",
            "2",
            "--ranks",
            "3",
            "--algo",
            "ring,auto",
        ])
        .unwrap();
        assert_eq!(a.collective, Collective::AllGather);
        assert_eq!((a.minbytes, a.maxbytes, a.stepfactor), (8, 64 << 10, 8));
        assert_eq!((a.iters, a.warmup_iters, a.check, a.root, a.ranks), (2, 1, 0, 2, 3));
        assert_eq!(a.op.0.len(), 5);
        assert_eq!(a.datatype.0.len(), 10);
        assert_eq!(a.algo, AlgoList { algos: vec![Some(Algorithm::Ring), None], all: false });
        let o = a.options().unwrap();
        assert!(!o.all_algos);
        assert_eq!(o.sizes, [8, 64, 512, 4096, 32768]);
        assert!(!o.check);

        let a = parse(&[
            "broadcast",
            "--minbytes",
            "1M",
            "--maxbytes",
            "4M",
            "--stepbytes",
            "1M",
            "--iters",
            "3",
            "--warmup_iters",
            "0",
            "--check",
            "1",
            "--op",
            "max",
            "--datatype",
            "bfloat16",
            "--root",
            "1",
            "--slice",
            "64K",
            "--timeout",
            "2.5",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.collective, Collective::Broadcast);
        let o = a.options().unwrap();
        assert_eq!(o.sizes.len(), 4);
        assert_eq!(o.dtypes, [DType::BF16]);
        assert_eq!(o.config.slice_bytes, 64 << 10);
        assert_eq!(o.config.timeout, Duration::from_millis(2500));
        assert!(a.json);
    }

    #[test]
    fn bad_arguments() {
        for bad in [
            &["all_reduce_perff"][..],
            &["allreduce", "-b", "1X"],
            &["all_reduce", "-c", "2"],
            &["all_reduce", "-o", "mean"],
            &["all_reduce", "-d", "float128"],
            &["all_reduce", "--algo", "star"],
            &["all_reduce", "--json", "--csv"],
            &["all_reduce", "--slice", "0"],
            &["all_reduce", "--timeout", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        // Parse, but make no sense together.
        for bad in [
            &["all_reduce", "-b", "64", "-e", "8"][..],
            &["broadcast", "-r", "4", "--ranks", "4"],
            &["all_reduce", "-n", "0"],
            &["all_reduce", "--ranks", "0"],
            &["all_reduce", "-b", "8", "-e", "64", "-i", "0"],
        ] {
            assert!(parse(bad).unwrap().options().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn barrier_needs_no_sizes() {
        let o = parse(&["barrier", "-b", "64", "-e", "8"]).unwrap().options().unwrap();
        assert_eq!(o.plan().len(), Algorithm::ALL.len() + 1);
    }
}
