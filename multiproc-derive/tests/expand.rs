//! The expansion run against a stand-in manager in this process (`mock`), reached
//! with `crate = "…"`: constructors, methods, borrowed parameters and results, the
//! names the server answers to, and the proxy's traits.

mod mock;

use mock::__private::{CallError, Error, Manager, Proxy, ProxyCore, Registered};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Maths {
    total: i64,
}

#[multiproc_derive::proxy(crate = "crate::mock")]
impl Maths {
    /// Starts at `start`.
    pub fn new(start: i64) -> Self {
        Maths { total: start }
    }

    /// Starts at the number in `text`, or fails.
    pub fn parse(text: &str) -> Result<Self, std::num::ParseIntError> {
        text.parse().map(Maths::new)
    }

    /// Starts at zero.
    pub fn zero() -> Maths {
        Maths { total: 0 }
    }

    /// Adds `x`.
    pub fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }

    pub fn total(&self) -> i64 {
        self.total
    }

    pub fn checked(&self, x: &str) -> Result<i64, String> {
        x.parse::<i64>()
            .map(|x| self.total + x)
            .map_err(|e| format!("{x:?}: {e}"))
    }

    pub fn sum(&mut self, xs: &[i64], scale: &i64) -> i64 {
        self.total += xs.iter().sum::<i64>() * scale;
        self.total
    }

    pub fn name<'a>(&'a self, names: &'a [String]) -> &'a str {
        &names[(self.total as usize) % names.len()]
    }

    pub fn snapshot(&self) -> Self {
        self.clone()
    }

    pub fn pair(&mut self, (a, b): (i64, i64), _: u8) {
        self.total += a * b;
    }

    pub fn r#type(&self) -> &'static str {
        "maths"
    }

    #[multiproc(skip)]
    pub fn skipped(&self) -> i64 {
        -1
    }

    fn private(&self) -> i64 {
        self.skipped()
    }

    pub fn helper(x: i64) -> i64 {
        x * 2
    }

    #[cfg(any())]
    pub fn compiled_out(&self) -> NoSuchType {
        unreachable!()
    }
}

pub struct Renamed;

#[multiproc_derive::proxy(typeid = "Other", crate = "crate::mock")]
impl Renamed {
    pub(crate) fn new() -> Self {
        Renamed
    }

    pub fn hello(&self, manager: String) -> String {
        format!("hello {manager}")
    }
}

fn manager() -> Manager {
    Manager::default().register::<Maths>().register::<Renamed>()
}

#[test]
fn constructors_and_methods_run_on_the_served_object() {
    let m = manager();
    let maths = MathsProxy::new(&m, 40).unwrap();
    assert_eq!(maths.add(2).unwrap(), 42);
    assert_eq!(maths.total().unwrap(), 42);
    let zero = MathsProxy::zero(&m).unwrap();
    assert_eq!(zero.total().unwrap(), 0);
    maths.pair((2, 3), 0).unwrap();
    assert_eq!(maths.total().unwrap(), 48);
}

#[test]
fn a_constructor_returning_err_sends_its_text() {
    let m = manager();
    let maths = MathsProxy::parse(&m, "12").unwrap();
    assert_eq!(maths.total().unwrap(), 12);
    let err = MathsProxy::parse(&m, "twelve").unwrap_err();
    assert_eq!(
        err,
        Error::Call(CallError::Failed("invalid digit found in string".into()))
    );
}

#[test]
fn a_method_returning_result_gives_the_error_inside_ok() {
    let maths = MathsProxy::new(&manager(), 1).unwrap();
    assert_eq!(maths.checked("41").unwrap(), Ok(42));
    let err = maths.checked("x").unwrap().unwrap_err();
    assert!(err.starts_with("\"x\":"), "{err}");
}

#[test]
fn borrowed_parameters_arrive_owned_and_borrowed_results_come_back_owned() {
    let maths = MathsProxy::new(&manager(), 1).unwrap();
    assert_eq!(maths.sum(&[1, 2, 3], &10).unwrap(), 61);
    let names = ["a".to_string(), "b".to_string()];
    let name: String = maths.name(&names).unwrap();
    assert_eq!(name, "b");
    let snapshot: Maths = maths.snapshot().unwrap();
    assert_eq!(snapshot, Maths { total: 61 });
    assert_eq!(maths.r#type().unwrap(), "maths");
}

#[test]
fn skipped_private_and_unknown_names_are_refused_by_the_server() {
    let maths = MathsProxy::new(&manager(), 1).unwrap();
    for name in [
        "skipped",
        "private",
        "helper",
        "new",
        "compiled_out",
        "r#type",
        "",
    ] {
        let got = maths.core().call::<_, i64>(name, &());
        assert_eq!(
            got,
            Err(Error::Call(CallError::NoSuchMethod {
                typeid: "Maths".into(),
                method: name.into()
            })),
            "{name}"
        );
    }
    assert!(matches!(
        Maths::construct("add", &[]),
        Err(CallError::NoSuchMethod { .. })
    ));
    assert_eq!(Maths::helper(2), 4);
    assert_eq!(Maths::new(0).private(), -1);
}

#[test]
fn arguments_of_the_wrong_shape_are_refused_by_the_server() {
    let maths = MathsProxy::new(&manager(), 1).unwrap();
    let got = maths.core().call::<_, i64>("add", &());
    assert!(
        matches!(got, Err(Error::Call(CallError::BadArguments(_)))),
        "{got:?}"
    );
    assert!(matches!(
        Maths::construct("new", &[]),
        Err(CallError::BadArguments(_))
    ));
    assert_eq!(maths.total().unwrap(), 1);
}

#[test]
fn typeid_names_the_type_on_both_sides() {
    assert_eq!(<Maths as Registered>::TYPEID, "Maths");
    assert_eq!(<MathsProxy as Proxy>::TYPEID, "Maths");
    assert_eq!(<Renamed as Registered>::TYPEID, "Other");
    assert_eq!(<RenamedProxy as Proxy>::TYPEID, "Other");
    let renamed = RenamedProxy::new(&manager()).unwrap();
    assert_eq!(renamed.core().typeid(), "Other");
    assert_eq!(renamed.hello("you".into()).unwrap(), "hello you");
}

#[test]
fn a_proxy_clones_prints_and_travels_as_its_core() {
    let maths = MathsProxy::new(&manager(), 5).unwrap();
    let copy = maths.clone();
    copy.add(1).unwrap();
    assert_eq!(maths.total().unwrap(), 6);
    let debug = format!("{maths:?}");
    assert!(debug.starts_with("MathsProxy(ProxyCore {"), "{debug}");

    let bytes = postcard::to_stdvec(&maths).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(maths.core()).unwrap());
    let back: MathsProxy = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.add(1).unwrap(), 7);
    let from_core = MathsProxy::from_core(back.core().clone());
    assert_eq!(from_core.total().unwrap(), 7);
}

#[test]
fn a_proxy_of_another_type_does_not_decode() {
    let renamed = RenamedProxy::new(&manager()).unwrap();
    let bytes = postcard::to_stdvec(&renamed).unwrap();
    let err = postcard::from_bytes::<MathsProxy>(&bytes).unwrap_err();
    assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
    let _: ProxyCore = postcard::from_bytes(&bytes).unwrap();
}

/// Shapes a block may take: a concrete generic type, `Self` in parameters and results,
/// restricted visibilities, a parameter named `manager`, `mut` bindings, a type local
/// to a module.
mod shapes {
    use super::mock;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Wrapper<T> {
        pub items: Vec<T>,
    }

    #[multiproc_derive::proxy(crate = "crate::mock", typeid = "Wrapper")]
    impl Wrapper<i64> {
        pub fn new(manager: i64, mut extra: Vec<i64>) -> Self {
            extra.insert(0, manager);
            Wrapper { items: extra }
        }

        pub(crate) fn merged(&self, other: &Self, more: Option<Self>) -> Vec<Self> {
            let mut all = vec![self.clone(), other.clone()];
            all.extend(more);
            all
        }

        pub(super) fn len(&self) -> usize {
            self.items.len()
        }
    }

    pub fn manager() -> mock::__private::Manager {
        mock::__private::Manager::default().register::<Wrapper<i64>>()
    }
}

#[test]
fn self_in_signatures_means_the_served_type_and_visibilities_carry_over() {
    use shapes::{Wrapper, WrapperProxy};
    let m = shapes::manager();
    let w = WrapperProxy::new(&m, 1, vec![2, 3]).unwrap();
    assert_eq!(w.len().unwrap(), 3);
    let other = Wrapper { items: vec![9] };
    let all: Vec<Wrapper<i64>> = w.merged(&other, Some(other.clone())).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].items, vec![1, 2, 3]);
    assert_eq!(all[2], other);
}

#[test]
fn a_type_local_to_a_function_is_served() {
    #[derive(Debug)]
    struct Local(u8);

    #[multiproc_derive::proxy(crate = "crate::mock")]
    impl Local {
        fn hidden() -> Self {
            Local(0)
        }

        pub fn new() -> Self {
            Self::hidden()
        }

        pub fn get(&mut self) -> u8 {
            self.0 += 1;
            self.0
        }
    }

    let m = Manager::default().register::<Local>();
    let local = LocalProxy::new(&m).unwrap();
    assert_eq!(local.get().unwrap(), 1);
    assert_eq!(local.get().unwrap(), 2);
}
