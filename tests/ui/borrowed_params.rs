pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths { total: 0 }
    }

    pub fn take(&mut self, out: &mut i64) {
        *out = self.total;
    }

    pub fn add_all(&mut self, xs: Vec<&i64>) -> i64 {
        self.total += xs.into_iter().sum::<i64>();
        self.total
    }

    pub fn first<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        names.first().map(|s| s.as_str())
    }

    // Borrows at the top arrive owned, and a borrowed result comes back owned.
    pub fn pick<'a>(&self, names: &'a [String], key: &str, at: &usize) -> &'a str {
        let _ = key;
        &names[*at]
    }
}

fn main() {
    let _ = MathsProxy::pick;
}
