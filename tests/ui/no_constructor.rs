pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }

    // Not `pub`: not a constructor the proxy can offer.
    fn new() -> Self {
        Maths { total: 0 }
    }
}

fn main() {
    let _ = Maths::new();
}
