//! Sizes of a sweep, nccl-tests style.
//!
//! A sweep walks message sizes in bytes from `-b` to `-e`, multiplying by
//! `-f` when it is above 1 and otherwise adding `-i`. Each size becomes a
//! per-rank element count the way nccl-tests derives it (its
//! `getCollByteCount` functions), and the row shows the larger of the send and
//! receive buffer in bytes.

use oxccl::{Collective, DType};

/// Parses a byte size with an optional binary suffix: `8`, `64K`, `1M`, `2G`,
/// `1T` (case-insensitive; `1K` is 1024). A trailing `B` or `iB` is accepted
/// (`64KiB`, `1MB`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let bad = || {
        format!("invalid size '{s}' (expected a number of bytes with an optional K, M, G or T suffix, e.g. 8, 64K, 1M)")
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1usize << shift).ok_or_else(|| format!("size '{s}' is too large"))
}

/// Formats bytes with the largest binary suffix that divides them exactly
/// (`65536` → `64K`), as the inverse of [`parse_size`].
pub fn format_size(bytes: usize) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let unit = 1usize << shift;
        if bytes >= unit && bytes & (unit - 1) == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// The `-b`/`-e`/`-f`/`-i` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub min_bytes: usize,
    pub max_bytes: usize,
    /// Multiply by this when above 1.
    pub step_factor: usize,
    /// Otherwise add this.
    pub step_bytes: usize,
}

impl Default for SizeRange {
    /// nccl-tests' defaults: one size of 32 MiB.
    fn default() -> Self {
        SizeRange { min_bytes: 32 << 20, max_bytes: 32 << 20, step_factor: 1, step_bytes: 1 << 20 }
    }
}

impl SizeRange {
    /// The sizes of the sweep, smallest first.
    pub fn sizes(&self) -> Result<Vec<usize>, String> {
        if self.min_bytes > self.max_bytes {
            return Err(format!("minimum size {} is larger than maximum size {}", self.min_bytes, self.max_bytes));
        }
        if self.step_factor <= 1 && self.step_bytes == 0 && self.min_bytes < self.max_bytes {
            return Err("the sweep never advances: give a step factor above 1 (-f) or a \
                        step in bytes above 0 (-i)"
                .to_string());
        }
        if self.step_factor > 1 && self.min_bytes == 0 && self.max_bytes > 0 {
            return Err("a sweep by factor (-f) needs a minimum size above 0 (-b)".to_string());
        }
        let mut out = Vec::new();
        let mut size = self.min_bytes;
        loop {
            out.push(size);
            let next = if self.step_factor > 1 {
                size.checked_mul(self.step_factor)
            } else {
                size.checked_add(self.step_bytes)
            };
            match next {
                Some(n) if n <= self.max_bytes && n > size => size = n,
                _ => break,
            }
        }
        Ok(out)
    }
}

/// What one size means for one collective, dtype and world size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Per-rank count in NCCL's convention (the `count` column).
    pub count: usize,
    /// Bytes of each rank's send buffer.
    pub in_bytes: usize,
    /// Bytes of each rank's receive buffer.
    pub out_bytes: usize,
}

impl Shape {
    /// nccl-tests' derivation: all_reduce, broadcast and reduce use
    /// `size / typesize` elements; all_gather's size is the whole output and
    /// reduce_scatter's the whole input, so the per-rank count is
    /// `size / (typesize · n)`; alltoall's size is each rank's whole buffer,
    /// `count` elements per peer. A barrier moves nothing.
    pub fn of(collective: Collective, dtype: DType, world: usize, size: usize) -> Shape {
        let elems = size / dtype.size();
        let count = match collective {
            Collective::AllReduce | Collective::Broadcast | Collective::Reduce => elems,
            Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => elems / world.max(1),
            Collective::Barrier => 0,
        };
        Shape {
            count,
            in_bytes: collective.input_len(world, count) * dtype.size(),
            out_bytes: collective.output_len(world, count) * dtype.size(),
        }
    }

    /// The `size` column: the larger of the send and receive buffers.
    pub fn bytes(&self) -> usize {
        self.in_bytes.max(self.out_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("8"), Ok(8));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size(" 16 "), Ok(16));
        for bad in ["", "K", "1.5M", "-8", "12Q", "M1", "1KK", "0x10"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(8), "8");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(64 << 20), "64M");
        for s in [0, 1, 1000, 4096, 3 << 30] {
            assert_eq!(parse_size(&format_size(s)), Ok(s));
        }
    }

    #[test]
    fn sweeps_by_factor() {
        let r = SizeRange { min_bytes: 8, max_bytes: 64 << 10, step_factor: 8, step_bytes: 0 };
        assert_eq!(r.sizes().unwrap(), vec![8, 64, 512, 4096, 32768]);
        let r = SizeRange { min_bytes: 8, max_bytes: 64 << 20, step_factor: 8, step_bytes: 0 };
        // 8·8^8 = 128M overshoots: the last size is 16M, as in nccl-tests.
        assert_eq!(r.sizes().unwrap().last(), Some(&(16 << 20)));
        assert_eq!(r.sizes().unwrap().len(), 8);
        let r = SizeRange { min_bytes: 8, max_bytes: 128 << 20, step_factor: 2, step_bytes: 0 };
        assert_eq!(r.sizes().unwrap().len(), 25);
    }

    #[test]
    fn sweeps_by_step() {
        let r = SizeRange { min_bytes: 1 << 20, max_bytes: 4 << 20, step_factor: 1, step_bytes: 1 << 20 };
        assert_eq!(r.sizes().unwrap(), vec![1 << 20, 2 << 20, 3 << 20, 4 << 20]);
        assert_eq!(SizeRange::default().sizes().unwrap(), vec![32 << 20]);
    }

    #[test]
    fn rejects_bad_sweeps() {
        let r = SizeRange { min_bytes: 64, max_bytes: 8, step_factor: 2, step_bytes: 0 };
        assert!(r.sizes().is_err());
        let r = SizeRange { min_bytes: 8, max_bytes: 64, step_factor: 1, step_bytes: 0 };
        assert!(r.sizes().is_err());
        let r = SizeRange { min_bytes: 0, max_bytes: 64, step_factor: 2, step_bytes: 0 };
        assert!(r.sizes().is_err());
        // One size needs no step.
        let r = SizeRange { min_bytes: 8, max_bytes: 8, step_factor: 1, step_bytes: 0 };
        assert_eq!(r.sizes().unwrap(), vec![8]);
    }

    #[test]
    fn sweep_stops_before_overflow() {
        let r = SizeRange { min_bytes: 1, max_bytes: usize::MAX, step_factor: 1 << 20, step_bytes: 0 };
        let s = r.sizes().unwrap();
        assert!(s.windows(2).all(|w| w[1] == w[0] << 20));
    }

    #[test]
    fn counts_follow_nccl_tests() {
        use Collective::*;
        let f = DType::F32;
        // all_reduce / broadcast / reduce: size / typesize.
        for c in [AllReduce, Broadcast, Reduce] {
            let s = Shape::of(c, f, 4, 1024);
            assert_eq!(s, Shape { count: 256, in_bytes: 1024, out_bytes: 1024 });
            assert_eq!(s.bytes(), 1024);
        }
        // all_gather: size is the whole output.
        let s = Shape::of(AllGather, f, 4, 1024);
        assert_eq!(s, Shape { count: 64, in_bytes: 256, out_bytes: 1024 });
        assert_eq!(s.bytes(), 1024);
        // reduce_scatter: size is the whole input.
        let s = Shape::of(ReduceScatter, f, 4, 1024);
        assert_eq!(s, Shape { count: 64, in_bytes: 1024, out_bytes: 256 });
        assert_eq!(s.bytes(), 1024);
        // alltoall: size is each rank's whole buffer, count per peer.
        let s = Shape::of(AllToAll, f, 4, 1024);
        assert_eq!(s, Shape { count: 64, in_bytes: 1024, out_bytes: 1024 });
        // Sizes that do not divide round down, as nccl-tests does.
        let s = Shape::of(AllGather, DType::F64, 3, 64);
        assert_eq!(s, Shape { count: 2, in_bytes: 16, out_bytes: 48 });
        assert_eq!(Shape::of(AllGather, f, 4, 8).count, 0);
        assert_eq!(Shape::of(AllReduce, DType::U8, 4, 7).count, 7);
        assert_eq!(Shape::of(AllReduce, DType::F16, 4, 7).count, 3);
        assert_eq!(Shape::of(Barrier, f, 4, 1024), Shape { count: 0, in_bytes: 0, out_bytes: 0 });
    }
}
