//! The table of workloads. Adding one means writing its `measure` function (usually with
//! [`crate::measure::interleaved`]), a matching entry in `python/bench_cpython.py`, and a
//! line in [`WORKLOADS`]. The MPI pool's rows, measured against mpi4py.futures under
//! `mpirun`, are in [`MPI_WORKLOADS`].

mod large;
mod manager;
mod manager_queue;
pub mod mpi_pool;
mod pipe_rtt;
mod pool;
mod queue;
mod shm;
mod start_join;
mod sync;

use crate::measure::{Contender, interleaved};
use crate::{BenchResult, Settings};

/// Which way is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// A cost: time per operation.
    Lower,
    /// A rate: operations or bytes per second.
    Higher,
}

impl Better {
    /// As written in the JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }

    /// How many times better `a` is than `b` (above 1: `a` wins).
    pub fn gain(self, a: f64, b: f64) -> f64 {
        match self {
            Better::Lower => b / a,
            Better::Higher => a / b,
        }
    }
}

/// A goal for multiproc, as set in the design's performance table.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// multiproc costs at most this many times the bare limit.
    WithinLimit(f64),
    /// multiproc is at least this many times better than CPython.
    OverCpython(f64),
    /// multiproc is at least this many times better than the named peer.
    OverPeer(&'static str, f64),
    /// multiproc reaches at least this share of the bare limit's rate (0.5: half).
    ShareOfLimit(f64),
    /// multiproc reaches at least this share of the named peer's figure (0.9: 90 %).
    ShareOfPeer(&'static str, f64),
    /// multiproc costs at most this many times the floor (the fastest way to do the
    /// work at all, burning CPU while it waits).
    WithinFloor(f64),
    /// multiproc costs at most this many times what it costs on the named workload
    /// (same unit).
    WithinWorkload(&'static str, f64),
}

impl Goal {
    /// A short description, such as `≤ 2x limit` or `beats procspawn`.
    pub fn describe(&self) -> String {
        let over = |who: &str, k: f64| {
            if k == 1.0 {
                format!("beats {who}")
            } else {
                format!("≥ {k}x {who}")
            }
        };
        match *self {
            Goal::WithinLimit(k) => format!("≤ {k}x limit"),
            Goal::OverCpython(k) => over("CPython", k),
            Goal::OverPeer(p, k) => over(p, k),
            Goal::ShareOfLimit(k) => format!("≥ {}% of limit", k * 100.0),
            Goal::ShareOfPeer(p, k) => format!("≥ {}% of {p}", k * 100.0),
            Goal::WithinFloor(k) => format!("≤ {k}x floor"),
            Goal::WithinWorkload(w, k) => format!("≤ {k}x {w}"),
        }
    }

    /// Whether `row` meets the goal; `None` when a figure it needs is missing. `all` is
    /// every row of the run (a goal may compare with another workload).
    pub fn met(&self, row: &Row, all: &[Row]) -> Option<bool> {
        match *self {
            Goal::WithinLimit(k) => row.cost_vs_limit().map(|c| c <= k),
            Goal::OverCpython(k) => row.gain_over_cpython().map(|g| g >= k),
            Goal::OverPeer(p, k) | Goal::ShareOfPeer(p, k) => row.gain_over_peer(p).map(|g| g >= k),
            Goal::ShareOfLimit(k) => row.cost_vs_limit().map(|c| 1.0 / c >= k),
            Goal::WithinFloor(k) => row.cost_vs_floor().map(|c| c <= k),
            Goal::WithinWorkload(w, k) => row.cost_vs_workload(w, all).map(|c| c <= k),
        }
    }
}

/// One workload: what it measures and how.
pub struct Workload {
    /// The key in the JSON lines and in the CPython script.
    pub name: &'static str,
    /// The unit of every figure (`us` is microseconds per operation).
    pub unit: &'static str,
    /// Whether lower or higher figures are better.
    pub better: Better,
    /// One line for the table's reader.
    pub what: &'static str,
    /// What multiproc aims for.
    pub goals: &'static [Goal],
    /// Measures multiproc, the limit and the Rust peers, in the same run.
    pub measure: fn(&Settings) -> BenchResult<Figures>,
}

/// Every workload, in the order they run.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "start_join_spawn",
        unit: "us",
        better: Better::Lower,
        what: "start + join of a no-op process, spawn",
        goals: &[Goal::WithinLimit(2.0), Goal::OverPeer("procspawn", 1.0)],
        measure: start_join::spawn,
    },
    Workload {
        name: "start_join_fork",
        unit: "us",
        better: Better::Lower,
        what: "start + join of a no-op process, fork",
        goals: &[Goal::WithinLimit(2.0)],
        measure: start_join::fork,
    },
    Workload {
        name: "start_join_forkserver",
        unit: "us",
        better: Better::Lower,
        what: "start + join of a no-op process, forkserver",
        goals: &[Goal::OverCpython(10.0)],
        measure: start_join::forkserver,
    },
    Workload {
        name: "pipe_rtt_bytes",
        unit: "us",
        better: Better::Lower,
        what: "Pipe round trip, 8 bytes (send_bytes / recv_bytes)",
        goals: &[
            Goal::WithinLimit(1.3),
            Goal::WithinFloor(1.5),
            Goal::OverCpython(1.0),
            Goal::OverPeer("ipc-channel", 1.0),
        ],
        measure: pipe_rtt::bytes,
    },
    Workload {
        name: "pipe_rtt_value",
        unit: "us",
        better: Better::Lower,
        what: "Pipe round trip, small value (send / recv)",
        goals: &[
            Goal::WithinLimit(1.3),
            Goal::WithinFloor(1.5),
            Goal::OverCpython(1.0),
            Goal::OverPeer("ipc-channel", 1.0),
        ],
        measure: pipe_rtt::value,
    },
    Workload {
        name: "lock_uncontended",
        unit: "ns",
        better: Better::Lower,
        what: "Lock acquire + release, uncontended",
        goals: &[Goal::WithinLimit(2.0)],
        measure: sync::lock_uncontended,
    },
    Workload {
        name: "value_contended",
        unit: "s",
        better: Better::Lower,
        what: "Value, 2 processes x 200k locked increments (from a start gate to the joins)",
        goals: &[Goal::OverCpython(10.0)],
        measure: sync::value_contended,
    },
    Workload {
        name: "event_pingpong",
        unit: "us",
        better: Better::Lower,
        what: "two processes alternating on two Events, per round trip",
        goals: &[
            Goal::WithinLimit(1.3),
            Goal::WithinFloor(4.0),
            Goal::OverCpython(3.0),
        ],
        measure: sync::event_pingpong,
    },
    Workload {
        name: "shm_bandwidth",
        unit: "GB/s",
        better: Better::Higher,
        what: "SharedMemory written by a child, attached and copied by the parent",
        goals: &[Goal::ShareOfLimit(0.5)],
        measure: shm::shm_bandwidth,
    },
    Workload {
        name: "pipe_large_bytes",
        unit: "GB/s",
        better: Better::Higher,
        what: "Pipe round trip of 64 MiB (send_bytes / recv_bytes), one way",
        goals: &[
            Goal::ShareOfLimit(0.3),
            Goal::OverCpython(3.0),
            Goal::OverPeer("ipc-channel", 1.0),
        ],
        measure: large::pipe_large_bytes,
    },
    Workload {
        name: "pipe_large_value",
        unit: "GB/s",
        better: Better::Higher,
        what: "Pipe round trip of a 64 MiB Vec<u8> (send / recv), one way",
        goals: &[
            Goal::ShareOfLimit(0.3),
            Goal::OverCpython(3.0),
            Goal::OverPeer("ipc-channel", 1.0),
            Goal::WithinWorkload("pipe_large_bytes", 1.3),
        ],
        measure: large::pipe_large_value,
    },
    Workload {
        name: "pipe_large_f64",
        unit: "GB/s",
        better: Better::Higher,
        what: "Pipe round trip of a Vec<f64> of 8 M elements (send / recv), one way",
        goals: &[Goal::ShareOfLimit(0.2), Goal::OverPeer("ipc-channel", 1.0)],
        measure: large::pipe_large_f64,
    },
    Workload {
        name: "spawn_result_large",
        unit: "GB/s",
        better: Better::Higher,
        what: "a child returns a 64 MiB Vec<u8> from spawn(...).join(), start to result",
        goals: &[
            Goal::ShareOfLimit(0.3),
            Goal::OverCpython(3.0),
            Goal::OverPeer("ipc-channel", 1.0),
        ],
        measure: large::spawn_result_large,
    },
    Workload {
        name: "queue_small_1p1c",
        unit: "msgs/s",
        better: Better::Higher,
        what: "Queue of u64, 1 producer process -> the parent, first item to last",
        goals: &[Goal::OverCpython(20.0), Goal::OverPeer("ipc-channel", 3.0)],
        measure: queue::queue_small_1p1c,
    },
    Workload {
        name: "queue_small_2p1c",
        unit: "msgs/s",
        better: Better::Higher,
        what: "Queue of u64, 2 producer processes -> the parent, first item to last",
        goals: &[Goal::OverCpython(1.0)],
        measure: queue::queue_small_2p1c,
    },
    Workload {
        name: "queue_large",
        unit: "MB/s",
        better: Better::Higher,
        what: "Queue of 1 MiB Vec<u8>, 1 producer process -> the parent, first item to last",
        goals: &[Goal::OverCpython(5.0), Goal::ShareOfLimit(0.25)],
        measure: queue::queue_large,
    },
    Workload {
        name: "joinable_roundtrip",
        unit: "us",
        better: Better::Lower,
        what: "JoinableQueue: put + join in the parent, get + task_done in a child",
        goals: &[Goal::OverCpython(5.0)],
        measure: queue::joinable_roundtrip,
    },
    Workload {
        name: "pool_map_small",
        unit: "us",
        better: Better::Lower,
        what: "Pool of 2: map(identity, 0..200,000), default chunks, per item",
        goals: &[Goal::OverCpython(10.0)],
        measure: pool::pool_map_small,
    },
    Workload {
        name: "pool_map_chunk1",
        unit: "us",
        better: Better::Lower,
        what: "Pool of 2: map_chunked(identity, 0..20,000, 1), per item",
        goals: &[Goal::OverCpython(5.0), Goal::OverPeer("procspawn", 1.0)],
        measure: pool::pool_map_chunk1,
    },
    Workload {
        name: "pool_apply_async",
        unit: "us",
        better: Better::Lower,
        what: "Pool of 2: 20,000 apply_async_with, a callback each, then all waited for, per task",
        goals: &[Goal::OverCpython(5.0), Goal::OverPeer("procspawn", 1.0)],
        measure: pool::pool_apply_async,
    },
    Workload {
        name: "pool_cpu_speedup",
        unit: "x",
        better: Better::Higher,
        what: "Pool of 2: a CPU-bound job split over the workers, serial time / pool time",
        goals: &[Goal::ShareOfLimit(0.9)],
        measure: pool::pool_cpu_speedup,
    },
    Workload {
        name: "manager_dict_set",
        unit: "us",
        better: Better::Lower,
        what: "Manager dict: d[k] = v from a child process, per operation",
        goals: &[Goal::OverCpython(5.0)],
        measure: manager::manager_dict_set,
    },
    Workload {
        name: "manager_dict_get",
        unit: "us",
        better: Better::Lower,
        what: "Manager dict: d.get(k) from a child process, per operation",
        goals: &[Goal::OverCpython(5.0)],
        measure: manager::manager_dict_get,
    },
    Workload {
        name: "manager_queue_rtt",
        unit: "us",
        better: Better::Lower,
        what: "Manager Queue: put by the parent, get + put back by a child, get by the parent, per round trip",
        // Four calls, two of which wait for the other process to wake: each such wait
        // costs a sleep and a wake-up, which no spinning call path avoids.
        goals: &[Goal::OverCpython(3.0)],
        measure: manager_queue::manager_queue_rtt,
    },
];

/// The MPI pool's workloads, run last: each is measured under `mpirun -n 3` (rank 0
/// times, ranks 1 and 2 serve), against mpi4py.futures under the same launcher. They
/// need the feature `mpi`, `mpirun`, and for the mpi4py column, mpi4py.
pub const MPI_WORKLOADS: &[Workload] = &[
    Workload {
        name: "mpi_pool_map_chunk1",
        unit: "us",
        better: Better::Lower,
        what: "MPI pool of 2 ranks: map_chunked(identity, 0..20,000, 1), per item",
        goals: &[Goal::OverPeer("mpi4py", 5.0)],
        measure: mpi_pool::map_chunk1,
    },
    Workload {
        name: "mpi_pool_map_large",
        unit: "MB/s",
        better: Better::Higher,
        what: "MPI pool of 2 ranks: map_chunked over 200 Vec<u8> of 1 MiB, chunksize 1, small results",
        goals: &[],
        measure: mpi_pool::map_large,
    },
    Workload {
        name: "mpi_pool_cpu_speedup",
        unit: "x",
        better: Better::Higher,
        what: "MPI pool of 2 ranks: the CPU-bound job of pool_cpu_speedup, serial time / pool time",
        goals: &[Goal::ShareOfPeer(mpi_pool::LOCAL_POOL, 0.9)],
        measure: mpi_pool::cpu_speedup,
    },
];

/// Every workload: [`WORKLOADS`], then [`MPI_WORKLOADS`].
pub fn all() -> impl Iterator<Item = &'static Workload> {
    WORKLOADS.iter().chain(MPI_WORKLOADS)
}

/// What the Rust side measured for one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// multiproc's median.
    pub multiproc: f64,
    /// The bare-syscall limit's median, on the workloads that have one.
    pub limit: Option<f64>,
    /// The floor's median, on the workloads that have one.
    pub floor: Option<f64>,
    /// The peers' medians, by name; `None` for a peer that could not be measured in
    /// this run (mpi4py not installed).
    pub peers: Vec<(&'static str, Option<f64>)>,
    /// For a peer timed in pairs with multiproc (each of its samples right before or
    /// after one of multiproc's, under the same conditions), the median over the pairs
    /// of multiproc's gain over it: on a loaded machine, where samples fall in two modes,
    /// a steadier comparison than the ratio of the two medians.
    pub paired: Vec<(&'static str, f64)>,
}

impl Figures {
    /// Sorts contenders' medians into multiproc, the limit and the peers.
    pub fn from_medians(medians: Vec<(&'static str, f64)>) -> BenchResult<Figures> {
        let mut multiproc = None;
        let mut limit = None;
        let mut floor = None;
        let mut peers = Vec::new();
        for (name, value) in medians {
            match name {
                "multiproc" => multiproc = Some(value),
                "limit" => limit = Some(value),
                "floor" => floor = Some(value),
                _ => peers.push((name, Some(value))),
            }
        }
        Ok(Figures {
            multiproc: multiproc.ok_or("no multiproc figure")?,
            limit: Some(limit.ok_or("no limit figure")?),
            floor,
            peers,
            paired: Vec::new(),
        })
    }

    /// Measures `contenders` interleaved and sorts their medians.
    pub fn interleaved(reps: usize, contenders: &mut [Contender<'_>]) -> BenchResult<Figures> {
        Figures::from_medians(interleaved(reps, contenders)?)
    }
}

/// Everything measured for one workload.
pub struct Row {
    /// The workload.
    pub workload: &'static Workload,
    /// multiproc, the limit and the Rust peers.
    pub figures: Figures,
    /// CPython's median, when the script ran.
    pub cpython: Option<f64>,
}

impl Row {
    /// How many times the limit multiproc costs (1 is the floor; lower is better); `None`
    /// on the workloads without a limit.
    pub fn cost_vs_limit(&self) -> Option<f64> {
        self.figures
            .limit
            .map(|l| self.workload.better.gain(l, self.figures.multiproc))
    }

    /// How many times the floor multiproc costs (1 is the floor; lower is better).
    pub fn cost_vs_floor(&self) -> Option<f64> {
        self.figures
            .floor
            .map(|f| self.workload.better.gain(f, self.figures.multiproc))
    }

    /// How many times what it costs on workload `name` multiproc costs here; `None`
    /// when that workload is not among `all`.
    pub fn cost_vs_workload(&self, name: &str, all: &[Row]) -> Option<f64> {
        all.iter().find(|r| r.workload.name == name).map(|r| {
            self.workload
                .better
                .gain(r.figures.multiproc, self.figures.multiproc)
        })
    }

    /// How many times better multiproc is than CPython.
    pub fn gain_over_cpython(&self) -> Option<f64> {
        self.cpython
            .map(|c| self.workload.better.gain(self.figures.multiproc, c))
    }

    /// How many times better multiproc is than the peer `name` (for a rate, its share of
    /// the peer's: 0.9 is 90 %); for a peer timed in pairs with multiproc, the median of
    /// the pairs' gains.
    pub fn gain_over_peer(&self, name: &str) -> Option<f64> {
        if let Some(&(_, g)) = self.figures.paired.iter().find(|(p, _)| *p == name) {
            return Some(g);
        }
        self.figures
            .peers
            .iter()
            .find(|(p, _)| *p == name)
            .and_then(|&(_, v)| v)
            .map(|v| self.workload.better.gain(self.figures.multiproc, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cpython: Option<f64>) -> Row {
        Row {
            workload: &WORKLOADS[0],
            figures: Figures {
                multiproc: 100.0,
                limit: Some(60.0),
                floor: Some(50.0),
                peers: vec![("procspawn", Some(150.0)), ("absent", None)],
                paired: vec![],
            },
            cpython,
        }
    }

    #[test]
    fn workload_names_are_unique() {
        let all: Vec<&Workload> = all().collect();
        for (i, w) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|o| o.name != w.name));
        }
    }

    #[test]
    fn ratios_read_as_gains() {
        let r = row(Some(1000.0));
        assert!((r.cost_vs_limit().unwrap() - 100.0 / 60.0).abs() < 1e-12);
        assert_eq!(r.gain_over_cpython(), Some(10.0));
        assert_eq!(r.gain_over_peer("procspawn"), Some(1.5));
        assert_eq!(r.gain_over_peer("nobody"), None);
        assert_eq!(r.gain_over_peer("absent"), None);
        assert_eq!(Better::Higher.gain(10.0, 5.0), 2.0);
    }

    #[test]
    fn goals_are_checked() {
        let r = row(None);
        assert_eq!(Goal::WithinLimit(2.0).met(&r, &[]), Some(true));
        assert_eq!(Goal::WithinLimit(1.3).met(&r, &[]), Some(false));
        assert_eq!(Goal::OverCpython(10.0).met(&r, &[]), None);
        assert_eq!(Goal::OverPeer("procspawn", 1.0).met(&r, &[]), Some(true));
        assert_eq!(
            Goal::OverPeer("procspawn", 1.0).describe(),
            "beats procspawn"
        );
        assert_eq!(Goal::WithinLimit(1.3).describe(), "≤ 1.3x limit");
        assert_eq!(Goal::WithinFloor(2.0).met(&r, &[]), Some(true));
        assert_eq!(Goal::WithinFloor(1.5).met(&r, &[]), Some(false));
        assert_eq!(Goal::WithinFloor(1.5).describe(), "≤ 1.5x floor");
    }

    #[test]
    fn goals_compare_with_another_workload() {
        let r = row(None);
        let mut other = row(None);
        other.workload = &WORKLOADS[1];
        other.figures.multiproc = 80.0;
        let goal = Goal::WithinWorkload(WORKLOADS[1].name, 1.3);
        assert_eq!(goal.met(&r, &[]), None);
        assert_eq!(goal.met(&r, std::slice::from_ref(&other)), Some(true));
        other.figures.multiproc = 70.0;
        assert_eq!(goal.met(&r, std::slice::from_ref(&other)), Some(false));
        assert_eq!(goal.describe(), format!("≤ 1.3x {}", WORKLOADS[1].name));
    }

    #[test]
    fn share_of_limit_reads_rates() {
        let rate = WORKLOADS
            .iter()
            .find(|w| w.better == Better::Higher)
            .expect("a rate workload");
        let r = Row {
            workload: rate,
            figures: Figures {
                multiproc: 6.0,
                limit: Some(10.0),
                floor: None,
                peers: vec![
                    ("mpi4py", Some(5.0)),
                    ("absent", None),
                    ("local", Some(20.0)),
                ],
                paired: vec![("local", 0.95)],
            },
            cpython: Some(0.3),
        };
        assert_eq!(Goal::ShareOfLimit(0.5).met(&r, &[]), Some(true));
        assert_eq!(Goal::ShareOfLimit(0.7).met(&r, &[]), Some(false));
        assert_eq!(r.gain_over_cpython(), Some(20.0));
        assert_eq!(Goal::ShareOfLimit(0.5).describe(), "≥ 50% of limit");
        assert_eq!(Goal::ShareOfPeer("mpi4py", 0.9).met(&r, &[]), Some(true));
        assert_eq!(Goal::ShareOfPeer("mpi4py", 1.3).met(&r, &[]), Some(false));
        assert_eq!(Goal::ShareOfPeer("absent", 0.9).met(&r, &[]), None);
        assert_eq!(
            Goal::ShareOfPeer("mpi4py", 0.9).describe(),
            "≥ 90% of mpi4py"
        );
        // Paired: the pairs' median, not the ratio of the medians (0.3).
        assert_eq!(r.gain_over_peer("local"), Some(0.95));
        assert_eq!(Goal::ShareOfPeer("local", 0.9).met(&r, &[]), Some(true));
        let mut r = r;
        r.figures.limit = None;
        assert_eq!(r.cost_vs_limit(), None);
        assert_eq!(Goal::ShareOfLimit(0.5).met(&r, &[]), None);
        assert_eq!(Goal::WithinLimit(2.0).met(&r, &[]), None);
    }

    #[test]
    fn figures_sort_contenders() {
        let f =
            Figures::from_medians(vec![("limit", 1.0), ("peer", 3.0), ("multiproc", 2.0)]).unwrap();
        assert_eq!(f.multiproc, 2.0);
        assert_eq!(f.limit, Some(1.0));
        assert_eq!(f.floor, None);
        assert_eq!(f.peers, vec![("peer", Some(3.0))]);
        let f = Figures::from_medians(vec![("multiproc", 2.0), ("limit", 1.0), ("floor", 0.5)])
            .unwrap();
        assert_eq!(f.floor, Some(0.5));
        assert!(f.peers.is_empty());
        assert!(Figures::from_medians(vec![("limit", 1.0)]).is_err());
    }
}
