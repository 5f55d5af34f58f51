//! CSV files of numbers: each row holds the inputs followed by the targets
//! (the last `targets` columns). Fields are separated by commas (or
//! semicolons or tabs, detected from the first data line); blank lines and
//! lines starting with `#` are skipped; a first line with any non-numeric
//! field is a header and is skipped. Every row must have the same number of
//! fields; an error names the line.

use std::path::Path;

use super::dataset::Dataset;
use crate::error::{Error, Result};

/// Parses CSV text into a table: (values row-major, rows, columns).
pub fn parse_table(path: &Path, text: &str) -> Result<(Vec<f32>, usize, usize)> {
    let bad =
        |line: usize, what: String| Error::File { path: path.to_path_buf(), what: format!("line {line}: {what}") };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    let sep = match lines.peek() {
        Some((_, l)) if l.contains(',') => ',',
        Some((_, l)) if l.contains(';') => ';',
        Some((_, l)) if l.contains('\t') => '\t',
        _ => ',',
    };
    let mut values = Vec::new();
    let (mut width, mut rows, mut first) = (None, 0, true);
    for (no, line) in lines {
        let fields: Vec<&str> = line.split(sep).map(str::trim).collect();
        let parsed: std::result::Result<Vec<f32>, _> = fields.iter().map(|f| f.parse::<f32>()).collect();
        let row = match parsed {
            Ok(v) => v,
            Err(_) if first => {
                first = false;
                continue; // a header
            }
            Err(_) => {
                let f = fields.iter().find(|f| f.parse::<f32>().is_err()).expect("one failed");
                return Err(bad(no, format!("{f:?} is not a number")));
            }
        };
        first = false;
        match width {
            None => width = Some(row.len()),
            Some(w) if w != row.len() => return Err(bad(no, format!("{} fields, earlier rows have {w}", row.len()))),
            Some(_) => {}
        }
        values.extend_from_slice(&row);
        rows += 1;
    }
    let cols = width.ok_or_else(|| Error::File { path: path.to_path_buf(), what: "no data rows".into() })?;
    Ok((values, rows, cols))
}

/// Parses CSV text into a data set whose last `targets` columns are y.
pub fn parse(path: &Path, text: &str, targets: usize) -> Result<Dataset> {
    let (values, _, cols) = parse_table(path, text)?;
    if cols <= targets || targets == 0 {
        return Err(Error::File {
            path: path.to_path_buf(),
            what: format!("{cols} columns cannot hold inputs and {targets} target column(s)"),
        });
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for row in values.chunks_exact(cols) {
        x.extend_from_slice(&row[..cols - targets]);
        y.extend_from_slice(&row[cols - targets..]);
    }
    Dataset::new(x, cols - targets, y, targets)
}

/// Reads a CSV file (see [`parse`]).
pub fn read(path: &Path, targets: usize) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(path, &text, targets)
}

/// Reads a CSV file as a table (see [`parse_table`]).
pub fn read_table(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_table(path, &text)
}

/// Writes rows × cols values as CSV with a header `c0,c1,...` (`prefix` names).
pub fn write(path: &Path, data: &[f32], cols: usize, prefix: &str) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = (0..cols).map(|c| format!("{prefix}{c}")).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in data.chunks(cols.max(1)) {
        let fields: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_comments_separators() {
        let d = parse(Path::new("a.csv"), "# data\nx0,x1,y\n1,2,3\n\n4, 5 ,6\n", 1).unwrap();
        assert_eq!((d.rows, d.x_width, d.y_width), (2, 2, 1));
        assert_eq!((d.x, d.y), (vec![1.0, 2.0, 4.0, 5.0], vec![3.0, 6.0]));
        let d = parse(Path::new("b.csv"), "1;2;3;4\n5;6;7;8\n", 2).unwrap();
        assert_eq!((d.x, d.y), (vec![1.0, 2.0, 5.0, 6.0], vec![3.0, 4.0, 7.0, 8.0]));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(Path::new("c.csv"), "1,2,3\n4,5\n", 1).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("2 fields"), "{e}");
        let e = parse(Path::new("c.csv"), "a,b\n1,2\n1,x\n", 1).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("\"x\""), "{e}");
        assert!(parse(Path::new("c.csv"), "1\n", 1).unwrap_err().to_string().contains("1 columns"));
        assert!(parse(Path::new("c.csv"), "h\n", 1).is_err());
    }

    #[test]
    fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("oxccl-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.csv");
        let vals = vec![0.1f32, -2.5e-8, 3.0, 1e30];
        write(&p, &vals, 2, "v").unwrap();
        let d = read(&p, 1).unwrap();
        assert_eq!((d.x, d.y), (vec![0.1, 3.0], vec![-2.5e-8, 1e30]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
