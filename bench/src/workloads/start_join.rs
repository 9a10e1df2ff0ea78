//! Start + join of a process that does nothing, with each start method.

use multiproc::StartMethod;

use super::Figures;
use crate::limits::{self, SelfSpawn};
use crate::measure::{Contender, time_each};
use crate::{BenchResult, Settings};

/// The child's work: none.
fn noop(_: ()) {}

/// One start + join with multiproc, checking the child's exit code.
fn multiproc_once(method: StartMethod) -> BenchResult<()> {
    let mut p = multiproc::get_context(method).process(noop, ());
    p.start()?;
    p.join()?;
    match p.exitcode() {
        Some(0) => Ok(()),
        code => Err(format!("multiproc child ended with exit code {code:?}").into()),
    }
}

/// One start + join with procspawn.
fn procspawn_once() -> BenchResult<()> {
    procspawn::spawn((), |()| ()).join()?;
    Ok(())
}

/// An operation to time, by contender name.
type Op<'a> = (&'static str, Box<dyn Fn() -> BenchResult<()> + 'a>);

/// Warms every operation up (the first forkserver start launches the server, the first
/// exec loads the binary into the page cache), then times `per_rep` of each per repetition.
fn time_ops(reps: usize, per_rep: usize, ops: &[Op<'_>]) -> BenchResult<Figures> {
    for (name, op) in ops {
        for _ in 0..2 {
            op().map_err(|e| format!("{name}: {e}"))?;
        }
    }
    let mut contenders: Vec<Contender<'_>> = ops
        .iter()
        .map(|(name, op)| Contender::new(name, move || time_each(per_rep, op)))
        .collect();
    Figures::interleaved(reps, &mut contenders)
}

/// `start_join_spawn`: limit = posix_spawn of this binary, which exits at once, + waitpid.
pub fn spawn(s: &Settings) -> BenchResult<Figures> {
    let limit = SelfSpawn::new()?;
    let ops: [Op<'_>; 3] = [
        ("limit", Box::new(|| Ok(limit.run()?))),
        ("multiproc", Box::new(|| multiproc_once(StartMethod::Spawn))),
        ("procspawn", Box::new(procspawn_once)),
    ];
    time_ops(s.pick(5, 9), s.pick(20, 50), &ops)
}

/// `start_join_fork`: limit = fork + `_exit(0)` + waitpid.
pub fn fork(s: &Settings) -> BenchResult<Figures> {
    let ops: [Op<'_>; 2] = [
        ("limit", Box::new(|| Ok(limits::fork_exit_wait()?))),
        ("multiproc", Box::new(|| multiproc_once(StartMethod::Fork))),
    ];
    time_ops(s.pick(5, 9), s.pick(100, 300), &ops)
}

/// `start_join_forkserver`: limit = fork + `_exit(0)` + waitpid, as for fork.
pub fn forkserver(s: &Settings) -> BenchResult<Figures> {
    let ops: [Op<'_>; 2] = [
        ("limit", Box::new(|| Ok(limits::fork_exit_wait()?))),
        (
            "multiproc",
            Box::new(|| multiproc_once(StartMethod::Forkserver)),
        ),
    ];
    time_ops(s.pick(5, 9), s.pick(100, 300), &ops)
}
