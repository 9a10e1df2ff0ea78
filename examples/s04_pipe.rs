//! S4 (seeds 000, 001): pipes between processes.
//!
//! 1. Seed 000: a duplex `Pipe`; the child sends a message and waits for the reply, the
//!    parent receives it and answers.
//! 2. Seed 001: the `Producer` / `Consumer` classes, here structs implementing [`Run`],
//!    each holding one end of a duplex pipe; both are daemons and are joined.
//! 3. A one-way pipe (`Pipe(duplex=False)`): the first end only receives, the second
//!    only sends; when the sender is gone the receiver gets `Error::Closed` (Python's
//!    `EOFError`).

use std::time::Duration;

use multiproc::{Connection, Error, Process, Run, pipe};
use serde::{Deserialize, Serialize};

/// Seed 000: the child's side of the conversation.
fn f(conn: Connection) {
    conn.send("son to father message").expect("send");
    let reply: String = conn.recv().expect("recv");
    println!("{reply}");
    conn.close();
}

/// Seed 001: receives first, then answers.
#[derive(Serialize, Deserialize)]
struct Producer {
    pipe: Connection,
}

impl Run for Producer {
    fn run(self) {
        let got: String = self.pipe.recv().expect("recv");
        println!("Producer Received: {got}");
        self.pipe.send("Producer Words").expect("send");
    }
}

/// Seed 001: speaks first, then listens.
#[derive(Serialize, Deserialize)]
struct Consumer {
    pipe: Connection,
}

impl Run for Consumer {
    fn run(self) {
        self.pipe.send("Consumer Words").expect("send");
        let got: String = self.pipe.recv().expect("recv");
        println!("Consumer Received: {got}");
    }
}

/// Sends three numbers on a write-only end, then ends (closing it).
fn count_to_three(tx: Connection) {
    for n in 1..=3u32 {
        tx.send(&n).expect("send");
    }
}

pub fn main() -> multiproc::Result<()> {
    println!("-- duplex pipe, child speaks first (seed 000) --");
    let (parent_conn, son_conn) = pipe(true)?;
    let mut p = Process::new(f, son_conn);
    p.start()?;
    let msg: String = parent_conn.recv()?;
    println!("{msg}");
    parent_conn.send("father to son message")?;
    p.join()?;

    println!("-- Producer / Consumer (seed 001) --");
    let (end0, end1) = pipe(true)?;
    let mut producer = Process::from_run(Producer { pipe: end0 }).daemon(true);
    let mut consumer = Process::from_run(Consumer { pipe: end1 }).daemon(true);
    producer.start()?;
    consumer.start()?;
    producer.join()?;
    consumer.join()?;
    println!("Main Process Ended");

    println!("-- one-way pipe (duplex=False) --");
    let (rx, tx) = pipe(false)?;
    let mut p = Process::new(count_to_three, tx);
    p.start()?;
    // `tx` was moved into the process's arguments: once the child has started, the
    // parent holds no copy of the sending end (in Python the parent would have to close
    // its copy), so the end of the child ends the stream.
    loop {
        if !rx.poll(Some(Duration::from_secs(5)))? {
            println!("nothing within 5 s, giving up");
            break;
        }
        match rx.recv::<u32>() {
            Ok(n) => println!("received {n}"),
            Err(Error::Closed) => {
                println!("received end of stream (EOFError): the sender has closed its end");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    p.join()?;
    match rx.send(&0u32) {
        Err(e) => println!("sending on the receive-only end fails: {e}"),
        Ok(()) => println!("sending on the receive-only end unexpectedly worked"),
    }
    Ok(())
}
