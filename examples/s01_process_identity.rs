//! S1 (seed 000): who is who. The parent and a child each print their role, their
//! parent's pid and their own pid; the child's parent is the process that started it.
//!
//! Python's `__name__` (`__main__` in the parent, `__mp_main__` in the child) has no
//! Rust counterpart: the role is `current_process().name` (`MainProcess` / `Process-1`).
//! With the default start method (forkserver) the operating-system parent of a child is
//! the fork server, so the child prints both `os.getppid()` and `parent_process()`; a
//! second part starts the same child with each start method and compares the pids.

use std::io::IsTerminal;

use multiproc::{Process, StartMethod, current_process, get_context, parent_process};

/// `os.getppid()`.
fn os_parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// The title in colour, as the tutorial prints it, when the output is a terminal.
fn coloured(title: &str, colour: u8) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b[{colour};1m{title}\x1b[0m")
    } else {
        title.to_string()
    }
}

fn info(title: &str) {
    let me = current_process();
    println!("{title}");
    println!("module name: {}", me.name);
    match parent_process() {
        Some(parent) => {
            println!("parent process: {} ({})", parent.pid, parent.name);
            println!("os.getppid(): {}", os_parent_pid());
        }
        None => println!("parent process: {}", os_parent_pid()),
    }
    println!("process id: {}", me.pid);
    println!();
}

fn f(name: String) {
    info(&coloured("call from function f", 31));
    println!("hello {name}");
}

/// The child's view of its parents: (`parent_process().pid`, `os.getppid()`, own pid).
fn whose_child(_: ()) -> (u32, u32, u32) {
    let logical = parent_process().map_or(0, |p| p.pid);
    (logical, os_parent_pid(), std::process::id())
}

pub fn main() -> multiproc::Result<()> {
    info(&coloured("main process line", 32));
    let mut p = Process::new(f, "bob".to_string());
    p.start()?;
    p.join()?;

    let me = std::process::id();
    println!();
    println!("main process pid: {me}; the same child under each start method:");
    for method in [
        StartMethod::Forkserver,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let (logical, os_parent, pid) = get_context(method).spawn(whose_child, ())?.join()?;
        let os_note = if os_parent == me {
            "the main process".to_string()
        } else {
            format!("pid {os_parent}, the fork server")
        };
        println!(
            "  {:<10} child pid {pid}: parent_process().pid = {logical} (equals main pid: {}), os.getppid() = {os_note}",
            method.as_str(),
            logical == me,
        );
    }
    Ok(())
}
