//! CPython's `multiprocessing`, measured by `python/bench_cpython.py` in a subprocess.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::{BenchResult, Settings};

/// One line of the script's output.
#[derive(Debug, Deserialize)]
pub struct Figure {
    /// The workload's name, as in the harness's table.
    pub workload: String,
    /// The unit of `value`.
    pub unit: String,
    /// The median over the repetitions.
    pub value: f64,
}

/// The script, found next to this crate's manifest.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bench_cpython.py")
}

/// The interpreter: `$PYTHON`, else `python3`.
fn interpreter() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Parses the script's output: one JSON object per line; other lines are ignored.
pub fn parse(stdout: &str) -> BenchResult<Vec<Figure>> {
    let mut figures = Vec::new();
    for line in stdout.lines().map(str::trim) {
        if line.starts_with('{') {
            figures.push(serde_json::from_str(line)?);
        }
    }
    Ok(figures)
}

/// Runs the script for one workload and returns its figure, in `unit`.
pub fn measure(settings: &Settings, workload: &str, unit: &str) -> BenchResult<f64> {
    let out = Command::new(interpreter())
        .arg(script())
        .arg(if settings.quick { "--quick" } else { "--full" })
        .args(["--workload", workload])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", interpreter()))?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", script().display(), out.status).into());
    }
    let figures = parse(&String::from_utf8_lossy(&out.stdout))?;
    let f = figures
        .into_iter()
        .find(|f| f.workload == workload)
        .ok_or_else(|| format!("no figure for {workload} in the script's output"))?;
    if f.unit != unit {
        return Err(format!("{workload}: the script measured {}, not {unit}", f.unit).into());
    }
    Ok(f.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_lines_and_skips_the_rest() {
        let out =
            "warming up\n{\"workload\": \"w\", \"unit\": \"us\", \"value\": 1.5, \"reps\": 3}\n";
        let got = parse(out).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].workload, "w");
        assert_eq!(got[0].unit, "us");
        assert_eq!(got[0].value, 1.5);
    }
}
