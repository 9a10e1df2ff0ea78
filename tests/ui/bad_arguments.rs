pub struct Maths;

#[multiproc::proxy(typeid = "Maths", typeid = "Other", name = "M", crate)]
impl Maths {
    pub fn new() -> Self {
        Maths
    }

    #[multiproc(hide)]
    pub fn one(&self) -> i64 {
        1
    }
}

pub struct Empty;

#[multiproc::proxy(typeid = "", crate = multiproc)]
impl Empty {
    pub fn new() -> Self {
        Empty
    }
}

fn main() {
    let _ = MathsProxy::one;
}
