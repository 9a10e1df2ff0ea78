//! Timing and statistics: contenders measured in turn, repetition after repetition, so that
//! the drift of a noisy machine touches all of them alike.

use std::time::Instant;

use crate::BenchResult;

/// The median of some samples (the mean of the two middle ones for an even count).
pub fn median(samples: &[f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Runs `op` `n` times and returns each run's duration in microseconds.
pub fn time_each(n: usize, mut op: impl FnMut() -> BenchResult<()>) -> BenchResult<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Runs `ops(n)` once and returns the mean duration of one of the `n` operations, in
/// microseconds.
pub fn time_mean(n: usize, ops: impl FnOnce(usize) -> BenchResult<()>) -> BenchResult<f64> {
    let t = Instant::now();
    ops(n)?;
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// One implementation of a workload: each call of `batch` measures one repetition and
/// returns its samples.
pub struct Contender<'a> {
    /// `"multiproc"`, `"limit"`, or a peer's name.
    pub name: &'static str,
    /// Measures one repetition.
    pub batch: Box<dyn FnMut() -> BenchResult<Vec<f64>> + 'a>,
}

impl<'a> Contender<'a> {
    /// A contender measured by `batch`.
    pub fn new(
        name: &'static str,
        batch: impl FnMut() -> BenchResult<Vec<f64>> + 'a,
    ) -> Contender<'a> {
        Contender {
            name,
            batch: Box::new(batch),
        }
    }
}

/// Runs every contender's batch once per repetition, in turn (starting with a different
/// one each time), and returns each contender's median over all its samples.
pub fn interleaved(
    reps: usize,
    contenders: &mut [Contender<'_>],
) -> BenchResult<Vec<(&'static str, f64)>> {
    let k = contenders.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); k];
    for rep in 0..reps {
        for i in 0..k {
            let c = (rep + i) % k;
            let got =
                (contenders[c].batch)().map_err(|e| format!("{}: {e}", contenders[c].name))?;
            samples[c].extend(got);
        }
    }
    Ok(contenders
        .iter()
        .zip(&samples)
        .map(|(c, s)| (c.name, median(s)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn interleaved_takes_each_contenders_median() {
        let mut a = 0.0;
        let mut cs = [
            Contender::new("a", || {
                a += 1.0;
                Ok(vec![a])
            }),
            Contender::new("b", || Ok(vec![10.0, 20.0])),
        ];
        let got = interleaved(3, &mut cs).unwrap();
        assert_eq!(got, vec![("a", 2.0), ("b", 15.0)]);
    }
}
