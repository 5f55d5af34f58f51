//! `Dataset`: rows of inputs x (rows × x_width) and targets y (rows ×
//! y_width), row-major f32, held in memory.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub rows: usize,
    pub x_width: usize,
    pub y_width: usize,
}

impl Dataset {
    /// Checks that the arrays hold `rows` rows of the given widths.
    pub fn new(x: Vec<f32>, x_width: usize, y: Vec<f32>, y_width: usize) -> Result<Self> {
        if x_width == 0 || y_width == 0 {
            return Err(Error::Data(format!("widths must be positive (x {x_width}, y {y_width})")));
        }
        if x.len() % x_width != 0 {
            return Err(Error::Data(format!("{} input values do not make rows of {x_width}", x.len())));
        }
        let rows = x.len() / x_width;
        if y.len() != rows * y_width {
            return Err(Error::Data(format!(
                "{rows} input rows but {} target values ({} rows of {y_width})",
                y.len(),
                y.len() as f64 / y_width as f64
            )));
        }
        Ok(Dataset { x, y, rows, x_width, y_width })
    }

    /// Row `r`'s inputs.
    pub fn x_row(&self, r: usize) -> &[f32] {
        &self.x[r * self.x_width..(r + 1) * self.x_width]
    }

    /// Row `r`'s targets.
    pub fn y_row(&self, r: usize) -> &[f32] {
        &self.y[r * self.y_width..(r + 1) * self.y_width]
    }

    /// Copies the rows `indices` (in that order) into `x` and `y`, which are
    /// cleared first.
    pub fn gather(&self, indices: &[usize], x: &mut Vec<f32>, y: &mut Vec<f32>) {
        x.clear();
        y.clear();
        for &r in indices {
            x.extend_from_slice(self.x_row(r));
            y.extend_from_slice(self.y_row(r));
        }
    }

    /// Rows `range` as a new data set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        Dataset {
            x: self.x[range.start * self.x_width..range.end * self.x_width].to_vec(),
            y: self.y[range.start * self.y_width..range.end * self.y_width].to_vec(),
            rows: range.len(),
            x_width: self.x_width,
            y_width: self.y_width,
        }
    }

    /// The first `rows - test` rows and the last `test` rows.
    pub fn split_last(&self, test: usize) -> Result<(Dataset, Dataset)> {
        if test >= self.rows {
            return Err(Error::Data(format!("cannot hold out {test} of {} rows", self.rows)));
        }
        let cut = self.rows - test;
        Ok((self.slice(0..cut), self.slice(cut..self.rows)))
    }
}
