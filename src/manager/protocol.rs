//! The manager's messages. A request or a reply is one message of the connection
//! (CPython's framing), its body laid out by hand: a tag byte, fixed-width integers,
//! and strings with a 4-byte length. Decoding borrows from the message and checks every
//! length against what is there, so no request allocates on the server's side beyond
//! the message itself (whose size the connection bounds).

/// What a client asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Request<'a> {
    /// Runs `method` of object `id` on `args`.
    Call {
        id: u64,
        method: &'a str,
        args: &'a [u8],
    },
    /// Makes an object; the caller holds one reference to it.
    Create {
        typeid: &'a str,
        ctor: &'a str,
        args: &'a [u8],
    },
    /// One more reference for the caller: `adopt` takes over one of the references
    /// that travel with encoded proxies, if any is left.
    IncRef { id: u64, adopt: bool },
    /// One reference of the caller fewer.
    DecRef { id: u64 },
    /// A reference held by no client, for a proxy encoded on its way into the server
    /// (inside a value that object `holder` keeps, let go of when the holder is freed;
    /// 0: kept as long as the server) or out to another process (`transit`).
    Detached { id: u64, transit: bool, holder: u64 },
    /// A reference to the object exposed under `name`.
    Named { name: &'a str },
    /// Exposes object `id` under `name` (holding a reference).
    Expose { id: u64, name: &'a str },
    /// The number of references to object `id` (0: no such object), and of objects.
    Count { id: u64 },
    /// Stops the server.
    Shutdown,
    /// The largest request the server accepts.
    Limits,
    /// Takes the mailbox whose descriptor comes with the request for this
    /// connection's later requests and replies.
    Mailbox,
}

const CALL: u8 = 1;
const CREATE: u8 = 2;
const INCREF: u8 = 3;
const DECREF: u8 = 4;
const DETACHED: u8 = 5;
const NAMED: u8 = 6;
const EXPOSE: u8 = 7;
const COUNT: u8 = 8;
const SHUTDOWN: u8 = 9;
const LIMITS: u8 = 10;
const MAILBOX: u8 = 11;

/// Reply tags.
pub(crate) const OK: u8 = 0;
pub(crate) const ERR: u8 = 1;

impl<'a> Request<'a> {
    /// The head of the request: everything but the trailing argument bytes of `Call`
    /// and `Create`, which are sent after it as a second part of the same message.
    pub(crate) fn write_head(&self, out: &mut Vec<u8>) {
        out.clear();
        match *self {
            Request::Call { id, method, .. } => {
                out.push(CALL);
                out.extend_from_slice(&id.to_le_bytes());
                put_str(out, method);
            }
            Request::Create { typeid, ctor, .. } => {
                out.push(CREATE);
                put_str(out, typeid);
                put_str(out, ctor);
            }
            Request::IncRef { id, adopt } => {
                out.push(INCREF);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(u8::from(adopt));
            }
            Request::DecRef { id } => {
                out.push(DECREF);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Request::Detached {
                id,
                transit,
                holder,
            } => {
                out.push(DETACHED);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(u8::from(transit));
                out.extend_from_slice(&holder.to_le_bytes());
            }
            Request::Named { name } => {
                out.push(NAMED);
                put_str(out, name);
            }
            Request::Expose { id, name } => {
                out.push(EXPOSE);
                out.extend_from_slice(&id.to_le_bytes());
                put_str(out, name);
            }
            Request::Count { id } => {
                out.push(COUNT);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Request::Shutdown => out.push(SHUTDOWN),
            Request::Limits => out.push(LIMITS),
            Request::Mailbox => out.push(MAILBOX),
        }
    }

    /// The argument bytes that follow the head.
    pub(crate) fn tail(&self) -> &'a [u8] {
        match *self {
            Request::Call { args, .. } | Request::Create { args, .. } => args,
            _ => &[],
        }
    }

    /// Parses a request; `None` for anything malformed.
    pub(crate) fn parse(body: &'a [u8]) -> Option<Request<'a>> {
        let mut r = Reader(body);
        let req = match r.u8()? {
            CALL => {
                let id = r.u64()?;
                let method = r.str()?;
                Request::Call {
                    id,
                    method,
                    args: r.rest(),
                }
            }
            CREATE => {
                let typeid = r.str()?;
                let ctor = r.str()?;
                Request::Create {
                    typeid,
                    ctor,
                    args: r.rest(),
                }
            }
            INCREF => Request::IncRef {
                id: r.u64()?,
                adopt: r.bool()?,
            },
            DECREF => Request::DecRef { id: r.u64()? },
            DETACHED => Request::Detached {
                id: r.u64()?,
                transit: r.bool()?,
                holder: r.u64()?,
            },
            NAMED => Request::Named { name: r.str()? },
            EXPOSE => Request::Expose {
                id: r.u64()?,
                name: r.str()?,
            },
            COUNT => Request::Count { id: r.u64()? },
            SHUTDOWN => Request::Shutdown,
            LIMITS => Request::Limits,
            MAILBOX => Request::Mailbox,
            _ => return None,
        };
        // Trailing bytes after a request without arguments: malformed.
        if !matches!(req, Request::Call { .. } | Request::Create { .. }) && !r.0.is_empty() {
            return None;
        }
        Some(req)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names come from the program (method names, type ids): far below 4 GiB.
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(req: Request<'_>) {
        let mut head = Vec::new();
        req.write_head(&mut head);
        head.extend_from_slice(req.tail());
        assert_eq!(Request::parse(&head), Some(req));
    }

    #[test]
    fn every_request_reads_back_as_written() {
        round(Request::Call {
            id: 7,
            method: "get",
            args: &[1, 2, 3],
        });
        round(Request::Create {
            typeid: "dict",
            ctor: "",
            args: &[],
        });
        round(Request::IncRef { id: 1, adopt: true });
        round(Request::DecRef { id: 1 });
        round(Request::Detached {
            id: 1,
            transit: false,
            holder: 2,
        });
        round(Request::Named { name: "queue" });
        round(Request::Expose { id: 3, name: "q" });
        round(Request::Count { id: 3 });
        round(Request::Shutdown);
        round(Request::Limits);
        round(Request::Mailbox);
    }

    #[test]
    fn truncated_and_overlong_requests_are_refused() {
        let mut head = Vec::new();
        Request::Named { name: "queue" }.write_head(&mut head);
        for n in 0..head.len() {
            assert_eq!(Request::parse(&head[..n]), None, "prefix of {n} bytes");
        }
        head.push(0);
        assert_eq!(Request::parse(&head), None);
        // A length far past the message.
        assert_eq!(Request::parse(&[NAMED, 0xff, 0xff, 0xff, 0xff, b'a']), None);
    }
}
