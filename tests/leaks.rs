//! Leak checks: many sequential start+join cycles leave no descriptor and no zombie.
//!
//! This file holds exactly one test, so that under `cargo test` no other test of the same
//! process opens descriptors or starts children while it counts.

mod common;

use std::time::Instant;

use common::{LONG, zombie_children};
use multiproc::{Connection, Process, StartMethod, active_children, get_context, pipe};

fn noop(_: ()) {}

fn answer(conn: Connection) {
    conn.send(&1u8).unwrap();
}

/// The open descriptors, after letting the registry forget children that ended (it
/// keeps the last ended child's descriptors until the next start or `active_children`
/// call, whichever comes first; that is bounded, not a leak).
fn open_fds() -> Vec<String> {
    let running = active_children();
    assert!(running.is_empty(), "children still running: {running:?}");
    common::open_fds()
}

fn start_and_join(p: &mut Process, method: StartMethod) {
    p.start().unwrap();
    assert!(
        p.join_timeout(LONG).unwrap(),
        "{method}: a no-op child hung"
    );
    assert_eq!(p.exitcode(), Some(0), "{method}");
}

#[test]
fn sequential_start_join_leaks_no_descriptor_and_no_zombie() {
    for (method, rounds, with_pipe) in [
        (StartMethod::Fork, 1000, 200),
        (StartMethod::Forkserver, 1000, 200),
        (StartMethod::Spawn, 1000, 200),
    ] {
        let ctx = get_context(method);
        // Warm up: the fork server and other once-per-process state are not leaks.
        for _ in 0..5 {
            start_and_join(&mut ctx.process(noop, ()), method);
        }
        let before = open_fds();
        let started = Instant::now();

        for _ in 0..rounds {
            start_and_join(&mut ctx.process(noop, ()), method);
        }
        // Descriptors that travel as arguments, and results through spawn.
        for _ in 0..with_pipe {
            let (here, there) = pipe(true).unwrap();
            let mut p = ctx.process(answer, there);
            start_and_join(&mut p, method);
            assert_eq!(here.recv_timeout::<u8>(LONG).unwrap(), 1);
            assert_eq!(ctx.spawn(|x: u32| x + 1, 1).unwrap().join().unwrap(), 2);
        }

        let after = open_fds();
        let grown: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
        assert!(
            after.len() <= before.len(),
            "{method}: {} descriptors before, {} after; new: {grown:?}\nbefore: {before:#?}\nafter: {after:#?}",
            before.len(),
            after.len()
        );
        let zombies = zombie_children();
        assert!(zombies.is_empty(), "{method}: zombie children {zombies:?}");
        let active = active_children();
        assert!(active.is_empty(), "{method}: still listed {active:?}");
        eprintln!(
            "{method}: {rounds} + {with_pipe} x 2 cycles in {:?}",
            started.elapsed()
        );
    }
}
