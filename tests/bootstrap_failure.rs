//! A child that dies during its bootstrap, or cannot decode its arguments, is an error
//! for the parent, never a hang.

mod common;

use common::{LONG, METHODS};
use multiproc::{Error, Process, get_context};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes fine in the parent; decoding it in the child aborts the child.
struct AbortOnDecode;

impl Serialize for AbortOnDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for AbortOnDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        std::process::abort()
    }
}

/// Serializes fine in the parent; decoding it in the child always fails.
struct RefuseToDecode;

const REFUSAL: &str = "this value refuses to be decoded";

impl Serialize for RefuseToDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for RefuseToDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(REFUSAL))
    }
}

fn never_runs_abort(_: AbortOnDecode) -> u32 {
    panic!("the target ran although its argument could not be decoded");
}

fn never_runs_refuse(_: RefuseToDecode) -> u32 {
    panic!("the target ran although its argument could not be decoded");
}

fn process_never_runs_abort(_: AbortOnDecode) {
    panic!("the target ran although its argument could not be decoded");
}

fn process_never_runs_refuse(_: RefuseToDecode) {
    panic!("the target ran although its argument could not be decoded");
}

#[test]
fn a_child_that_dies_decoding_its_arguments_is_worker_lost_for_spawn_join() {
    for method in METHODS {
        let mut h = get_context(method)
            .spawn(never_runs_abort, AbortOnDecode)
            .unwrap();
        let pid = h.pid();
        match h.join_timeout(LONG) {
            Err(Error::WorkerLost { pid: p, exitcode }) => {
                assert_eq!(p, pid, "{method}");
                assert_eq!(exitcode, -6, "{method}: SIGABRT");
            }
            other => {
                let _ = h.process().kill();
                panic!("{method}: expected WorkerLost, got {other:?}");
            }
        }
    }
}

#[test]
fn a_child_that_dies_decoding_its_arguments_has_exitcode_minus_six() {
    for method in METHODS {
        let mut p = get_context(method).process(process_never_runs_abort, AbortOnDecode);
        p.start().unwrap();
        let ended = p.join_timeout(LONG);
        if !matches!(ended, Ok(true)) {
            let _ = p.kill();
        }
        assert!(matches!(ended, Ok(true)), "{method}: join gave {ended:?}");
        assert_eq!(p.exitcode(), Some(-6), "{method}");
    }
}

#[test]
fn arguments_that_fail_to_decode_are_a_bootstrap_error_for_spawn_join() {
    for method in METHODS {
        let mut h = get_context(method)
            .spawn(never_runs_refuse, RefuseToDecode)
            .unwrap();
        match h.join_timeout(LONG) {
            Err(Error::Bootstrap(msg)) => {
                assert!(msg.contains("decode"), "{method}: message {msg:?}");
            }
            other => {
                let _ = h.process().kill();
                panic!("{method}: expected Bootstrap, got {other:?}");
            }
        }
    }
}

#[test]
fn arguments_that_fail_to_decode_are_a_bootstrap_error_for_process_join() {
    for method in METHODS {
        let mut p = Process::new(process_never_runs_refuse, RefuseToDecode).start_method(method);
        p.start().unwrap();
        match p.join() {
            Err(Error::Bootstrap(msg)) => {
                assert!(msg.contains("decode"), "{method}: message {msg:?}")
            }
            other => panic!("{method}: expected Bootstrap, got {other:?}"),
        }
        assert_ne!(
            p.exitcode(),
            Some(0),
            "{method}: a failed bootstrap is not success"
        );
        assert_ne!(p.exitcode(), None, "{method}");
    }
}

#[test]
fn arguments_that_fail_to_decode_are_a_bootstrap_error_for_join_timeout() {
    for method in METHODS {
        let mut p = Process::new(process_never_runs_refuse, RefuseToDecode).start_method(method);
        p.start().unwrap();
        let r = p.join_timeout(LONG);
        if matches!(r, Ok(false)) {
            let _ = p.kill();
        }
        assert!(matches!(r, Err(Error::Bootstrap(_))), "{method}: got {r:?}");
    }
}
