//! The report: a table of figures, a table of ratios and goals, and one JSON line per
//! workload.

use std::fmt::Write as _;

use crate::workloads::Row;

/// `x` rounded to `digits` significant digits.
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let p = digits - 1 - x.abs().log10().floor() as i32;
    if p >= 0 {
        let m = 10f64.powi(p);
        (x * m).round() / m
    } else {
        let m = 10f64.powi(-p);
        (x / m).round() * m
    }
}

/// A figure for the tables.
fn figure(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{}", round_sig(v, 4)),
        None => "-".to_string(),
    }
}

/// A ratio for the tables.
fn ratio(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{:.2}x", v),
        None => "-".to_string(),
    }
}

/// A figure for the JSON lines (`null` when missing).
fn json_number(x: Option<f64>) -> String {
    let v = x.map(|v| round_sig(v, 4));
    serde_json::to_string(&v).unwrap_or_else(|_| "null".to_string())
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The peers that appear in any row, in order of first appearance.
fn peer_names(rows: &[Row]) -> Vec<&'static str> {
    let mut names = Vec::new();
    for row in rows {
        for (p, _) in &row.figures.peers {
            if !names.contains(p) {
                names.push(*p);
            }
        }
    }
    names
}

fn peer_value(row: &Row, name: &str) -> Option<f64> {
    row.figures
        .peers
        .iter()
        .find(|(p, _)| *p == name)
        .and_then(|&(_, v)| v)
}

/// Lays out rows of cells in left-aligned first column and right-aligned others.
fn table(header: &[String], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("  ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    out
}

/// The figures: every contender's median, in the workload's unit.
pub fn figures_table(rows: &[Row]) -> String {
    let peers = peer_names(rows);
    let mut header: Vec<String> = [
        "workload",
        "unit",
        "better",
        "multiproc",
        "CPython",
        "limit",
        "floor",
    ]
    .map(String::from)
    .to_vec();
    header.extend(peers.iter().map(|p| p.to_string()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line = vec![
                r.workload.name.to_string(),
                r.workload.unit.to_string(),
                r.workload.better.as_str().to_string(),
                figure(Some(r.figures.multiproc)),
                figure(r.cpython),
                figure(r.figures.limit),
                figure(r.figures.floor),
            ];
            line.extend(peers.iter().map(|p| figure(peer_value(r, p))));
            line
        })
        .collect();
    table(&header, &body)
}

/// The ratios that matter, and whether each goal is met.
///
/// `multiproc/limit` and `multiproc/floor` are how many times the bare limit and the floor
/// multiproc costs; `CPython/multiproc` and `peer/multiproc` are how many times better
/// multiproc is (for rates, the inverse ratios, so that the reading is the same).
pub fn ratios_table(rows: &[Row]) -> String {
    let peers = peer_names(rows);
    let mut header: Vec<String> = [
        "workload",
        "multiproc/limit",
        "multiproc/floor",
        "CPython/multiproc",
    ]
    .map(String::from)
    .to_vec();
    header.extend(peers.iter().map(|p| format!("{p}/multiproc")));
    header.push("goals".to_string());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line = vec![
                r.workload.name.to_string(),
                ratio(r.cost_vs_limit()),
                ratio(r.cost_vs_floor()),
                ratio(r.gain_over_cpython()),
            ];
            line.extend(peers.iter().map(|p| ratio(r.gain_over_peer(p))));
            line.push(goals(r, rows));
            line
        })
        .collect();
    table(&header, &body)
}

/// `≤ 2x limit: met; beats procspawn: NOT met`; `all` is every row of the run.
pub fn goals(row: &Row, all: &[Row]) -> String {
    row.workload
        .goals
        .iter()
        .map(|g| {
            let verdict = match g.met(row, all) {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "no figure",
            };
            format!("{}: {verdict}", g.describe())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `{"workload": "...", "unit": "...", "better": "lower", "multiproc": x, "cpython": y,
/// "limit": z, "floor": f, <peer>: p, ...}`; `floor` only on the workloads that have one,
/// `limit` null on those without one, a peer's key only on the workloads it has (null when
/// it could not be measured in this run), and `vs_<peer>` for a peer timed in pairs with
/// multiproc: the median of the pairs' gains.
pub fn json_line(row: &Row) -> String {
    let mut s = format!(
        "{{\"workload\": {}, \"unit\": {}, \"better\": {}, \"multiproc\": {}, \"cpython\": {}, \"limit\": {}",
        json_string(row.workload.name),
        json_string(row.workload.unit),
        json_string(row.workload.better.as_str()),
        json_number(Some(row.figures.multiproc)),
        json_number(row.cpython),
        json_number(row.figures.limit),
    );
    if let Some(f) = row.figures.floor {
        let _ = write!(s, ", \"floor\": {}", json_number(Some(f)));
    }
    for (p, v) in &row.figures.peers {
        let _ = write!(s, ", {}: {}", json_string(p), json_number(*v));
    }
    for (p, g) in &row.figures.paired {
        let key = format!("vs_{p}");
        let _ = write!(s, ", {}: {}", json_string(&key), json_number(Some(*g)));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{Figures, WORKLOADS};

    #[test]
    fn rounds_to_significant_digits() {
        assert_eq!(round_sig(1234.5678, 4), 1235.0);
        assert_eq!(round_sig(0.012345, 3), 0.0123);
        assert_eq!(round_sig(98765.0, 2), 99000.0);
        assert_eq!(round_sig(0.0, 4), 0.0);
    }

    #[test]
    fn json_line_has_the_documented_shape() {
        let row = Row {
            workload: &WORKLOADS[0],
            figures: Figures {
                multiproc: 1500.25,
                limit: Some(900.0),
                floor: None,
                peers: vec![("procspawn", Some(1700.0))],
                paired: vec![],
            },
            cpython: None,
        };
        let line = json_line(&row);
        assert_eq!(
            line,
            "{\"workload\": \"start_join_spawn\", \"unit\": \"us\", \"better\": \"lower\", \
             \"multiproc\": 1500.0, \"cpython\": null, \"limit\": 900.0, \"procspawn\": 1700.0}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["procspawn"], 1700.0);
        assert!(v.get("floor").is_none());
    }

    #[test]
    fn json_line_carries_the_floor_where_there_is_one() {
        let row = Row {
            workload: &WORKLOADS[0],
            figures: Figures {
                multiproc: 5.0,
                limit: Some(40.0),
                floor: Some(3.5),
                peers: vec![],
                paired: vec![],
            },
            cpython: None,
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&row)).unwrap();
        assert_eq!(v["floor"], 3.5);
        assert_eq!(v["limit"], 40.0);
    }

    #[test]
    fn json_line_of_a_row_without_limit_and_a_missing_peer() {
        let row = Row {
            workload: &crate::workloads::MPI_WORKLOADS[0],
            figures: Figures {
                multiproc: 12.0,
                limit: None,
                floor: None,
                peers: vec![("mpi4py", None), ("local_pool", Some(1.9))],
                paired: vec![("local_pool", 0.97)],
            },
            cpython: None,
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&row)).unwrap();
        assert!(v["limit"].is_null());
        assert!(v["mpi4py"].is_null() && v.get("mpi4py").is_some());
        assert_eq!(v["local_pool"], 1.9);
        assert_eq!(v["vs_local_pool"], 0.97);
        assert_eq!(v["multiproc"], 12.0);
        let t = ratios_table(std::slice::from_ref(&row));
        assert!(t.contains("mpi4py/multiproc"), "{t}");
        assert!(t.contains("≥ 5x mpi4py: no figure"), "{t}");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["a".to_string(), "bb".to_string()],
            &[vec!["long name".to_string(), "1".to_string()]],
        );
        assert_eq!(t, "a          bb\nlong name   1\n");
    }
}
