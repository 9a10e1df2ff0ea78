pub struct Maths;

#[multiproc::proxy]
impl Maths {
    pub fn new() -> Self {
        Maths
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sum(
        &self,
        a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8,
        i: u8, j: u8, k: u8, l: u8, m: u8, n: u8, o: u8, p: u8,
        q: u8,
    ) -> u32 {
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q].iter().map(|&x| u32::from(x)).sum()
    }

    // Sixteen is fine.
    #[allow(clippy::too_many_arguments)]
    pub fn sum16(
        &self,
        a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8,
        i: u8, j: u8, k: u8, l: u8, m: u8, n: u8, o: u8, p: u8,
    ) -> u32 {
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p].iter().map(|&x| u32::from(x)).sum()
    }
}

fn main() {
    let _ = MathsProxy::sum16;
}
