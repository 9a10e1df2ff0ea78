//! `JoinHandle::join` lets go of everything that watched the child: its pidfd and its
//! status channel are closed when `join` returns, not at some later start.
//!
//! This file holds exactly one test, so that no other test of the same process opens
//! descriptors or starts children while it counts.

mod common;

use multiproc::{StartMethod, get_context};

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn join_handle_join_closes_the_descriptors_that_watched_the_child() {
    for method in [
        StartMethod::Forkserver,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let ctx = get_context(method);
        // A first start brings up what lasts (the fork server and its socket).
        assert_eq!(ctx.spawn(double, 1).unwrap().join().unwrap(), 2);
        let before = common::open_fds();
        let h = ctx.spawn(double, 21).unwrap();
        assert_eq!(h.join().unwrap(), 42);
        let after = common::open_fds();
        assert_eq!(
            before, after,
            "{method}: descriptors still open after join (no other call in between)"
        );
    }
}
