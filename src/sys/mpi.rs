//! An MPI communicator that threads share (feature `mpi`): the bindings' handles are
//! plain pointers for the library, which the compiler cannot know are safe to use from
//! several threads. And what the bindings do not offer: a communicator's duplicate
//! started without waiting (`MPI_Comm_idup`), finalizing a spawned worker.

use mpi::Threading;
use mpi::point_to_point::{Message, Status};
use mpi::topology::{AnyProcess, Communicator, InterCommunicator, Process, SimpleCommunicator};

/// The communicator rank 0 reaches its workers through.
pub(crate) enum Comm {
    /// The job's ranks, on a duplicate of its world communicator: the workers are its
    /// ranks 1 and up.
    World(SimpleCommunicator),
    /// The link to workers this process started (`MPI_Comm_spawn`): they are its remote
    /// group.
    Spawned(InterCommunicator),
}

impl Comm {
    /// The process of rank `r` (of the remote group, for spawned workers).
    pub(crate) fn process_at_rank(&self, r: i32) -> Process<'_> {
        match self {
            Comm::World(c) => c.process_at_rank(r),
            Comm::Spawned(c) => c.process_at_rank(r),
        }
    }

    /// Any process of the communicator (any worker, for spawned workers).
    pub(crate) fn any_process(&self) -> AnyProcess<'_> {
        match self {
            Comm::World(c) => c.any_process(),
            Comm::Spawned(c) => c.any_process(),
        }
    }

    /// The ranks that are workers.
    pub(crate) fn workers(&self) -> std::ops::Range<i32> {
        match self {
            Comm::World(c) => 1..c.size(),
            Comm::Spawned(c) => 0..c.remote_size(),
        }
    }
}

/// A [`Comm`] that any thread may use.
pub(crate) struct SharedComm(Comm);

// SAFETY: a communicator handle is an opaque pointer into the MPI library, which the
// library lets any thread use at once when it was initialized with
// `MPI_THREAD_MULTIPLE`; `SharedComm::new` accepts no other level. Nothing here frees
// the handle: it lives until `MPI_Finalize`, at the process's exit.
unsafe impl Send for SharedComm {}
// SAFETY: as for `Send`: under `MPI_THREAD_MULTIPLE` concurrent calls on one
// communicator are the library's to order; the Rust side holds no state of its own.
unsafe impl Sync for SharedComm {}

impl SharedComm {
    /// `comm`, to share between threads; `None` unless MPI runs with
    /// `MPI_THREAD_MULTIPLE`.
    pub(crate) fn new(comm: Comm, threading: Threading) -> Option<SharedComm> {
        (threading == Threading::Multiple).then_some(SharedComm(comm))
    }

    /// The communicator.
    pub(crate) fn comm(&self) -> &Comm {
        &self.0
    }
}

/// Finalizes MPI in a spawned worker without disconnecting from its parent first, as the
/// bindings' `Universe` would: with Open MPI 4.1 that disconnect crashes (or fails, when
/// the parent does not disconnect too), while both sides' `MPI_Finalize` ends the link
/// cleanly.
pub(crate) fn finalize_spawned(universe: mpi::environment::Universe) {
    std::mem::forget(universe);
    // SAFETY: MPI was initialized (the universe existed) and is finalized once: the
    // universe, whose drop would finalize, is forgotten above. The process exits right
    // after, making no MPI call.
    unsafe {
        mpi::ffi::MPI_Finalize();
    }
}

/// A communicator's duplicate on its way (`MPI_Comm_idup`): a collective call, started
/// without waiting for the other processes, which completes once every one of them has
/// started it too.
pub(crate) struct Duplicating {
    /// Where MPI writes the duplicate's handle as the call completes: boxed, so that it
    /// stays at one address until then, wherever this value moves.
    comm: Box<mpi::ffi::MPI_Comm>,
    request: mpi::ffi::MPI_Request,
}

// SAFETY: the request and the handle's box belong to this value alone, and `test`
// takes it whole, so one thread at a time hands them to MPI; under
// `MPI_THREAD_MULTIPLE`, which `start` requires, that may be any thread.
unsafe impl Send for Duplicating {}

impl Duplicating {
    /// Starts duplicating `comm`, which every process of it must do too, in the same
    /// order as their other collective calls on it. `None` unless MPI runs with
    /// `MPI_THREAD_MULTIPLE` (the duplicate is completed on another thread).
    pub(crate) fn start(comm: &SimpleCommunicator, threading: Threading) -> Option<Duplicating> {
        use mpi::raw::AsRaw;
        if threading != Threading::Multiple {
            return None;
        }
        // SAFETY: reading the library's constant null handles, set once MPI is
        // initialized, as it is for `comm` to exist.
        let (null_comm, null_request) =
            unsafe { (mpi::ffi::RSMPI_COMM_NULL, mpi::ffi::RSMPI_REQUEST_NULL) };
        let mut d = Duplicating {
            comm: Box::new(null_comm),
            request: null_request,
        };
        // SAFETY: `comm` is a live communicator; the handle's box and the request are
        // valid for writes and stay where they are until the request completes (the
        // box's heap slot does not move with `d`; the request is passed to MPI_Test by
        // its new address, as MPI allows: a request handle is a value).
        let rc = unsafe { mpi::ffi::MPI_Comm_idup(comm.as_raw(), &mut *d.comm, &mut d.request) };
        (rc == mpi::ffi::MPI_SUCCESS as i32).then_some(d)
    }

    /// The duplicate, if the call has completed; else `self`, still on its way.
    pub(crate) fn test(mut self) -> std::result::Result<SimpleCommunicator, Duplicating> {
        use mpi::raw::FromRaw;
        let mut done: std::os::raw::c_int = 0;
        let mut status = std::mem::MaybeUninit::<mpi::ffi::MPI_Status>::uninit();
        // SAFETY: the request is the live one `MPI_Comm_idup` returned (MPI sets it to
        // the null request once complete, and `self` is not tested again after that);
        // `done` and `status` are valid for writes.
        let rc = unsafe { mpi::ffi::MPI_Test(&mut self.request, &mut done, status.as_mut_ptr()) };
        if rc != mpi::ffi::MPI_SUCCESS as i32 || done == 0 {
            return Err(self);
        }
        // SAFETY: the call completed, so MPI has written the duplicate's handle: a live
        // intra-communicator of this process's own, neither the world nor self, which
        // nothing else holds.
        Ok(unsafe { SimpleCommunicator::from_raw(*self.comm) })
    }
}

/// Receives a probed message into `buf`, whose memory takes it (grown if it is too
/// small, never filled first): `buf` holds exactly the message's bytes after. The rank
/// the message came from.
pub(crate) fn receive_into(probed: (Message, Status), buf: &mut Vec<u8>) -> i32 {
    use mpi::datatype::Equivalence;
    use mpi::raw::{AsRaw, AsRawMut};
    let (mut message, status) = probed;
    let from = status.source_rank();
    let count = status.count(u8::equivalent_datatype());
    let len = usize::try_from(count).unwrap_or(0);
    buf.clear();
    if buf.capacity() < len {
        // A new buffer rather than `reserve`, which would copy the old one's bytes.
        *buf = Vec::with_capacity(len);
    }
    let mut got = std::mem::MaybeUninit::<mpi::ffi::MPI_Status>::uninit();
    // SAFETY: `message` is a matched message not yet received (a probe returned it);
    // the buffer has room for `len` bytes of type `u8`, and MPI writes no more than the
    // count it is given (a longer message is an error, fatal under the default error
    // handler, never an overrun). MPI sets `message` to the null message, as its drop
    // expects.
    unsafe {
        mpi::ffi::MPI_Mrecv(
            buf.as_mut_ptr().cast(),
            count.max(0),
            u8::equivalent_datatype().as_raw(),
            message.as_raw_mut(),
            got.as_mut_ptr(),
        );
    }
    let mut received: std::os::raw::c_int = 0;
    // SAFETY: `got` was written by MPI_Mrecv above; `received` is valid for writes.
    unsafe {
        mpi::ffi::MPI_Get_count(
            got.as_ptr(),
            u8::equivalent_datatype().as_raw(),
            &mut received,
        );
    }
    let received = usize::try_from(received).unwrap_or(0).min(len);
    // SAFETY: MPI wrote `received` bytes (at most the `len` the buffer has room for) at
    // its start, so they are initialized.
    unsafe { buf.set_len(received) };
    from
}

/// Starts `n` processes running `exe` (no arguments) with `MPI_Comm_spawn` from this
/// process alone (over `MPI_COMM_SELF`), passing each of `info` as an `MPI_Info` key
/// and value: the link to them, or MPI's own words for why it could not. A failure
/// comes back as an error rather than ending the process, as MPI's default error
/// handler would: the call is made on a duplicate of `MPI_COMM_SELF` that returns
/// errors. The link itself ends the process on an error, as every communicator does by
/// default: a worker that dies ends the job.
pub(crate) fn spawn(
    exe: &std::path::Path,
    n: i32,
    info: &[(&str, &str)],
) -> std::result::Result<InterCommunicator, String> {
    use mpi::raw::FromRaw;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ok = mpi::ffi::MPI_SUCCESS as i32;
    let prog = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| format!("the program's path {} holds a NUL byte", exe.display()))?;
    let pairs = info
        .iter()
        .map(|(k, v)| Ok((CString::new(*k)?, CString::new(*v)?)))
        .collect::<std::result::Result<Vec<_>, std::ffi::NulError>>()
        .map_err(|_| "an MPI info key or value holds a NUL byte".to_string())?;
    // SAFETY: reading the library's constant handles, set once MPI is initialized, as
    // the caller's link to MPI (a universe) says it is.
    let (self_comm, null_comm, returns, fatal) = unsafe {
        (
            mpi::ffi::RSMPI_COMM_SELF,
            mpi::ffi::RSMPI_COMM_NULL,
            mpi::ffi::RSMPI_ERRORS_RETURN,
            mpi::ffi::RSMPI_ERRORS_ARE_FATAL,
        )
    };
    let mut own = null_comm;
    // SAFETY: `MPI_COMM_SELF` is live while MPI is; `own` is valid for writes. A
    // duplicate of it involves this process alone, so the call cannot wait on others.
    if unsafe { mpi::ffi::MPI_Comm_dup(self_comm, &mut own) } != ok {
        return Err("MPI_Comm_dup of MPI_COMM_SELF failed".into());
    }
    // SAFETY: `own` is the live duplicate made above, this function's alone, and
    // `MPI_ERRORS_RETURN` a predefined error handler.
    unsafe { mpi::ffi::MPI_Comm_set_errhandler(own, returns) };
    // SAFETY: reading a constant handle, as above.
    let null_info = unsafe { mpi::ffi::RSMPI_INFO_NULL };
    let mut hints = null_info;
    // SAFETY: `hints` is valid for writes; MPI_Info_create writes a new info object.
    let created = unsafe { mpi::ffi::MPI_Info_create(&mut hints) } == ok;
    if !created {
        // Spawned with no hints, which MPI_Comm_spawn accepts.
        hints = null_info;
    } else {
        for (k, v) in &pairs {
            // SAFETY: `hints` is the info object created above; key and value are
            // NUL-terminated strings that MPI copies.
            unsafe { mpi::ffi::MPI_Info_set(hints, k.as_ptr(), v.as_ptr()) };
        }
    }
    let mut argv: [*mut std::os::raw::c_char; 1] = [std::ptr::null_mut()];
    let mut codes = vec![ok; usize::try_from(n).unwrap_or(0)];
    let mut inter = null_comm;
    // SAFETY: every pointer is valid for the call: the program's path a NUL-terminated
    // string, `argv` an empty NULL-terminated list, `codes` room for one code per
    // process asked for, `inter` valid for writes; `hints` and `own` are live handles
    // and this process the root (rank 0) of `own`, its only member.
    let rc = unsafe {
        mpi::ffi::MPI_Comm_spawn(
            prog.as_ptr(),
            argv.as_mut_ptr(),
            n,
            hints,
            0,
            own,
            &mut inter,
            codes.as_mut_ptr(),
        )
    };
    if created {
        // SAFETY: the info object created above, no longer used (MPI keeps what it
        // needs of it).
        unsafe { mpi::ffi::MPI_Info_free(&mut hints) };
    }
    // SAFETY: the duplicate made above, used by nothing else; the spawned link does
    // not depend on it.
    unsafe { mpi::ffi::MPI_Comm_free(&mut own) };
    if rc != ok {
        return Err(error_text(rc));
    }
    if let Some(code) = codes.iter().find(|c| **c != ok) {
        return Err(error_text(*code));
    }
    // SAFETY: `inter` is the live intercommunicator MPI_Comm_spawn returned (it
    // succeeded), held by nothing else; a predefined handler is set on it.
    unsafe { mpi::ffi::MPI_Comm_set_errhandler(inter, fatal) };
    // SAFETY: as above: a live intercommunicator that only the returned value holds.
    Ok(unsafe { InterCommunicator::from_raw(inter) })
}

/// MPI's own text for the error `code`.
fn error_text(code: std::os::raw::c_int) -> String {
    let mut buf = vec![0 as std::os::raw::c_char; mpi::ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: std::os::raw::c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_ERROR_STRING characters and a NUL, as the
    // call requires; `len` is valid for writes.
    let rc = unsafe { mpi::ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
    if rc != mpi::ffi::MPI_SUCCESS as i32 {
        return format!("MPI error {code}");
    }
    let len = usize::try_from(len).unwrap_or(0).min(buf.len());
    let bytes: Vec<u8> = buf[..len].iter().map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
