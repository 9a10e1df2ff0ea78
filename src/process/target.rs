//! What a child runs: a [`Target`] function, or an object that implements [`Run`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A function a child process can run: a `fn` item, or a closure that captures nothing,
/// taking `A` and returning `R`.
///
/// The child is a fresh execution of the same binary (or a fork of a clean server), so
/// the target must exist there without any data of the parent: that is what a zero-sized
/// `Copy` function type guarantees. Name this trait in your own helpers:
///
/// ```
/// use multiproc::{JoinHandle, Target};
/// use serde::{Serialize, de::DeserializeOwned};
///
/// fn run_twice<F, R>(f: F) -> multiproc::Result<(R, R)>
/// where
///     F: Target<u32, R>,
///     R: Serialize + DeserializeOwned + 'static,
/// {
///     let a: JoinHandle<R> = multiproc::spawn(f, 1)?;
///     let b = multiproc::spawn(f, 2)?;
///     Ok((a.join()?, b.join()?))
/// }
///
/// assert_eq!(run_twice(|x: u32| x * 10)?, (10, 20));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A closure that captures something is refused at compile time, with a message that
/// says why:
///
/// ```compile_fail
/// let greeting = String::from("hello");
/// let h = multiproc::spawn(move |n: u32| format!("{greeting} {n}"), 1);
/// ```
///
/// A closure that captures only `Copy` values, and a function pointer, satisfy this
/// trait's bounds but carry data (a captured value, an address) that the child would not
/// have. Stable Rust cannot state "zero-sized" as a bound, so they are refused when the
/// program is built (`cargo build`, `cargo test`; `cargo check` does not see it): a
/// compile-time assertion fails with "the target must be a fn item or a closure that
/// captures nothing; pass captured values as the argument", pointing into this crate.
/// Do what it says: pass the value as the argument.
///
/// ```compile_fail,E0080
/// let factor = 3u32;
/// let h = multiproc::spawn(move |n: u32| n * factor, 1);
/// ```
///
/// ```compile_fail,E0080
/// fn double(n: u32) -> u32 { n * 2 }
/// let f: fn(u32) -> u32 = double;
/// let h = multiproc::spawn(f, 1);
/// ```
///
/// ```
/// let h = multiproc::spawn(|(n, factor): (u32, u32)| n * factor, (1, 3))?;
/// assert_eq!(h.join()?, 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the target of a child process",
    label = "not a `fn` item or a non-capturing closure taking `{A}` and returning `{R}`",
    note = "a target runs in another process, where nothing the closure captured exists: \
            use a `fn` item or a closure that captures nothing, and pass data as the \
            argument (it travels by serde)"
)]
pub trait Target<A, R>: Fn(A) -> R + Copy + Send + 'static {}

// Errors name `Target` and its note, not whichever bound inside failed (`String: Copy`).
#[diagnostic::do_not_recommend]
impl<T, A, R> Target<A, R> for T where T: Fn(A) -> R + Copy + Send + 'static {}

/// An object that runs itself in a child: Python's "subclass `Process` and override
/// `run`". The object (its fields) is sent to the child, where `run` is called.
///
/// ```
/// use multiproc::{Process, Run};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greeter { name: String, times: u32 }
///
/// impl Run for Greeter {
///     fn run(self) {
///         for _ in 0..self.times {
///             println!("hello from {} in {}", self.name, multiproc::current_process().name);
///         }
///     }
/// }
///
/// let mut p = Process::from_run(Greeter { name: "greeter".into(), times: 2 });
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Run: Serialize + DeserializeOwned + 'static {
    /// The work of the process, run in the child.
    fn run(self);
}
