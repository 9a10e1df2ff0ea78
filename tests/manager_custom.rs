//! A type of yours served by a manager (`#[multiproc::proxy]`, Python's
//! `BaseManager.register`): built and called in the server process, from the parent
//! and from children holding copies of its proxy (under every start method); a
//! constructor's `Err` as `Error::Remote`; a method's own `Err` inside `Ok`; a
//! panicking method reported as `Error::Panicked` while the server goes on; borrowed
//! parameters and results; names the server does not serve refused; two types of one
//! name told apart by typeid; a proxy kept in a managed dict; an object freed with its
//! last proxy.
//!
//! Timing: no bound tighter than `LONG` (60 s) for a child to report.

mod common;

use common::LONG;
use multiproc::{Error, Manager, Proxy, StartMethod};

/// A running total, served by the manager.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    /// A total of `start`.
    pub fn new(start: i64) -> Self {
        Maths { total: start }
    }

    /// A total read from `text`, or why it is none.
    pub fn parse(text: &str) -> Result<Maths, String> {
        match text.parse() {
            Ok(total) => Ok(Maths { total }),
            Err(e) => Err(format!("{text:?} is not a total: {e}")),
        }
    }

    /// Adds `x`, returns the new total.
    pub fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }

    /// The total.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// The total plus `x` read as a number, or why `x` is none.
    pub fn checked(&self, x: &str) -> Result<i64, String> {
        match x.parse::<i64>() {
            Ok(x) => Ok(self.total + x),
            Err(e) => Err(format!("{x:?} is not a number: {e}")),
        }
    }

    /// Adds `scale` times the sum of `xs` and the length of `label`.
    pub fn add_all(&mut self, label: &str, xs: &[i64], scale: &i64) -> i64 {
        self.total += xs.iter().sum::<i64>() * scale + label.len() as i64;
        self.total
    }

    /// The sum of `xs` and the length of `bytes`: slices the codec sends as one block.
    pub fn blocks(&self, xs: &[f64], bytes: &[u8]) -> (f64, usize) {
        (xs.iter().sum(), bytes.len())
    }

    /// The `i`-th of `names`, borrowed here and owned in the proxy's answer.
    pub fn pick<'a>(&self, names: &'a [String], i: usize) -> &'a str {
        &names[i]
    }

    /// A copy of the object itself.
    pub fn snapshot(&self) -> Self {
        self.clone()
    }

    /// The process the object lives in.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Panics with `message`.
    pub fn boom(&self, message: String) -> i64 {
        panic!("{message}")
    }

    /// Not served.
    #[multiproc(skip)]
    pub fn reset(&mut self) {
        self.total = 0;
    }

    fn hidden(&self) -> i64 {
        self.total
    }
}

/// Another type of the same name, served under a typeid of its own.
mod other {
    pub struct Maths {
        words: Vec<String>,
    }

    #[multiproc::proxy(typeid = "WordMaths")]
    impl Maths {
        /// No words.
        pub fn new() -> Self {
            Maths { words: Vec::new() }
        }

        /// Adds a word, returns how many there are.
        pub fn add(&mut self, word: &str) -> usize {
            self.words.push(word.to_string());
            self.words.len()
        }
    }
}

fn manager() -> Manager {
    Manager::builder()
        .register::<Maths>()
        .register::<other::Maths>()
        .start()
        .expect("the manager starts")
}

#[test]
fn a_registered_type_is_built_and_called_in_the_server_process() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 40).unwrap();
    assert_eq!(maths.add(2).unwrap(), 42);
    assert_eq!(maths.total().unwrap(), 42);
    let served_by = maths.pid().unwrap();
    assert_ne!(
        served_by,
        std::process::id(),
        "the object lives in the server"
    );
    assert_eq!(maths.snapshot().unwrap(), Maths { total: 42 });
    assert_eq!(maths.core().typeid(), "Maths");

    // Another object of the same type is another object.
    let other = MathsProxy::new(&manager, 1).unwrap();
    assert_eq!(other.add(1).unwrap(), 2);
    assert_eq!(maths.total().unwrap(), 42);
    assert_eq!(other.pid().unwrap(), served_by);
}

#[test]
fn a_constructor_returning_err_fails_with_its_text_as_remote() {
    let manager = manager();
    let maths = MathsProxy::parse(&manager, "12").unwrap();
    assert_eq!(maths.total().unwrap(), 12);
    match MathsProxy::parse(&manager, "twelve") {
        Err(Error::Remote(text)) => {
            assert!(text.starts_with("\"twelve\" is not a total"), "{text}")
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    // The manager goes on building.
    assert_eq!(MathsProxy::new(&manager, 1).unwrap().total().unwrap(), 1);
}

#[test]
fn a_method_returning_err_gives_ok_err() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 1).unwrap();
    assert_eq!(maths.checked("41").unwrap(), Ok(42));
    let why = maths.checked("forty").unwrap().unwrap_err();
    assert!(why.starts_with("\"forty\" is not a number"), "{why}");
    assert_eq!(maths.total().unwrap(), 1);
}

#[test]
fn a_panicking_method_gives_panicked_and_the_server_keeps_serving() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 7).unwrap();
    match maths.boom("no luck in the server".into()) {
        Err(Error::Panicked { message, location }) => {
            assert_eq!(message, "no luck in the server");
            let location = location.expect("a location");
            assert!(location.contains("manager_custom.rs"), "{location}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The same object, another object and a new one all still answer.
    assert_eq!(maths.add(1).unwrap(), 8);
    let fresh = MathsProxy::new(&manager, 0).unwrap();
    assert_eq!(fresh.add(5).unwrap(), 5);
    assert!(matches!(
        fresh.boom("again".into()),
        Err(Error::Panicked { .. })
    ));
    assert_eq!(maths.total().unwrap(), 8);
}

#[test]
fn reference_parameters_arrive_in_the_server_and_borrowed_results_come_back_owned() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 0).unwrap();
    assert_eq!(maths.add_all("four", &[1, 2, 3], &10).unwrap(), 64);
    assert_eq!(maths.add_all("", &[], &3).unwrap(), 64);
    let xs: Vec<f64> = (0..1000).map(f64::from).collect();
    let bytes = vec![7u8; 100_000];
    assert_eq!(maths.blocks(&xs, &bytes).unwrap(), (499_500.0, 100_000));
    let names = vec!["zero".to_string(), "one".to_string()];
    let picked: String = maths.pick(&names, 1).unwrap();
    assert_eq!(picked, "one");
}

#[test]
fn a_name_the_type_does_not_serve_is_refused_by_the_server() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 3).unwrap();
    // Sent raw through the core: names of no method, a skipped one, a private one,
    // the constructor, and a method of a trait the type has.
    for name in ["nope", "reset", "hidden", "new", "clone", ""] {
        match maths.core().call::<_, i64>(name, &()) {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("Maths"), "{name}: {message}");
            }
            other => panic!("{name}: expected InvalidArgument, got {other:?}"),
        }
    }
    // Arguments of the wrong shape do not reach the method.
    assert!(matches!(
        maths.core().call::<_, i64>("add", &("two",)),
        Err(Error::Decode(_))
    ));
    assert_eq!(maths.total().unwrap(), 3);
    // Both still exist for the type's own use.
    let mut local = Maths::new(3);
    local.reset();
    assert_eq!(local.hidden(), 0);
}

/// A child's work: adds 1..=10 through its copy of the proxy; returns the pid of the
/// process serving it.
fn add_ten(maths: MathsProxy) -> u32 {
    for i in 1..=10 {
        maths.add(i).expect("add from a child");
    }
    maths.pid().expect("pid from a child")
}

#[test]
fn a_proxy_travels_to_children_who_all_update_the_one_object() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 0).unwrap();
    let server = maths.pid().unwrap();
    for method in common::METHODS {
        let before = maths.total().unwrap();
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                multiproc::get_context(method)
                    .spawn(add_ten, maths.clone())
                    .unwrap()
            })
            .collect();
        for child in &mut children {
            let seen = child.join_timeout(LONG).unwrap();
            assert_eq!(
                seen, server,
                "{method:?}: the child reached the same server"
            );
        }
        assert_eq!(maths.total().unwrap(), before + 3 * 55, "{method:?}");
    }
}

/// A child's work: a method's own error, seen from the child.
fn check_in_child(maths: MathsProxy) -> Result<i64, String> {
    maths.checked("x").expect("checked from a child")
}

#[test]
fn a_child_gets_the_method_error_inside_ok_too() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 0).unwrap();
    let mut child = multiproc::get_context(StartMethod::Spawn)
        .spawn(check_in_child, maths)
        .unwrap();
    let got = child.join_timeout(LONG).unwrap();
    assert!(got.unwrap_err().starts_with("\"x\""));
}

#[test]
fn two_types_of_one_name_are_told_apart_by_typeid() {
    let manager = manager();
    let numbers = MathsProxy::new(&manager, 1).unwrap();
    let words = other::MathsProxy::new(&manager).unwrap();
    assert_eq!(words.core().typeid(), "WordMaths");
    assert_eq!(words.add("one").unwrap(), 1);
    assert_eq!(numbers.add(1).unwrap(), 2);
    assert_eq!(words.add("two").unwrap(), 2);
    // Each proxy travels as its core; decoding checks the type it names.
    let (here, there) = multiproc::pipe(true).unwrap();
    here.send(&words).unwrap();
    assert!(matches!(there.recv::<MathsProxy>(), Err(Error::Decode(_))));
    here.send(&numbers).unwrap();
    assert_eq!(there.recv::<MathsProxy>().unwrap().total().unwrap(), 2);
}

#[test]
fn a_proxy_kept_in_a_managed_dict_still_reaches_its_object() {
    let manager = manager();
    let shelf = manager.dict::<String, MathsProxy>().unwrap();
    shelf
        .set(
            &"maths".to_string(),
            &MathsProxy::new(&manager, 10).unwrap(),
        )
        .unwrap();
    // The dict's copy alone keeps the object alive.
    let back = shelf.get(&"maths".to_string()).unwrap().expect("the entry");
    assert_eq!(back.add(5).unwrap(), 15);
    drop(back);
    let again = shelf.get(&"maths".to_string()).unwrap().expect("the entry");
    assert_eq!(again.total().unwrap(), 15);
}

#[test]
fn a_served_object_is_freed_when_its_last_proxy_goes() {
    let manager = manager();
    let maths = MathsProxy::new(&manager, 0).unwrap();
    let copy = maths.clone();
    let mut child = multiproc::spawn(add_ten, copy.clone()).unwrap();
    child.join_timeout(LONG).unwrap();
    assert_eq!(manager.number_of_objects().unwrap(), 1);
    assert_eq!(manager.refcount(&maths).unwrap(), 1, "one process holds it");
    drop(copy);
    assert_eq!(maths.total().unwrap(), 55);
    drop(maths);
    assert_eq!(manager.number_of_objects().unwrap(), 0);
}
