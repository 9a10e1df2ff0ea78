pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    pub async fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }
}

fn main() {
    let _ = MathsProxy::new;
}
