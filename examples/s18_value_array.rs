//! S18 (seed 004): shared memory with `Value` and `Array`.
//!
//! The tutorial creates `Value('i', 0)`, `Value('d', 3.14)` and `Array('i', [1, 2, 3, 4])`
//! (an `Array` is one-dimensional). Here a child process changes all three, and the
//! parent, which never received anything back, sees the changes: the memory is shared.
//! Python's type codes become Rust types: `'i'` is `i32`, `'d'` is `f64`.

use multiproc::{Array, Process, Value};

/// The child: `value1 += 1`, `value2 *= 2`, every item of the array squared.
fn job((value1, value2, array): (Value<i32>, Value<f64>, Array<i32>)) -> multiproc::Result<()> {
    *value1.get_lock()? += 1;
    *value2.get_lock()? *= 2.0;
    for x in array.get_lock()?.iter_mut() {
        *x *= *x;
    }
    println!("child (pid {}) changed them", std::process::id());
    Ok(())
}

fn show(when: &str, v1: &Value<i32>, v2: &Value<f64>, a: &Array<i32>) -> multiproc::Result<()> {
    println!(
        "{when}: value1 = {}, value2 = {}, array = {:?}",
        v1.get()?,
        v2.get()?,
        a.to_vec()?
    );
    Ok(())
}

pub fn main() -> multiproc::Result<()> {
    let value1 = Value::new(0i32)?;
    #[allow(clippy::approx_constant, reason = "the tutorial's value, not π")]
    let value2 = Value::new(3.14f64)?;
    let array = Array::from_slice(&[1i32, 2, 3, 4])?;
    show("before", &value1, &value2, &array)?;

    let mut p = Process::new(job, (value1.clone(), value2.clone(), array.clone()));
    p.start()?;
    p.join()?;
    show("after ", &value1, &value2, &array)?;
    Ok(())
}
