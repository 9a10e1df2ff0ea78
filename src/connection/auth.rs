//! The authkey handshake of CPython's `multiprocessing.connection`.
//!
//! Each side proves it knows the key by answering the other's challenge with an HMAC of
//! it; the side that accepted delivers its challenge first, the client answers first.
//!
//! - Deliver: send `#CHALLENGE#` + `{sha256}` + 40 random bytes; the answer is
//!   `{sha256}` + HMAC-SHA256(key, everything after `#CHALLENGE#`), or the 16 raw bytes of
//!   HMAC-MD5 over the same bytes (what CPython 3.11 and older answer); reply `#WELCOME#`
//!   or `#FAILURE#`.
//! - Answer: a challenge whose body starts with `{digest}` is answered with `{digest}` +
//!   HMAC(key, body) (`sha256` or `md5`); a body without one (CPython 3.11 and older send
//!   20 random bytes) is answered with the raw HMAC-MD5 of the body. Then `#WELCOME#` is
//!   required.
//!
//! Every message of the handshake is at most 256 bytes, and the whole handshake has a
//! deadline: a peer that says nothing, too much or the wrong thing is refused with an
//! error, never waited on forever. The accepting side never waits for one peer: it is a
//! small state machine the listener advances for many peers at once.
//!
//! With [`Policy::require_sha256`] every HMAC-MD5 form is refused both ways (the raw
//! answer, `{md5}`, and a challenge naming no digest); this shuts out CPython 3.11 and
//! older, which is why it is not the default.

use std::time::Instant;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;

use super::Connection;
use crate::error::{Error, Result};
use crate::sys::net as sysnet;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// The largest handshake message read (CPython reads with `recv_bytes(256)`).
const MAX_HANDSHAKE_MESSAGE: usize = 256;
/// Random bytes in a challenge we deliver (as CPython 3.12+).
const NONCE_LEN: usize = 40;
/// A challenge body of this length is the legacy HMAC-MD5 kind (CPython 3.11 and older).
const LEGACY_CHALLENGE_LEN: usize = 20;
/// Length of a raw HMAC-MD5 answer.
const MD5_LEN: usize = 16;
/// Longest digest name CPython accepts (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;
const SHA256_PREFIX: &[u8] = b"{sha256}";
const MD5_PREFIX: &[u8] = b"{md5}";

/// Which digests a side accepts from its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Refuse HMAC-MD5 (the legacy raw answer, `{md5}`, and challenges without a
    /// digest name): only `{sha256}` passes.
    pub(crate) require_sha256: bool,
}

/// The accepting side, advanced without waiting as the peer's messages arrive, so that
/// one listener runs many handshakes at once: deliver a challenge, then answer the
/// peer's.
#[derive(Debug)]
pub(crate) struct Accepting {
    state: Awaiting,
    /// The connection's message limit before the handshake lowered it.
    limit: usize,
}

#[derive(Debug)]
enum Awaiting {
    /// Our challenge is out; its body is what the answer must be an HMAC of.
    Answer(Vec<u8>),
    /// We said `#WELCOME#`; the peer's challenge comes next.
    Challenge,
    /// Our answer is out; the peer's verdict comes next.
    Verdict,
}

impl Accepting {
    /// Sends the challenge to a peer just accepted.
    pub(crate) fn start(conn: &Connection) -> Result<Accepting> {
        let limit = conn.max_message_size();
        conn.set_max_message_size(MAX_HANDSHAKE_MESSAGE);
        let message = send_challenge(conn)?;
        Ok(Accepting {
            state: Awaiting::Answer(message),
            limit,
        })
    }

    /// Handles whatever the peer has sent so far, without waiting. `Ok(true)` once the
    /// peer is authenticated (the connection's message limit is then restored);
    /// `Ok(false)` while a message is still owed; an error ends the handshake.
    pub(crate) fn advance(
        &mut self,
        conn: &Connection,
        key: &[u8],
        policy: Policy,
    ) -> Result<bool> {
        loop {
            let Some(message) = try_recv(conn)? else {
                return Ok(false);
            };
            self.state = match &self.state {
                Awaiting::Answer(challenge) => {
                    judge(conn, key, challenge, &message, policy)?;
                    Awaiting::Challenge
                }
                Awaiting::Challenge => {
                    conn.send_bytes(&respond(key, &message, policy)?)?;
                    Awaiting::Verdict
                }
                Awaiting::Verdict => {
                    check_verdict(&message)?;
                    conn.set_max_message_size(self.limit);
                    return Ok(true);
                }
            };
        }
    }
}

/// The connecting side: answer the listener's challenge, then deliver one; `deadline`
/// bounds the whole.
pub(crate) fn connect_side(
    conn: &Connection,
    key: &[u8],
    deadline: Option<Instant>,
    policy: Policy,
) -> Result<()> {
    let limit = conn.max_message_size();
    conn.set_max_message_size(MAX_HANDSHAKE_MESSAGE);
    let r = (|| {
        let challenge = recv(conn, deadline)?;
        conn.send_bytes(&respond(key, &challenge, policy)?)?;
        check_verdict(&recv(conn, deadline)?)?;
        let ours = send_challenge(conn)?;
        judge(conn, key, &ours, &recv(conn, deadline)?, policy)
    })();
    conn.set_max_message_size(limit);
    r
}

fn recv(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    Ok(conn.recv_raw(deadline)?.0)
}

/// A whole message if one has arrived; never waits (a partial one is kept for later).
fn try_recv(conn: &Connection) -> Result<Option<Vec<u8>>> {
    match conn.recv_raw(Some(Instant::now())) {
        Ok((message, _)) => Ok(Some(message)),
        Err(Error::Timeout) => Ok(None),
        Err(e) => Err(e),
    }
}

fn refuse(reason: &str) -> Error {
    tracing::debug!("authentication refused: {reason}");
    Error::AuthenticationFailed
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| Error::state("unusable authentication key"))?;
    mac.update(message);
    Ok(mac)
}

fn hmac_md5(key: &[u8], message: &[u8]) -> Result<Hmac<Md5>> {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key)
        .map_err(|_| Error::state("unusable authentication key"))?;
    mac.update(message);
    Ok(mac)
}

/// Whether `response` proves knowledge of `key` for the challenge body `message`
/// (compared in constant time).
fn verify(key: &[u8], message: &[u8], response: &[u8], policy: Policy) -> Result<bool> {
    if let Some(mac) = response.strip_prefix(SHA256_PREFIX) {
        return Ok(hmac_sha256(key, message)?.verify_slice(mac).is_ok());
    }
    if policy.require_sha256 {
        if response.len() == MD5_LEN || response.starts_with(MD5_PREFIX) {
            tracing::debug!("an HMAC-MD5 answer, and SHA-256 is required");
        }
        return Ok(false);
    }
    // A raw legacy answer is recognised by its length alone, as CPython does.
    if response.len() == MD5_LEN {
        return Ok(hmac_md5(key, message)?.verify_slice(response).is_ok());
    }
    if let Some(mac) = response.strip_prefix(MD5_PREFIX) {
        return Ok(hmac_md5(key, message)?.verify_slice(mac).is_ok());
    }
    Ok(false)
}

/// Sends a fresh challenge; returns its body (what the answer must be an HMAC of).
fn send_challenge(conn: &Connection) -> Result<Vec<u8>> {
    let mut message = Vec::with_capacity(SHA256_PREFIX.len() + NONCE_LEN);
    message.extend_from_slice(SHA256_PREFIX);
    let mut nonce = [0u8; NONCE_LEN];
    sysnet::random_bytes(&mut nonce)?;
    message.extend_from_slice(&nonce);
    conn.send_bytes(&[CHALLENGE, &message].concat())?;
    Ok(message)
}

/// Judges the peer's answer to our challenge and tells it the verdict.
fn judge(
    conn: &Connection,
    key: &[u8],
    challenge: &[u8],
    response: &[u8],
    policy: Policy,
) -> Result<()> {
    if verify(key, challenge, response, policy)? {
        conn.send_bytes(WELCOME)
    } else {
        // The peer may already be gone; the refusal stands either way.
        let _ = conn.send_bytes(FAILURE);
        Err(refuse("the peer's digest was wrong"))
    }
}

/// The answer to the peer's whole challenge message.
fn respond(key: &[u8], challenge: &[u8], policy: Policy) -> Result<Vec<u8>> {
    let Some(message) = challenge.strip_prefix(CHALLENGE) else {
        return Err(refuse("the peer sent no challenge"));
    };
    answer(key, message, policy)
}

fn check_verdict(verdict: &[u8]) -> Result<()> {
    if verdict == WELCOME {
        Ok(())
    } else {
        Err(refuse("the peer rejected our digest"))
    }
}

/// The response to the challenge body `message`.
fn answer(key: &[u8], message: &[u8], policy: Policy) -> Result<Vec<u8>> {
    if message.len() < LEGACY_CHALLENGE_LEN {
        return Err(refuse("the challenge is too short"));
    }
    if message.len() != LEGACY_CHALLENGE_LEN && message.first() == Some(&b'{') {
        let name = message
            .iter()
            .take(MAX_DIGEST_NAME + 2)
            .position(|&b| b == b'}')
            .map(|end| &message[1..end]);
        return match name {
            Some(b"sha256") => Ok([
                SHA256_PREFIX,
                &hmac_sha256(key, message)?.finalize().into_bytes(),
            ]
            .concat()),
            Some(b"md5") if !policy.require_sha256 => {
                Ok([MD5_PREFIX, &hmac_md5(key, message)?.finalize().into_bytes()].concat())
            }
            Some(b"md5") => Err(refuse(
                "the peer asks for HMAC-MD5, and SHA-256 is required",
            )),
            _ => Err(refuse("the challenge asks for an unsupported digest")),
        };
    }
    if policy.require_sha256 {
        return Err(refuse(
            "the peer speaks only the legacy HMAC-MD5 handshake, and SHA-256 is required",
        ));
    }
    Ok(hmac_md5(key, message)?.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::fd as sysfd;

    /// A started accepting side, and the peer's end after it read the challenge.
    fn started() -> (Connection, Accepting, Connection, Vec<u8>) {
        let (ours, theirs) = crate::pipe(true).unwrap();
        let h = Accepting::start(&ours).unwrap();
        let challenge = theirs.recv_bytes().unwrap();
        (ours, h, theirs, challenge)
    }

    #[test]
    fn the_accepting_side_never_waits_and_completes_with_a_good_peer() {
        let (ours, mut h, theirs, challenge) = started();
        assert!(!h.advance(&ours, b"key", Policy::default()).unwrap());
        theirs
            .send_bytes(&respond(b"key", &challenge, Policy::default()).unwrap())
            .unwrap();
        assert!(!h.advance(&ours, b"key", Policy::default()).unwrap());
        assert_eq!(theirs.recv_bytes().unwrap(), WELCOME);
        let mine = send_challenge(&theirs).unwrap();
        assert!(!h.advance(&ours, b"key", Policy::default()).unwrap());
        let answer = theirs.recv_bytes().unwrap();
        judge(&theirs, b"key", &mine, &answer, Policy::default()).unwrap();
        assert!(h.advance(&ours, b"key", Policy::default()).unwrap());
        assert_eq!(ours.max_message_size(), crate::DEFAULT_MAX_MESSAGE_SIZE);
    }

    #[test]
    fn garbage_ends_the_accepting_side_with_a_typed_error() {
        let too_long: &[u8] = b"\xff\xff\xff\xff\x00\x00\x01\x00\x00\x00\x00\x00";
        let no_digest: &[u8] = b"\x00\x00\x00\x05hello";
        let wrong_digest: &[u8] = b"\x00\x00\x00\x10AAAAAAAAAAAAAAAA";
        let half: &[u8] = b"\x00\x00\x00\x40abc";
        for (bytes, leave) in [
            (too_long, false),
            (no_digest, false),
            (wrong_digest, false),
            (half, true),
            (&[][..], true),
        ] {
            let (ours, mut h, theirs, _) = started();
            sysfd::write_all(theirs.as_fd(), bytes).unwrap();
            if leave {
                drop(theirs);
            }
            let r = h.advance(&ours, b"key", Policy::default());
            match bytes {
                b if b == too_long => {
                    assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{r:?}")
                }
                b if b == half => assert!(matches!(r, Err(Error::Decode(_))), "{r:?}"),
                [] => assert!(matches!(r, Err(Error::Closed)), "{r:?}"),
                _ => assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}"),
            }
        }
    }

    #[test]
    fn sha256_answers_verify() {
        let msg = [SHA256_PREFIX, &[7u8; NONCE_LEN]].concat();
        for policy in [Policy::default(), STRICT] {
            let r = answer(b"key", &msg, policy).unwrap();
            assert!(r.starts_with(SHA256_PREFIX));
            assert!(verify(b"key", &msg, &r, policy).unwrap());
            assert!(!verify(b"other", &msg, &r, policy).unwrap());
        }
    }

    #[test]
    fn legacy_answers_are_raw_md5() {
        let msg = [3u8; LEGACY_CHALLENGE_LEN];
        let r = answer(b"key", &msg, Policy::default()).unwrap();
        assert_eq!(r.len(), MD5_LEN);
        assert!(verify(b"key", &msg, &r, Policy::default()).unwrap());
        assert!(!verify(b"key", &[4u8; LEGACY_CHALLENGE_LEN], &r, Policy::default()).unwrap());
    }

    const STRICT: Policy = Policy {
        require_sha256: true,
    };

    #[test]
    fn md5_is_refused_both_ways_when_sha256_is_required() {
        let legacy = [3u8; LEGACY_CHALLENGE_LEN];
        assert!(answer(b"key", &legacy, STRICT).is_err());
        let named = [MD5_PREFIX, &[3u8; NONCE_LEN]].concat();
        assert!(answer(b"key", &named, STRICT).is_err());
        let msg = [SHA256_PREFIX, &[7u8; NONCE_LEN]].concat();
        let raw = hmac_md5(b"key", &msg)
            .unwrap()
            .finalize()
            .into_bytes()
            .to_vec();
        assert!(verify(b"key", &msg, &raw, Policy::default()).unwrap());
        assert!(!verify(b"key", &msg, &raw, STRICT).unwrap());
        let prefixed = [MD5_PREFIX, &raw].concat();
        assert!(verify(b"key", &msg, &prefixed, Policy::default()).unwrap());
        assert!(!verify(b"key", &msg, &prefixed, STRICT).unwrap());
    }

    #[test]
    fn odd_challenges_are_refused() {
        let p = Policy::default();
        assert!(answer(b"k", b"short", p).is_err());
        let msg = [b"{sha512}".as_slice(), &[1u8; 40]].concat();
        assert!(answer(b"k", &msg, p).is_err());
        let msg = [b"{".as_slice(), &[1u8; 40]].concat();
        assert!(answer(b"k", &msg, p).is_err());
        assert!(!verify(b"k", b"m", b"", p).unwrap());
        assert!(!verify(b"k", b"m", b"{sha256}", p).unwrap());
    }
}
