pub struct Maths;

#[multiproc::proxy]
impl Default for Maths {
    fn default() -> Self {
        Maths
    }
}

fn main() {
    let _ = Maths::default();
}
