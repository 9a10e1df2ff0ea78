//! S5 (seed 000): a manager holds a dict with keys of mixed types (int, str, float)
//! and a list; ten processes write to both through proxies, and the parent prints them.
//!
//! Python's dict takes keys of any type; in Rust a dict has one key type, so this one
//! uses [`Key`], the crate's key of Python's common key types (an enum of your own
//! works as well). The values mix types too (`'1'`, `2`, `None`): here an
//! `Option<Key>`. Each child writes the same three entries, as in the tutorial, so the
//! dict ends with three; the list gets each child's pid after the five numbers it starts
//! with, in the order the children run.

use multiproc::{DictProxy, Key, ListProxy, Manager, Process};

/// `d[1] = '1'; d['2'] = 2; d[0.25] = None; l.append(os.getpid()); print(l)`
fn f((d, l): (DictProxy<Key, Option<Key>>, ListProxy<u32>)) -> multiproc::Result<()> {
    d.set(&1.into(), &Some("1".into()))?;
    d.set(&"2".into(), &Some(2.into()))?;
    d.set(&0.25.into(), &None)?;
    l.append(&std::process::id())?;
    println!("{:?}", l.to_vec()?);
    Ok(())
}

/// Prints the dict as Python prints one: `{1: '1', '2': 2, 0.25: None}`.
fn show(d: &DictProxy<Key, Option<Key>>) -> multiproc::Result<String> {
    let entries: Vec<String> = d
        .items()?
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}: {v}"),
            None => format!("{k}: None"),
        })
        .collect();
    Ok(format!("{{{}}}", entries.join(", ")))
}

pub fn main() -> multiproc::Result<()> {
    let manager = Manager::start()?;
    let d = manager.dict::<Key, Option<Key>>()?;
    let l = manager.list_from(&[0u32, 1, 2, 3, 4])?;
    let mut p_list = Vec::new();
    for _ in 0..10 {
        let mut p = Process::new(f, (d.clone(), l.clone()));
        p.start()?;
        p_list.push(p);
    }
    for p in &mut p_list {
        p.join()?;
    }
    println!("{}", show(&d)?);
    println!("{:?}", l.to_vec()?);
    Ok(())
}
