pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    pub fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }

    pub fn into_total(self) -> i64 {
        self.total
    }

    pub fn boxed(self: Box<Self>) -> i64 {
        self.total
    }
}

// The methods that can be served still are.
fn use_proxy(manager: &multiproc::Manager) -> multiproc::Result<i64> {
    MathsProxy::new(manager)?.add(1)
}

fn main() {
    let _ = use_proxy;
}
