pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    pub fn add_all(&mut self, xs: impl IntoIterator<Item = i64>) -> i64 {
        self.total += xs.into_iter().sum::<i64>();
        self.total
    }

    pub fn history(&self) -> impl Iterator<Item = i64> {
        std::iter::once(self.total)
    }
}

fn main() {
    let _ = MathsProxy::new;
}
