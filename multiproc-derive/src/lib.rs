//! The `#[multiproc::proxy]` attribute, re-exported by `multiproc` (feature `derive`).
//! Use it through `multiproc`; this crate has no API of its own.
//!
//! Put it on an inherent `impl` block of a type of yours, and a manager can hold
//! objects of that type in its server process (Python's `BaseManager.register`):
//!
//! ```ignore
//! pub struct Maths { total: i64 }
//!
//! #[multiproc::proxy]
//! impl Maths {
//!     /// A new counter.
//!     pub fn new(start: i64) -> Self { Maths { total: start } }
//!     /// Adds `x`, returns the new total.
//!     pub fn add(&mut self, x: i64) -> i64 { self.total += x; self.total }
//! }
//!
//! let manager = multiproc::Manager::builder().register::<Maths>().start()?;
//! let maths = MathsProxy::new(&manager, 40)?;   // built in the server
//! assert_eq!(maths.add(2)?, 42);                 // runs there
//! ```
//!
//! The block is kept as written, and the attribute adds:
//!
//! - `impl Registered for Maths`: the server builds an object with a constructor named
//!   in the request and runs a method named in the request, its arguments decoded as
//!   one tuple. A parameter `&str`, `&[T]` or `&T` arrives as a `String`, `Vec<T>` or
//!   `T` and is lent to the method. Nothing else can be called: an unknown name is
//!   refused (`CallError::NoSuchMethod`).
//! - `MathsProxy`, the client's handle: one associated function per constructor, taking
//!   the `&Manager` first, and one `&self` method per method, returning
//!   `multiproc::Result<R>` where the method returns `R` (a method returning
//!   `Result<R, E>` gives `Result<Result<R, E>>`: the transport's error outside). A
//!   method returning `&str`, `&[T]` or `&T` gives `String`, `Vec<T>` or `T`. The proxy
//!   is `Clone` (another reference to the same object), `Debug`, `Serialize` and
//!   `Deserialize` (it travels to children, through pipes and queues, and inside other
//!   managed values), and implements `Proxy`.
//!
//! What is exposed:
//!
//! - **Constructors**: associated functions returning `Self` (or the type by name), or
//!   `Result<Self, E>` with `E: Display`, whose `Err` reaches the proxy's constructor as
//!   `Error::Remote` with the error's text (Python's `RemoteError`).
//! - **Methods**: functions taking `&self` or `&mut self`. The proxy takes `&self` for
//!   both: the server runs one call at a time on an object.
//! - Only functions with a visibility (`pub`, `pub(crate)`, …), each proxy function
//!   with the visibility of its original, and its doc comment. A function marked
//!   `#[multiproc(skip)]` is left out, as are associated functions that return
//!   something other than `Self`.
//! - `MathsProxy` is as visible as the most visible constructor (the attribute cannot
//!   see the type's own visibility): in a library, `pub fn new` makes it part of the
//!   API, `pub(crate) fn new` keeps it inside.
//!
//! One `impl` block of a type carries the attribute and lists every function served;
//! other blocks of the type may hold the rest.
//!
//! Arguments: `typeid = "name"` sets the name the server knows the type by (the type's
//! name by default; two types served by one manager need two names), and
//! `crate = "path"` names the `multiproc` crate where it is renamed or re-exported.
//!
//! Refused at compile time, at the offending span, all at once: a block without a
//! constructor, a generic block, a trait impl, `self` by value, `async fn`,
//! `unsafe fn`, generic methods, `impl Trait` parameters or results, `&mut` parameters,
//! borrows inside another type, more than 16 parameters, and names that would hide what every proxy has
//! (`clone`, `fmt`, `core`, …). Only the real error is reported: the rest of the block
//! still expands.
#![deny(missing_docs)]

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// The attribute is defined in `multiproc-derive` and used as `multiproc::proxy`.
#[proc_macro_attribute]
pub fn proxy(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(input as syn::Item);
    expand::expand(args.into(), item).into()
}
