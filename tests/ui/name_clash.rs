pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    /// A copy, as `Clone` would make: `MathsProxy::clone` is taken.
    pub fn clone(&self) -> Maths {
        Maths { total: self.total }
    }

    pub fn core(&self) -> i64 {
        self.total
    }

    // Not served, so no clash.
    #[multiproc(skip)]
    pub fn fmt(&self) -> String {
        self.total.to_string()
    }
}

fn main() {
    let _ = MathsProxy::new;
}
