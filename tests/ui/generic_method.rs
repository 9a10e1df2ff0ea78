pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    pub fn add<T: Into<i64>>(&mut self, x: T) -> i64 {
        self.total += x.into();
        self.total
    }

    pub fn sub<const N: i64>(&mut self) -> i64 {
        self.total -= N;
        self.total
    }

    pub fn scale(&mut self, by: i64) -> i64
    where
        i64: Copy,
    {
        self.total *= by;
        self.total
    }

    // Lifetimes are fine: borrows arrive owned.
    pub fn label<'a>(&self, name: &'a str) -> String {
        format!("{name}: {}", self.total)
    }
}

fn main() {
    let _ = MathsProxy::label;
}
