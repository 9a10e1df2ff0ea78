// Every refusal of a block is reported in one build.
pub struct Maths {
    total: i64,
}

#[multiproc::proxy]
impl Maths {
    pub async fn add(&mut self, x: i64) -> i64 {
        self.total += x;
        self.total
    }

    pub fn into_total(self) -> i64 {
        self.total
    }

    pub fn fmt<T>(&self, _: T) -> String {
        self.total.to_string()
    }
}

fn main() {}
