#[multiproc::proxy]
pub struct Maths {
    pub total: i64,
}

fn main() {
    let _ = Maths { total: 0 };
}
