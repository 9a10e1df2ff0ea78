pub struct Stack<T> {
    items: Vec<T>,
}

#[multiproc::proxy]
impl<T> Stack<T> {
    pub fn new() -> Self {
        Stack { items: Vec::new() }
    }

    pub fn push(&mut self, item: T) {
        self.items.push(item);
    }
}

fn main() {
    Stack::<i64>::new().push(1);
}
