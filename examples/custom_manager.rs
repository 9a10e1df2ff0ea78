//! A type of yours served by a manager, as Python's `BaseManager.register` serves a
//! class (the `MathsClass` example of Python's `multiprocessing` documentation):
//!
//! ```python
//! class MyManager(BaseManager): pass
//! MyManager.register('Maths', MathsClass)
//! with MyManager() as manager:
//!     maths = manager.Maths()
//!     print(maths.add(4, 3))         # prints 7
//!     print(maths.mul(7, 8))         # prints 56
//! ```
//!
//! `#[multiproc::proxy]` on the `impl` block registers the methods and generates
//! `MathsProxy`; the manager's server process holds the one `Maths` object, and four
//! children record products through clones of the proxy. The object keeps a count of
//! the calls it served, which no process could keep alone.
//!
//! ```text
//! cargo run --example custom_manager --features derive
//! ```

use multiproc::Manager;

/// The served type. It lives in the manager's server process; every process reaches
/// it through a `MathsProxy`.
#[derive(Default)]
pub struct Maths {
    calls: u64,
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    /// A fresh object: no calls, a total of zero.
    pub fn new() -> Self {
        Maths::default()
    }

    /// `x + y`.
    pub fn add(&mut self, x: i64, y: i64) -> i64 {
        self.calls += 1;
        x + y
    }

    /// `x * y`.
    pub fn mul(&mut self, x: i64, y: i64) -> i64 {
        self.calls += 1;
        x * y
    }

    /// `x / y`, or why not: the error comes back inside `Ok`, the way there and back
    /// having worked.
    pub fn div(&mut self, x: i64, y: i64) -> Result<i64, String> {
        self.calls += 1;
        x.checked_div(y)
            .ok_or_else(|| format!("cannot divide {x} by {y}"))
    }

    /// Adds `x` to the running total and returns it.
    pub fn record(&mut self, x: i64) -> i64 {
        self.calls += 1;
        self.total += x;
        self.total
    }

    /// The calls served so far and the running total.
    pub fn stats(&self) -> (u64, i64) {
        (self.calls, self.total)
    }
}

/// A child's work: records `id * i` for `i` in 1..=10 through its copy of the proxy,
/// and returns the last total it saw. A failed call panics, and the parent's `join`
/// reports it as `Error::Panicked` with the message.
fn worker((maths, id): (MathsProxy, i64)) -> i64 {
    let mut last = 0;
    for i in 1..=10 {
        let product = maths.mul(id, i).expect("the manager answers");
        last = maths.record(product).expect("the manager answers");
    }
    last
}

pub fn main() -> multiproc::Result<()> {
    let manager = Manager::builder().register::<Maths>().start()?;
    let maths = MathsProxy::new(&manager)?;
    println!("{}", maths.add(4, 3)?); // 7
    println!("{}", maths.mul(7, 8)?); // 56
    match maths.div(7, 0)? {
        Ok(q) => println!("7 / 0 = {q}"),
        Err(why) => println!("{why}"),
    }

    let children = (1..=4)
        .map(|id| multiproc::spawn(worker, (maths.clone(), id)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for child in children {
        child.join()?;
    }
    let (calls, total) = maths.stats()?;
    // Four children, ten products each: 55 * (1 + 2 + 3 + 4) = 550.
    println!("{calls} calls served, total {total}");
    assert_eq!((calls, total), (3 + 4 * 20, 550));
    manager.shutdown()
}
