//! `.npy` files (NumPy's format, versions 1–3), read into f32 and written
//! from f32.
//!
//! A file is the magic `\x93NUMPY`, a version (major, minor), the header's
//! length (u16 in version 1, u32 after), and the header: a Python dict
//! literal `{'descr': '<f4', 'fortran_order': False, 'shape': (rows, cols), }`
//! padded with spaces to a multiple of 64 bytes, then the raw data.
//! Accepted element types: little-endian (or byte-order-free) f4, f8, i4,
//! i8, u1 — all converted to f32. A 1-D array is read as one column; a
//! Fortran-ordered array is transposed to row-major.

use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A 2-D array read from a `.npy` file: rows × cols, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Array2 {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::File { path: path.to_path_buf(), what: what.into() }
}

/// The value of `key` in the header dict, as raw text up to the next
/// top-level comma or closing brace.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Parses the bytes of a `.npy` file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array2> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad(path, format!("unsupported .npy version {major}"))),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or_else(|| bad(path, "header runs past the end of the file"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not text"))?;
    let descr = header_field(header, "descr").ok_or_else(|| bad(path, "header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(header, "fortran_order").ok_or_else(|| bad(path, "header has no 'fortran_order'"))?;
    let fortran = match fortran {
        "True" => true,
        "False" => false,
        other => return Err(bad(path, format!("bad fortran_order {other:?}"))),
    };
    let shape = header_field(header, "shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
    let dims = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(path, format!("bad shape {shape}"))))
        .collect::<Result<Vec<_>>>()?;
    let (rows, cols) = match dims[..] {
        [n] => (n, 1),
        [r, c] => (r, c),
        _ => return Err(bad(path, format!("expected a 1-D or 2-D array, shape is {shape}"))),
    };
    let (size, convert): (usize, fn(&[u8]) -> f32) = match descr {
        "<f4" | "=f4" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "<f8" | "=f8" => (8, |b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        "<i4" | "=i4" => (4, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        "<i8" | "=i8" => (8, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        "|u1" | "<u1" | "=u1" => (1, |b| f32::from(b[0])),
        other => return Err(bad(path, format!("unsupported element type {other:?} (need <f4, <f8, <i4, <i8, u1)"))),
    };
    let n = rows.checked_mul(cols).ok_or_else(|| bad(path, "shape overflows"))?;
    let body = &bytes[hstart + hlen..];
    if body.len() != n * size {
        return Err(bad(path, format!("shape {shape} needs {} data bytes, file has {}", n * size, body.len())));
    }
    let flat: Vec<f32> = body.chunks_exact(size).map(convert).collect();
    let data = if fortran && rows > 1 && cols > 1 {
        let mut t = vec![0.0; n];
        for c in 0..cols {
            for r in 0..rows {
                t[r * cols + c] = flat[c * rows + r];
            }
        }
        t
    } else {
        flat
    };
    Ok(Array2 { data, rows, cols })
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<Array2> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// The bytes of a version-1 `.npy` file holding a rows × cols f32 array.
pub fn encode(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(data.len(), rows * cols, "npy::encode shape");
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad so that data starts on a multiple of 64 bytes, ending in '\n'.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a rows × cols f32 array as `.npy`.
pub fn write(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    std::fs::write(path, encode(data, rows, cols)).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(descr: &str, fortran: bool, shape: &str, body: &[u8], major: u8) -> Vec<u8> {
        let h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trip_f32() {
        let data = vec![1.5, -2.0, 3.25, 4.0, 5.0, f32::MIN_POSITIVE];
        let bytes = encode(&data, 3, 2);
        assert_eq!((bytes.len() - 24) % 64, 0, "data starts on a 64-byte boundary");
        let a = parse(Path::new("t.npy"), &bytes).unwrap();
        assert_eq!((a.rows, a.cols), (3, 2));
        assert_eq!(
            a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn types_versions_orders_and_1d() {
        let f8: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse(Path::new("a"), &file("<f8", true, "(2, 3)", &f8, 2)).unwrap();
        // Column-major [[1,3,5],[2,4,6]].
        assert_eq!(a.data, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let i8b: Vec<u8> = [7i64, -8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = parse(Path::new("b"), &file("<i8", false, "(2,)", &i8b, 3)).unwrap();
        assert_eq!((b.rows, b.cols, b.data), (2, 1, vec![7.0, -8.0]));
        let i4b: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse(Path::new("c"), &file("<i4", false, "(1, 2)", &i4b, 1)).unwrap().data, vec![1.0, 2.0]);
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("x.npy");
        assert!(parse(p, b"hello world").unwrap_err().to_string().contains("bad magic"));
        let short = file("<f4", false, "(2, 2)", &[0; 12], 1);
        assert!(parse(p, &short).unwrap_err().to_string().contains("needs 16 data bytes"));
        assert!(parse(p, &file(">f4", false, "(1,)", &[0; 4], 1)).unwrap_err().to_string().contains("unsupported"));
        assert!(parse(p, &file("<f4", false, "(1, 1, 1)", &[0; 4], 1)).is_err());
    }
}
