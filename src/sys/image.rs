//! The running binary: the load-time hook, entry records that cross `exec`, and the
//! identity of the executable.
//!
//! A spawned child is a fresh execution of the same binary, so an entry is named by the
//! distance of its [`EntryRecord`] from a fixed anchor (a static of this module): with
//! address-space randomisation the base moves but distances inside one binary do not.
//! A child never calls an address it was merely told: the offset must land on a record
//! inside the main executable's loaded segments, carrying the record tag and the
//! anchor's own address, and the record's function must lie in an executable segment
//! of the same file (see [`entry_at`]).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// A type-erased entry: decodes the arguments, runs the target, reports the outcome on
/// the channel `C`, and returns the exit code. The channel type is the caller's.
pub(crate) type EntryFn<C> = fn(Vec<u8>, Vec<OwnedFd>, &C) -> i32;

/// Puts a function in the binary's `.init_array`, so the dynamic loader (or the static
/// start-up code) calls it before `main` in every program that links the crate.
///
/// Expands to a `static` holding the hook; keep a reference to it where process creation
/// happens ([`check_hook`] takes it), so the object file carrying it is always linked.
macro_rules! load_hook {
    ($(#[$meta:meta])* $vis:vis static $name:ident = $run:path;) => {
        $(#[$meta])*
        #[used]
        #[unsafe(link_section = ".init_array")]
        $vis static $name: extern "C" fn() = {
            extern "C" fn hook() {
                $crate::sys::image::note_hook_ran();
                $run();
            }
            hook
        };
    };
}
pub(crate) use load_hook;

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// Called first by the hook that [`load_hook`] places.
pub(crate) fn note_hook_ran() {
    HOOK_RAN.store(true, Ordering::Relaxed);
}

/// Whether the process runs in secure-execution mode (setuid, setgid, file capabilities,
/// or an LSM said so): the kernel's `AT_SECURE`. Nothing inherited may steer it then.
pub(crate) fn secure_execution() -> bool {
    // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// What every record starts with: a random 128-bit value that data of the binary holds
/// only in records.
const TAG: [u64; 2] = [
    0x6d75_6c74_6970_7263,
    0x9e37_79b9_7f4a_7c15 ^ 0x0e1f_5a3c_d2b4_8697,
];

/// What an entry is handed besides its bytes: each kind of caller has its own, and its
/// own tag, so that an offset naming an entry of one kind is never taken for another
/// (whose function has another signature).
pub(crate) trait EntryContext: 'static {
    /// Mixed into the kind's tag; distinct for every implementation.
    const KIND: u64;
}

/// The tag of the records of entries taking `C`.
const fn tag_of<C: EntryContext>() -> [u64; 2] {
    [TAG[0], TAG[1] ^ C::KIND]
}

/// The fixed point that offsets are measured from. Records also hold its address, which
/// no other data of the binary stores next to the tag.
#[repr(C)]
pub(crate) struct Anchor(u64);

static ANCHOR: Anchor = Anchor(0);

/// One entry of the binary, as the child finds it: built at compile time (one per
/// instantiated entry) and placed by the compiler in the executable's read-only data.
#[repr(C)]
pub(crate) struct EntryRecord<C: EntryContext> {
    tag: [u64; 2],
    anchor: &'static Anchor,
    entry: EntryFn<C>,
}

impl<C: EntryContext> EntryRecord<C> {
    /// A record for `entry`; use it as `const { &EntryRecord::new(f) }` so it is a
    /// `'static` item of the binary.
    pub(crate) const fn new(entry: EntryFn<C>) -> EntryRecord<C> {
        EntryRecord {
            tag: tag_of::<C>(),
            anchor: &ANCHOR,
            entry,
        }
    }
}

impl<C: EntryContext> EntryRecord<C> {
    /// The entry itself, for a child that shares this process's memory (fork): there the
    /// function needs no lookup, wherever the crate was loaded from.
    pub(crate) fn entry(&self) -> EntryFn<C> {
        self.entry
    }
}

fn anchor() -> usize {
    &ANCHOR as *const Anchor as usize
}

/// Distance of a record from the anchor.
pub(crate) fn entry_offset<C: EntryContext>(record: &'static EntryRecord<C>) -> u64 {
    (record as *const EntryRecord<C> as usize).wrapping_sub(anchor()) as u64
}

/// The entry of the record at `offset` from the anchor, or `None` when no record of
/// this binary is there. Nothing at the address is called or trusted before the checks.
pub(crate) fn entry_at<C: EntryContext>(offset: u64) -> Option<EntryFn<C>> {
    let addr = anchor().wrapping_add(offset as usize);
    let size = std::mem::size_of::<EntryRecord<C>>();
    if addr % std::mem::align_of::<EntryRecord<C>>() != 0
        || !main_image().contains(addr, size, Segment::Any)
    {
        return None;
    }
    let words = addr as *const usize;
    let word = |i: usize| {
        // SAFETY: `addr..addr + size` lies inside a loaded segment of the main executable
        // (checked above), which stays mapped for the life of the process and is readable;
        // `addr` is aligned for `usize`, and `i` stays below size / size_of::<usize>().
        // Reading plain integers from mapped memory has no other requirement; the volatile
        // read keeps the compiler from assuming anything about what lives there.
        unsafe { std::ptr::read_volatile(words.add(i)) }
    };
    // The record is read word by word as integers: no reference to it, and no function
    // pointer, exists until every check has passed.
    let per_u64 = std::mem::size_of::<u64>() / std::mem::size_of::<usize>();
    let tag_words = 2 * per_u64;
    let mut tag = [0u64; 2];
    for (i, t) in tag.iter_mut().enumerate() {
        let mut v = 0u64;
        for j in 0..per_u64 {
            v |= (word(i * per_u64 + j) as u64) << (j * usize::BITS as usize);
        }
        *t = v;
    }
    if tag != tag_of::<C>() || word(tag_words) != anchor() {
        return None;
    }
    let entry = word(tag_words + 1);
    if !main_image().contains(entry, 1, Segment::Executable) {
        return None;
    }
    // SAFETY: the location holds a record of this binary: the tag and the anchor's own
    // address, which only `EntryRecord::new` writes next to each other (the tag of the
    // records taking `C`: no record of another kind passes), and a function address
    // inside the executable's code. A record's third field is an `EntryFn<C>`,
    // whose bit pattern this is.
    Some(unsafe { std::mem::transmute::<usize, EntryFn<C>>(entry) })
}

/// Refuses to create processes that execute the binary again when the crate's load hook
/// is not part of the main executable (the crate sits in a shared library loaded by some
/// other program, which would run instead of the task), or never ran, or when the
/// process runs in secure-execution mode (the new program would ignore its task).
pub(crate) fn check_hook(hook: extern "C" fn()) -> io::Result<()> {
    check_hook_at(hook as usize)
}

fn check_hook_at(hook: usize) -> io::Result<()> {
    if secure_execution() {
        // The new program would ignore its marker (see the load hook) and run `main`.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this program runs in secure-execution mode (setuid, setgid or file \
             capabilities), where children do not take tasks from their environment: the \
             spawn and forkserver start methods are unavailable; use fork",
        ));
    }
    let image = main_image();
    if HOOK_RAN.load(Ordering::Relaxed)
        && image.contains(hook, 1, Segment::Executable)
        && image.contains(anchor(), std::mem::size_of::<Anchor>(), Segment::Any)
    {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "multiproc is not linked into the main executable (it is in a shared library loaded \
         by another program), so a fresh execution of the program would not run the task: \
         the spawn and forkserver start methods are unavailable here; use fork",
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Segment {
    Any,
    Executable,
}

/// The loaded segments of the main executable, from its program headers.
struct Image {
    /// `(start, end, executable)` of each `PT_LOAD` segment, in memory.
    loads: Vec<(usize, usize, bool)>,
    /// `(start, end)` of each `PT_NOTE` segment, in memory.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    notes: Vec<(usize, usize)>,
}

impl Image {
    fn contains(&self, addr: usize, len: usize, kind: Segment) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.loads
            .iter()
            .any(|&(s, e, exec)| s <= addr && end <= e && (kind == Segment::Any || exec))
    }
}

#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// Reads the main executable's segments now, in a process about to fork children that
/// check their entry with [`entry_at`]: they inherit the table instead of each building
/// it (every page a forked child writes is a copy).
pub(crate) fn read_segments_before_forking() {
    main_image();
}

fn main_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // SAFETY: getauxval has no preconditions.
        let (phdr, phnum) = unsafe {
            (
                libc::getauxval(libc::AT_PHDR) as usize,
                libc::getauxval(libc::AT_PHNUM) as usize,
            )
        };
        if phdr == 0 || phdr % std::mem::align_of::<Phdr>() != 0 {
            return Image {
                loads: Vec::new(),
                notes: Vec::new(),
            };
        }
        // SAFETY: the kernel's AT_PHDR/AT_PHNUM describe the main program's program
        // header table, mapped (inside its first segment) for the life of the process.
        let headers = unsafe { std::slice::from_raw_parts(phdr as *const Phdr, phnum) };
        // The load bias: where the table is, less where the file says it is. Without a
        // PT_PHDR entry the executable is not position-independent (bias 0).
        let bias = headers
            .iter()
            .find(|h| h.p_type == libc::PT_PHDR)
            .map_or(0, |h| phdr.wrapping_sub(h.p_vaddr as usize));
        let loads = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD)
            .map(|h| {
                let start = bias.wrapping_add(h.p_vaddr as usize);
                (
                    start,
                    start.saturating_add(h.p_memsz as usize),
                    h.p_flags & libc::PF_X != 0,
                )
            })
            .collect();
        let notes = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_NOTE)
            .map(|h| {
                let start = bias.wrapping_add(h.p_vaddr as usize);
                (start, start.saturating_add(h.p_memsz as usize))
            })
            .collect();
        Image { loads, notes }
    })
}

/// Bytes of the main executable's loaded segments, or `None` when `start..end` is not
/// inside one.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn loaded_bytes(start: usize, end: usize) -> Option<&'static [u8]> {
    let len = end.checked_sub(start)?;
    if !main_image().contains(start, len, Segment::Any) {
        return None;
    }
    // SAFETY: `start..end` lies inside a loaded segment of the main executable (checked
    // above), mapped readable for the life of the process. The bytes read are code or
    // read-only data (notes), which nothing writes while the process runs.
    Some(unsafe { std::slice::from_raw_parts(start as *const u8, len) })
}

/// The GNU build id among the executable's notes, if its linker wrote one.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn build_id() -> Option<&'static [u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    for &(start, end) in &main_image().notes {
        let mut notes = loaded_bytes(start, end)?;
        let word = |b: &[u8], i: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
        };
        while notes.len() >= 12 {
            let (name_len, desc_len, kind) = (
                word(notes, 0)? as usize,
                word(notes, 4)? as usize,
                word(notes, 8)?,
            );
            let name_end = 12usize.checked_add(name_len.checked_next_multiple_of(4)?)?;
            let desc_end = name_end.checked_add(desc_len.checked_next_multiple_of(4)?)?;
            let name = notes.get(12..12 + name_len)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
                return notes.get(name_end..name_end + desc_len);
            }
            notes = notes.get(desc_end..)?;
        }
    }
    None
}

/// What tells this build of the program from any other, the same on every machine that
/// runs it: a SHA-256 of its GNU build id, or of its code when it has none. Processes
/// that name entries by their offsets (the ranks of an MPI job) compare it first.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn code_identity() -> [u8; 32] {
    use sha2::{Digest, Sha256};
    static IDENTITY: OnceLock<[u8; 32]> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        let mut hash = Sha256::new();
        match build_id() {
            Some(id) => hash.update(id),
            None => {
                for &(start, end, exec) in &main_image().loads {
                    if exec && let Some(code) = loaded_bytes(start, end) {
                        hash.update(code);
                    }
                }
            }
        }
        hash.finalize().into()
    })
}

/// Refuses, at build time (in a `const` block), a target type that holds data: only a
/// zero-sized one can be produced in the child by [`summon`].
pub(crate) const fn assert_zero_sized<F>() {
    assert!(
        std::mem::size_of::<F>() == 0,
        "the target must be a fn item or a closure that captures nothing; pass captured values as the argument"
    )
}

/// Produces the value of a zero-sized function type (a `fn` item or a closure that
/// captures nothing): such a type has exactly one value and no bytes.
pub(crate) fn summon<F: Copy + 'static>() -> F {
    const { assert_zero_sized::<F>() };
    // SAFETY: F is zero-sized (checked at compile time above): a read of a zero-sized
    // value through a non-null, aligned pointer is valid and yields its only value. F is
    // Copy, so duplicating that value is what the type allows anyway.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// Identity of an executable file: a child refuses a task from a parent whose binary is
/// not its own (a rebuilt file would put functions at other addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ExeId {
    /// The identity of this process's executable.
    pub(crate) fn current() -> io::Result<ExeId> {
        let st = rustix::fs::stat("/proc/self/exe")?;
        Ok(ExeId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(_: Vec<u8>, _: Vec<OwnedFd>, _: &()) -> i32 {
        7
    }

    impl EntryContext for () {
        const KIND: u64 = 0x7e57;
    }

    /// Another kind of entry, taking another context.
    struct Other;

    impl EntryContext for Other {
        const KIND: u64 = 0x07e4;
    }

    #[test]
    fn a_record_of_one_kind_is_refused_as_another() {
        let record: &'static EntryRecord<()> = const { &EntryRecord::new(sample) };
        let off = entry_offset(record);
        assert!(entry_at::<()>(off).is_some());
        assert!(entry_at::<Other>(off).is_none());
    }

    #[test]
    fn a_record_is_found_and_other_offsets_are_refused() {
        let record: &'static EntryRecord<()> = const { &EntryRecord::new(sample) };
        let off = entry_offset(record);
        let f = entry_at::<()>(off).expect("a real record is accepted");
        assert_eq!(f(Vec::new(), Vec::new(), &()), 7);
        for bad in [
            off.wrapping_add(8),
            off.wrapping_sub(8),
            0,
            u64::MAX,
            1 << 40,
        ] {
            assert!(entry_at::<()>(bad).is_none(), "offset {bad:#x} accepted");
        }
        // Only the main executable's segments count: libc's code is not in them.
        assert!(main_image().contains(sample as EntryFn<()> as usize, 1, Segment::Executable));
        assert!(!main_image().contains(libc::getpid as *const () as usize, 1, Segment::Any));
        // A hook in a shared library (here: libc's code stands for one) is refused.
        note_hook_ran();
        assert!(check_hook_at(sample as EntryFn<()> as usize).is_ok());
        let refused = check_hook_at(libc::getpid as *const () as usize).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("not linked into the main executable")
        );
        // The code of the function itself is not a record.
        let code = (sample as EntryFn<()> as usize).wrapping_sub(anchor()) as u64;
        assert!(entry_at::<()>(code & !7).is_none());
    }
}
