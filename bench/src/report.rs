//! How a sweep is printed: nccl-tests' table, JSON lines, or CSV.
//!
//! The table has nccl-tests' columns (size, count, type, redop, root, then
//! time, algbw, busbw and #wrong out of place and in place) plus `algo` after
//! `root` and `%floor` after each `#wrong`, and nccl-tests' trailer lines.

use std::fmt::Write as _;

use oxccl::bootstrap::connect::TransportKind;
use oxccl::Collective;
use serde_json::{json, Value as Json};

use crate::membw::MemBw;
use crate::perf::{Options, Placement, Row, RowSpec, Summary};
use crate::sizing::format_size;

/// The `type` column ("none" for a barrier, which moves no data).
pub fn type_name(spec: &RowSpec) -> &'static str {
    if spec.collective == Collective::Barrier {
        "none"
    } else {
        spec.dtype.name()
    }
}

/// The `redop` column ("none" when the collective does not reduce).
pub fn redop_name(spec: &RowSpec) -> &'static str {
    spec.op.map_or("none", |op| op.name())
}

/// The `root` column (-1 when the collective has no root, as nccl-tests).
pub fn root_value(spec: &RowSpec) -> i64 {
    spec.root.map_or(-1, |r| r as i64)
}

/// The `algo` column: the algorithm asked for (`auto` for the
/// communicator's rule).
pub fn algo_name(spec: &RowSpec) -> &'static str {
    match spec.backend {
        crate::perf::Backend::Nccl => "nccl",
        crate::perf::Backend::Oxccl => spec.algo.map_or("auto", |a| a.name()),
    }
}

/// What ran a measured row: the algorithm the communicator chose, or nccl.
pub fn algo_used(row: &Row) -> &'static str {
    match row.spec.backend {
        crate::perf::Backend::Nccl => "nccl",
        crate::perf::Backend::Oxccl => row.algo_used.name(),
    }
}

/// The `algo` cell of a measured row: `auto:<chosen>` for the auto rule.
pub fn algo_cell(row: &Row) -> String {
    match (row.spec.backend, row.spec.algo) {
        (crate::perf::Backend::Nccl, _) => "nccl".to_string(),
        (_, Some(a)) => a.name().to_string(),
        (_, None) => format!("auto:{}", row.algo_used.name()),
    }
}

/// Time in µs with nccl-tests' precision: fewer decimals as it grows.
pub fn format_time(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{us:7.0}")
    } else if us >= 100.0 {
        format!("{us:7.1}")
    } else {
        format!("{us:7.2}")
    }
}

/// The lines above the table: settings and the measured memory bandwidth.
pub fn header(opts: &Options, sizes: &crate::sizing::SizeRange, membw: Option<&MemBw>, handoff: Option<f64>) -> String {
    let mut s = String::new();
    let step = if sizes.step_factor > 1 {
        format!("{}(factor)", sizes.step_factor)
    } else {
        format!("{}(bytes)", sizes.step_bytes)
    };
    let _ = writeln!(
        s,
        "# oxccl perf {}: {} ranks ({}) minBytes {} maxBytes {} step: {} \
         warmup iters: {} iters: {} validation: {} slice: {}",
        opts.collective,
        opts.ranks,
        match (opts.transport, opts.memory) {
            (None, crate::Memory::Host) => "threads of one process".to_string(),
            (None, crate::Memory::Emu) => {
                "threads of one process, buffers on one emulated device, stream-ordered calls".to_string()
            }
            (None, crate::Memory::Cuda) if opts.backend == crate::perf::Backend::Nccl => {
                "threads of one process, NCCL, one GPU each".to_string()
            }
            (None, crate::Memory::Cuda) => {
                "threads of one process, buffers on GPU 0 (shared), stream-ordered calls".to_string()
            }
            (Some(kind @ (TransportKind::Tcp | TransportKind::Rdma)), crate::Memory::Emu) => {
                format!("processes, transport {kind:?}, an emulated device each, data staged through host slots")
                    .to_lowercase()
            }
            (Some(kind @ (TransportKind::Tcp | TransportKind::Rdma)), crate::Memory::Cuda) => {
                format!("processes, transport {kind:?}, GPU 0 each, data staged through host slots").to_lowercase()
            }
            (Some(kind), crate::Memory::Emu) => format!(
                "processes, transport {kind:?}, an emulated device each, stream-ordered calls \
                 (staged through host memory if IPC fails: see stderr)"
            )
            .to_lowercase(),
            (Some(kind), crate::Memory::Cuda) => format!(
                "processes, transport {kind:?}, GPU 0 shared through CUDA IPC, stream-ordered calls \
                 (staged through host memory if IPC fails: see stderr)"
            )
            .to_lowercase(),
            (Some(kind), _) => format!("processes, transport {kind:?}").to_lowercase(),
        },
        sizes.min_bytes,
        sizes.max_bytes,
        step,
        opts.warmup,
        opts.iters,
        u8::from(opts.check),
        format_size(opts.config.slice_bytes),
    );
    if opts.graph {
        let _ = writeln!(
            s,
            "# Graphs: each rank's call captured once per size and placement; its replays timed and checked"
        );
    }
    if opts.memory != crate::Memory::Host {
        match membw {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "# Device copy bandwidth (device to device, {} buffers, read+write bytes): {:.1} GB/s{}",
                    format_size(m.buffer_bytes),
                    m.copy,
                    match opts.memory {
                        crate::Memory::Emu => " (the emulated device's memory is the host's)",
                        _ => "",
                    }
                );
                let _ = writeln!(
                    s,
                    "# %floor = the time to read every input byte and write every output byte once \
                     (2·N·S for an all-reduce: what direct moves) at that bandwidth / measured time x 100"
                );
            }
            None => {
                let _ = writeln!(s, "# Device copy bandwidth not measured: no %floor");
            }
        }
        s.push_str("#\n");
        return s;
    }
    match membw {
        Some(m) => {
            let _ = writeln!(
                s,
                "# Memory bandwidth ({} threads, {} buffers, read+write bytes): read {:.1} GB/s, \
                 copy {:.1} GB/s, add {:.1} GB/s, update in place {:.1} GB/s (not in the floor); %floor uses the best of read, copy, add: {:.1} GB/s",
                m.threads,
                format_size(m.buffer_bytes),
                m.read,
                m.copy,
                m.add,
                m.update,
                m.best()
            );
            match handoff {
                Some(h) => {
                    let _ = writeln!(
                        s,
                        "# Core-to-core handoff: {:.3} us (one cache line, one way, two threads spinning)",
                        h * 1e6
                    );
                }
                None => {
                    let _ = writeln!(s, "# Core-to-core handoff not measured (one core)");
                }
            }
            let _ = writeln!(
                s,
                "# %floor = the larger of the time to read every input byte and write every output \
                 byte once at that bandwidth and (two ranks or more) one handoff / measured time x 100 \
                 (sizes that fit in cache can exceed 100)"
            );
        }
        None => {
            let _ = writeln!(s, "# Memory bandwidth not measured: no %floor");
        }
    }
    s.push_str("#\n");
    s
}

/// The three column-heading lines of the table.
pub fn table_header() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#{:>105}{:>41}", "out-of-place", "in-place");
    let _ = writeln!(
        s,
        "#{:>11}  {:>12}  {:>8}  {:>6}  {:>6}  {:>11}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}",
        "size", "count", "type", "redop", "root", "algo",
        "time", "algbw", "busbw", "#wrong", "%floor",
        "time", "algbw", "busbw", "#wrong", "%floor",
    );
    let _ = writeln!(
        s,
        "#{:>11}  {:>12}  {:>8}  {:>6}  {:>6}  {:>11}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}",
        "(B)", "(elements)", "", "", "", "",
        "(us)", "(GB/s)", "(GB/s)", "", "",
        "(us)", "(GB/s)", "(GB/s)", "", "",
    );
    s
}

fn placement_cells(p: &Placement) -> String {
    let wrong = p.wrong.map_or_else(|| "N/A".to_string(), |w| w.to_string());
    let floor = p.figures.floor_pct.map_or_else(|| "N/A".to_string(), |f| format!("{f:.1}"));
    format!(
        "{}  {:>6.2}  {:>6.2}  {:>6}  {:>6}",
        format_time(p.figures.time_us),
        p.figures.algbw,
        p.figures.busbw,
        wrong,
        floor
    )
}

/// One table line (no newline).
pub fn table_row(row: &Row) -> String {
    let spec = &row.spec;
    format!(
        "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}  {:>11}  {}  {}",
        spec.shape.bytes(),
        spec.shape.count,
        type_name(spec),
        redop_name(spec),
        root_value(spec),
        algo_cell(row),
        placement_cells(&row.out_of_place),
        placement_cells(&row.in_place),
    )
}

/// nccl-tests' closing lines.
pub fn trailer(summary: &Summary) -> String {
    let mut s = String::new();
    match summary.wrong {
        Some(w) => {
            let verdict = if w == 0 { "OK" } else { "FAILED" };
            let _ = writeln!(s, "# Out of bounds values : {w} {verdict}");
        }
        None => {
            let _ = writeln!(s, "# Out of bounds values : N/A (not checked: -c 0)");
        }
    }
    let _ = writeln!(s, "# Avg bus bandwidth    : {}", format_g6(summary.avg_busbw));
    s.push_str("#\n");
    s
}

/// Like C's `%g`: six significant digits, trailing zeros dropped.
fn format_g6(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    if (0..=17).contains(&digits) {
        let s = format!("{x:.*}", digits as usize);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:e}")
    }
}

fn placement_json(p: &Placement) -> Json {
    json!({
        "time_us": p.figures.time_us,
        "algbw_gbps": p.figures.algbw,
        "busbw_gbps": p.figures.busbw,
        "wrong": p.wrong,
        "floor_pct": p.figures.floor_pct,
    })
}

/// One JSON object per row.
pub fn row_json(row: &Row) -> Json {
    let spec = &row.spec;
    json!({
        "collective": spec.collective.name(),
        "ranks": spec.world,
        "size": spec.shape.bytes(),
        "count": spec.shape.count,
        "type": type_name(spec),
        "redop": redop_name(spec),
        "root": root_value(spec),
        "algo": algo_name(spec),
        "algo_used": algo_used(row),
        "out_of_place": placement_json(&row.out_of_place),
        "in_place": placement_json(&row.in_place),
    })
}

/// The closing JSON object, under a `summary` key.
pub fn summary_json(opts: &Options, summary: &Summary, membw: Option<&MemBw>, handoff: Option<f64>) -> Json {
    json!({
        "summary": {
            "collective": opts.collective.name(),
            "ranks": opts.ranks,
            "rows": summary.rows,
            "warmup_iters": opts.warmup,
            "iters": opts.iters,
            "check": opts.check,
            "wrong": summary.wrong,
            "avg_busbw_gbps": summary.avg_busbw,
            "membw_gbps": membw.map(|m| json!({
                "read": m.read,
                "copy": m.copy,
                "add": m.add,
                "update": m.update,
                "best": m.best(),
                "threads": m.threads,
                "buffer_bytes": m.buffer_bytes,
            })),
            "handoff_us": handoff.map(|h| h * 1e6),
        }
    })
}

/// The CSV header line (no newline).
pub fn csv_header() -> &'static str {
    "collective,ranks,size,count,type,redop,root,algo,algo_used,\
     oop_time_us,oop_algbw_gbps,oop_busbw_gbps,oop_wrong,oop_floor_pct,\
     ip_time_us,ip_algbw_gbps,ip_busbw_gbps,ip_wrong,ip_floor_pct"
}

fn placement_csv(p: &Placement) -> String {
    let opt = |v: Option<String>| v.unwrap_or_default();
    format!(
        "{},{},{},{},{}",
        p.figures.time_us,
        p.figures.algbw,
        p.figures.busbw,
        opt(p.wrong.map(|w| w.to_string())),
        opt(p.figures.floor_pct.map(|f| f.to_string())),
    )
}

/// One CSV line (no newline); absent values are empty cells.
pub fn csv_row(row: &Row) -> String {
    let spec = &row.spec;
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        spec.collective.name(),
        spec.world,
        spec.shape.bytes(),
        spec.shape.count,
        type_name(spec),
        redop_name(spec),
        root_value(spec),
        algo_name(spec),
        algo_used(row),
        placement_csv(&row.out_of_place),
        placement_csv(&row.in_place),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Figures, Floor};
    use crate::sizing::{Shape, SizeRange};
    use oxccl::{Algorithm, Config, DType, ReduceOp};

    fn spec(collective: Collective) -> RowSpec {
        RowSpec {
            collective,
            world: 4,
            dtype: DType::F32,
            op: collective.reduces().then_some(ReduceOp::Sum),
            root: collective.rooted().then_some(0),
            shape: Shape::of(collective, DType::F32, 4, 1 << 20),
            algo: Some(Algorithm::Ring),
            backend: crate::perf::Backend::Oxccl,
        }
    }

    fn row(collective: Collective) -> Row {
        let spec = spec(collective);
        let p = |seconds: f64, wrong| Placement {
            seconds,
            figures: Figures::new(collective, 4, &spec.shape, seconds, &Floor { membw_gbps: 30.0, handoff_s: 0.0 }),
            wrong,
        };
        Row {
            index: 0,
            spec,
            algo_used: Algorithm::Ring,
            out_of_place: p(123.456e-6, Some(0)),
            in_place: p(12.5e-3, Some(3)),
        }
    }

    fn opts() -> Options {
        Options {
            collective: Collective::AllReduce,
            ranks: 4,
            sizes: vec![8],
            dtypes: vec![DType::F32],
            ops: vec![ReduceOp::Sum],
            root: 0,
            algos: vec![None],
            all_algos: false,
            warmup: 5,
            iters: 20,
            check: true,
            config: Config::default(),
            transport: None,
            memory: crate::Memory::Host,
            backend: crate::perf::Backend::Oxccl,
            graph: false,
        }
    }

    #[test]
    fn times_like_nccl_tests() {
        assert_eq!(format_time(1.234), "   1.23");
        assert_eq!(format_time(123.456), "  123.5");
        assert_eq!(format_time(12345.6), "  12346");
    }

    #[test]
    fn table_lines_line_up() {
        let h = table_header();
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines.len(), 3);
        let r = table_row(&row(Collective::AllReduce));
        assert_eq!(lines[1].len(), r.len(), "\n{}\n{r}", lines[1]);
        assert_eq!(lines[2].len(), r.len());
        // "out-of-place" ends over the out-of-place %floor, "in-place" at the end.
        assert_eq!(lines[0].len(), r.len());
        let oop_end = lines[0].find("out-of-place").unwrap() + "out-of-place".len();
        let floor_end = lines[1].find("%floor").unwrap() + "%floor".len();
        assert_eq!(oop_end, floor_end);
        // Cells: size, count, type, redop, root, algo, then 5 per placement.
        let cells: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "1048576", "262144", "float", "sum", "-1", "ring", "123.5", "8.49", "12.74", "0", cells[10], "12500",
                "0.08", "0.13", "3", cells[15]
            ]
        );
        // %floor: 8 MiB at 30 GB/s over 123.456 µs.
        let want = 8.0 * (1 << 20) as f64 / 30e9 / 123.456e-6 * 100.0;
        assert_eq!(cells[10], format!("{want:.1}"));
    }

    #[test]
    fn rows_of_other_collectives() {
        let cells = |c| table_row(&row(c)).split_whitespace().map(String::from).collect::<Vec<_>>();
        let b = cells(Collective::Broadcast);
        assert_eq!(&b[2..6], ["float", "none", "0", "ring"]);
        let g = cells(Collective::AllGather);
        assert_eq!(&g[0..5], ["1048576", "65536", "float", "none", "-1"]);
        let mut bar = row(Collective::Barrier);
        bar.spec.algo = None;
        bar.algo_used = Algorithm::Direct;
        let c: Vec<String> = table_row(&bar).split_whitespace().map(String::from).collect();
        assert_eq!(&c[0..6], ["0", "0", "none", "none", "-1", "auto:direct"]);
        assert_eq!(c[10], "N/A");
        let mut unchecked = row(Collective::AllReduce);
        unchecked.out_of_place.wrong = None;
        assert_eq!(table_row(&unchecked).split_whitespace().nth(9), Some("N/A"));
    }

    #[test]
    fn trailer_lines() {
        let t = trailer(&Summary { rows: 3, wrong: Some(0), avg_busbw: 12.3456789 });
        assert!(t.contains("# Out of bounds values : 0 OK\n"), "{t}");
        assert!(t.contains("# Avg bus bandwidth    : 12.3457\n"), "{t}");
        let t = trailer(&Summary { rows: 3, wrong: Some(7), avg_busbw: 0.0 });
        assert!(t.contains("# Out of bounds values : 7 FAILED\n"), "{t}");
        assert!(t.contains("# Avg bus bandwidth    : 0\n"), "{t}");
        let t = trailer(&Summary { rows: 3, wrong: None, avg_busbw: 1.0 });
        assert!(t.contains("N/A"), "{t}");
    }

    #[test]
    fn g6() {
        assert_eq!(format_g6(12.3456789), "12.3457");
        assert_eq!(format_g6(0.00123456789), "0.00123457");
        assert_eq!(format_g6(123456.7), "123457");
        assert_eq!(format_g6(2.5), "2.5");
        assert_eq!(format_g6(100.0), "100");
    }

    #[test]
    fn header_lines() {
        let m = MemBw { read: 35.04, copy: 27.0, add: 28.0, update: 41.96, threads: 2, buffer_bytes: 256 << 20 };
        let sizes = SizeRange { min_bytes: 8, max_bytes: 64 << 20, step_factor: 8, step_bytes: 0 };
        let h = header(&opts(), &sizes, Some(&m), Some(5.2e-8));
        assert!(h.contains("minBytes 8 maxBytes 67108864 step: 8(factor)"), "{h}");
        assert!(h.contains("read 35.0 GB/s, copy 27.0 GB/s, add 28.0 GB/s, update in place 42.0 GB/s"), "{h}");
        assert!(h.contains("the best of read, copy, add: 35.0 GB/s"), "{h}");
        assert!(h.contains("256M buffers"), "{h}");
        assert!(h.contains("Core-to-core handoff: 0.052 us"), "{h}");
        assert!(h.lines().all(|l| l.starts_with('#')));
        assert!(header(&opts(), &sizes, None, None).contains("not measured"));
    }

    #[test]
    fn json_rows() {
        let j = row_json(&row(Collective::AllReduce));
        assert_eq!(j["collective"], "all_reduce");
        assert_eq!(j["size"], 1 << 20);
        assert_eq!(j["root"], -1);
        assert_eq!(j["algo_used"], "ring");
        assert_eq!(j["in_place"]["wrong"], 3);
        assert!(j["out_of_place"]["busbw_gbps"].as_f64().unwrap() > 0.0);
        let line = j.to_string();
        assert!(!line.contains('\n'));
        let back: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(back["count"], j["count"]);
        assert_eq!(back["out_of_place"]["wrong"], 0);
        let s = summary_json(&opts(), &Summary { rows: 1, wrong: Some(0), avg_busbw: 1.5 }, None, None);
        assert_eq!(s["summary"]["wrong"], 0);
        assert!(s["summary"]["membw_gbps"].is_null());
        assert!(s["summary"]["handoff_us"].is_null());
        let s = summary_json(&opts(), &Summary { rows: 1, wrong: Some(0), avg_busbw: 1.5 }, None, Some(1e-7));
        assert!((s["summary"]["handoff_us"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn csv_lines() {
        let header_cells = csv_header().split(',').count();
        let r = csv_row(&row(Collective::AllReduce));
        assert_eq!(r.split(',').count(), header_cells);
        assert!(r.starts_with("all_reduce,4,1048576,262144,float,sum,-1,ring,ring,"), "{r}");
        let mut unchecked = row(Collective::AllReduce);
        unchecked.in_place.wrong = None;
        let r = csv_row(&unchecked);
        assert_eq!(r.split(',').nth(17), Some(""));
    }
}
