//! Choosing a loader by file extension: `.npy` (inputs, with targets in a
//! second `.npy`) or `.csv` (inputs then targets on each row).

use std::path::Path;

use super::{csv, npy, Dataset};
use crate::error::{Error, Result};

fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// A training set from files: `x.npy` with `y.npy` (rows must agree), or a
/// CSV whose last `csv_targets` columns are the targets.
pub fn load(x: &Path, y: Option<&Path>, csv_targets: usize) -> Result<Dataset> {
    if is_npy(x) {
        let y = y.ok_or_else(|| Error::Config(format!("{}: an .npy input needs a targets .npy file", x.display())))?;
        let (xa, ya) = (npy::read(x)?, npy::read(y)?);
        if xa.rows != ya.rows {
            return Err(Error::Data(format!(
                "{} has {} rows but {} has {}",
                x.display(),
                xa.rows,
                y.display(),
                ya.rows
            )));
        }
        Dataset::new(xa.data, xa.cols, ya.data, ya.cols)
    } else {
        if y.is_some() {
            return Err(Error::Config("a CSV file holds its own targets (use --csv-targets)".into()));
        }
        csv::read(x, csv_targets)
    }
}

/// Inputs for prediction: an `.npy` (every column an input) or a CSV whose
/// last `csv_targets` columns are targets (returned apart, for the error).
/// Returns (inputs row-major, input width, targets and their width).
#[allow(clippy::type_complexity)]
pub fn load_inputs(path: &Path, csv_targets: usize) -> Result<(Vec<f32>, usize, Option<(Vec<f32>, usize)>)> {
    if is_npy(path) {
        let a = npy::read(path)?;
        return Ok((a.data, a.cols, None));
    }
    if csv_targets == 0 {
        let (v, _, cols) = csv::read_table(path)?;
        return Ok((v, cols, None));
    }
    let d = csv::read(path, csv_targets)?;
    Ok((d.x, d.x_width, Some((d.y, d.y_width))))
}

/// Writes predictions (rows × cols) as `.npy` or, for any other extension, CSV.
pub fn save_predictions(path: &Path, values: &[f32], cols: usize) -> Result<()> {
    if is_npy(path) {
        npy::write(path, values, values.len() / cols.max(1), cols)
    } else {
        csv::write(path, values, cols, "y")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_pair_and_csv() {
        let dir = std::env::temp_dir().join(format!("oxccl-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (xp, yp, cp) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("d.csv"));
        npy::write(&xp, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
        npy::write(&yp, &[5.0, 6.0], 2, 1).unwrap();
        let d = load(&xp, Some(&yp), 1).unwrap();
        assert_eq!((d.rows, d.x, d.y), (2, vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0]));
        npy::write(&yp, &[5.0, 6.0, 7.0], 3, 1).unwrap();
        assert!(load(&xp, Some(&yp), 1).unwrap_err().to_string().contains("3"));
        assert!(load(&xp, None, 1).is_err());
        std::fs::write(&cp, "a,b,y\n1,2,3\n4,5,6\n").unwrap();
        let d = load(&cp, None, 1).unwrap();
        assert_eq!((d.x_width, d.y), (2, vec![3.0, 6.0]));
        let (x, w, t) = load_inputs(&cp, 0).unwrap();
        assert_eq!((x.len(), w, t), (6, 3, None));
        let (x, w, t) = load_inputs(&cp, 1).unwrap();
        assert_eq!((x, w, t), (vec![1.0, 2.0, 4.0, 5.0], 2, Some((vec![3.0, 6.0], 1))));
        save_predictions(&dir.join("p.npy"), &[1.0, 2.0], 1).unwrap();
        assert_eq!(npy::read(&dir.join("p.npy")).unwrap().data, vec![1.0, 2.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
