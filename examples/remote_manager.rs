//! Python's "remote manager" example: one program serves a queue on a TCP address with
//! an authkey; other programs, which know only the address and the key, put items in
//! it and get them out.
//!
//! ```text
//! cargo run --example remote_manager -- serve 127.0.0.1:50000 abracadabra
//! cargo run --example remote_manager -- put   127.0.0.1:50000 abracadabra hello world
//! cargo run --example remote_manager -- get   127.0.0.1:50000 abracadabra 2
//! cargo run --example remote_manager -- stop  127.0.0.1:50000 abracadabra
//! cargo run --example remote_manager            # demo: all of the above, checked
//! ```
//!
//! Python serves with `QueueManager.register('get_queue', callable=lambda: queue)` and
//! `m.get_server().serve_forever()`; a client calls `QueueManager.register('get_queue')`,
//! `m.connect()` and `m.get_queue()`. Here the server exposes a managed queue under a
//! name (`ManagerBuilder::expose`) and a client asks for it by that name
//! (`Manager::get`), typed as a `QueueProxy<String>`. A client with the wrong key is
//! refused before the server reads anything it sends.
//!
//! With no arguments (`demo`, as the tour runs it) the program runs the server and two
//! client programs as processes of this same binary, started with
//! `std::process::Command` like any other program, and checks that the items arrive,
//! in order, and that a client with a wrong key is turned away.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Error, Manager, QueueProxy};

/// The name the server exposes its queue under (Python's `get_queue`).
const QUEUE: &str = "queue";

/// How long a `get` waits for an item, and the demo for anything, before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The first argument the tour passes to reach this program inside its own binary.
pub const TOUR_COMMAND: &str = "remote_manager";

fn usage() -> Error {
    Error::InvalidArgument(
        "usage: remote_manager [serve|put|get|stop ADDRESS KEY [ITEMS..|COUNT]] | demo".into(),
    )
}

pub fn main() -> multiproc::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(TOUR_COMMAND) {
        args.remove(0);
    }
    let Some(command) = args.first().cloned() else {
        return demo();
    };
    if command == "demo" {
        return demo();
    }
    let (address, key) = match (args.get(1), args.get(2)) {
        (Some(a), Some(k)) => (a.as_str(), k.as_bytes()),
        _ => return Err(usage()),
    };
    let rest = &args[3..];
    match command.as_str() {
        "serve" => serve(address, key),
        "put" => put(address, key, rest),
        "get" => {
            let n = match rest.first() {
                Some(n) => n.parse().map_err(|_| usage())?,
                None => 1,
            };
            get(address, key, n)
        }
        "stop" => Manager::connect(address, key)?.shutdown(),
        _ => Err(usage()),
    }
}

/// Serves a queue under the name [`QUEUE`] until a client asks the server to stop.
fn serve(address: &str, key: &[u8]) -> multiproc::Result<()> {
    println!("serving a queue on {address}");
    Manager::builder()
        .address(address)
        .authkey(key)
        .expose::<QueueProxy<String>, _>(QUEUE, "", &(0u64,))
        .serve_forever()?;
    println!("server stopped");
    Ok(())
}

/// The served queue, reached with nothing but the address and the key.
fn queue(address: &str, key: &[u8]) -> multiproc::Result<QueueProxy<String>> {
    Manager::connect(address, key)?.get(QUEUE)
}

fn put(address: &str, key: &[u8], items: &[String]) -> multiproc::Result<()> {
    let q = queue(address, key)?;
    for item in items {
        q.put(item)?;
        println!("put {item:?}");
    }
    Ok(())
}

fn get(address: &str, key: &[u8], n: usize) -> multiproc::Result<()> {
    let q = queue(address, key)?;
    for _ in 0..n {
        let item = q.get_timeout(PATIENCE)?;
        println!("got {item:?}");
    }
    Ok(())
}

/// This program again, with `args` (through the tour's command when it runs there).
fn this_program(args: &[&str]) -> multiproc::Result<Command> {
    let exe = std::env::current_exe()?;
    let in_tour = !exe
        .file_stem()
        .is_some_and(|s| s.to_string_lossy().starts_with("remote_manager"));
    let mut cmd = Command::new(exe);
    if in_tour {
        cmd.arg(TOUR_COMMAND);
    }
    cmd.args(args);
    Ok(cmd)
}

/// Runs a client program to its end: its standard output, or an error saying how it
/// failed.
fn client(args: &[&str]) -> multiproc::Result<String> {
    let out = this_program(args)?.stdin(Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(Error::InvalidState(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The server program, killed if the demo fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A TCP port on the loopback nobody listens on now.
fn free_port() -> multiproc::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the server and two clients (one puts, one gets) as separate programs.
pub fn demo() -> multiproc::Result<()> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let key = "abracadabra";
    let mut server = Server(this_program(&["serve", &address, key])?.spawn()?);

    // The server is up once a client gets in.
    let since = Instant::now();
    while Manager::connect(address.as_str(), key).is_err() {
        if since.elapsed() > PATIENCE {
            return Err(Error::Timeout);
        }
        if let Some(status) = server.0.try_wait()? {
            return Err(Error::InvalidState(format!("the server ended: {status}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let items = ["hello", "from", "another program"];
    let mut put_args = vec!["put", &address, key];
    put_args.extend(items);
    print!("{}", client(&put_args)?);
    let got = client(&["get", &address, key, &items.len().to_string()])?;
    print!("{got}");
    let expected: Vec<String> = items.iter().map(|i| format!("got {i:?}")).collect();
    if got.lines().collect::<Vec<_>>() != expected {
        return Err(Error::InvalidState(format!(
            "the items did not arrive in order: {got:?}"
        )));
    }

    match client(&["put", &address, "wrong key", "intruder"]) {
        Err(e) => println!("a client with the wrong key was refused: {e}"),
        Ok(out) => {
            return Err(Error::InvalidState(format!(
                "a client with the wrong key got in: {out}"
            )));
        }
    }

    client(&["stop", &address, key])?;
    let since = Instant::now();
    while server.0.try_wait()?.is_none() {
        if since.elapsed() > PATIENCE {
            return Err(Error::Timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("the server stopped");
    Ok(())
}
