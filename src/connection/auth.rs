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
//! error, never waited on forever.

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

/// The accepting side: deliver a challenge, then answer the client's.
pub(crate) fn accept_side(conn: &Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    bounded(conn, |c| {
        deliver_challenge(c, key, deadline)?;
        answer_challenge(c, key, deadline)
    })
}

/// The connecting side: answer the listener's challenge, then deliver one.
pub(crate) fn connect_side(conn: &Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    bounded(conn, |c| {
        answer_challenge(c, key, deadline)?;
        deliver_challenge(c, key, deadline)
    })
}

/// Runs `f` with the connection's message limit lowered to the handshake's.
fn bounded(conn: &Connection, f: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
    let limit = conn.max_message_size();
    conn.set_max_message_size(MAX_HANDSHAKE_MESSAGE);
    let r = f(conn);
    conn.set_max_message_size(limit);
    r
}

fn recv(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    Ok(conn.recv_raw(deadline)?.0)
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
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<bool> {
    // A raw legacy answer is recognised by its length alone, as CPython does.
    if response.len() == MD5_LEN {
        return Ok(hmac_md5(key, message)?.verify_slice(response).is_ok());
    }
    if let Some(mac) = response.strip_prefix(SHA256_PREFIX) {
        return Ok(hmac_sha256(key, message)?.verify_slice(mac).is_ok());
    }
    if let Some(mac) = response.strip_prefix(MD5_PREFIX) {
        return Ok(hmac_md5(key, message)?.verify_slice(mac).is_ok());
    }
    Ok(false)
}

fn deliver_challenge(conn: &Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    let mut message = Vec::with_capacity(SHA256_PREFIX.len() + NONCE_LEN);
    message.extend_from_slice(SHA256_PREFIX);
    let mut nonce = [0u8; NONCE_LEN];
    sysnet::random_bytes(&mut nonce)?;
    message.extend_from_slice(&nonce);
    conn.send_bytes(&[CHALLENGE, &message].concat())?;
    let response = recv(conn, deadline)?;
    if verify(key, &message, &response)? {
        conn.send_bytes(WELCOME)?;
        Ok(())
    } else {
        // The peer may already be gone; the refusal stands either way.
        let _ = conn.send_bytes(FAILURE);
        Err(refuse("the peer's digest was wrong"))
    }
}

fn answer_challenge(conn: &Connection, key: &[u8], deadline: Option<Instant>) -> Result<()> {
    let challenge = recv(conn, deadline)?;
    let Some(message) = challenge.strip_prefix(CHALLENGE) else {
        return Err(refuse("the peer sent no challenge"));
    };
    let response = answer(key, message)?;
    conn.send_bytes(&response)?;
    let verdict = recv(conn, deadline)?;
    if verdict == WELCOME {
        Ok(())
    } else {
        Err(refuse("the peer rejected our digest"))
    }
}

/// The response to the challenge body `message`.
fn answer(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
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
            Some(b"md5") => {
                Ok([MD5_PREFIX, &hmac_md5(key, message)?.finalize().into_bytes()].concat())
            }
            _ => Err(refuse("the challenge asks for an unsupported digest")),
        };
    }
    Ok(hmac_md5(key, message)?.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_answers_verify() {
        let msg = [SHA256_PREFIX, &[7u8; NONCE_LEN]].concat();
        let r = answer(b"key", &msg).unwrap();
        assert!(r.starts_with(SHA256_PREFIX));
        assert!(verify(b"key", &msg, &r).unwrap());
        assert!(!verify(b"other", &msg, &r).unwrap());
    }

    #[test]
    fn legacy_answers_are_raw_md5() {
        let msg = [3u8; LEGACY_CHALLENGE_LEN];
        let r = answer(b"key", &msg).unwrap();
        assert_eq!(r.len(), MD5_LEN);
        assert!(verify(b"key", &msg, &r).unwrap());
        assert!(!verify(b"key", &[4u8; LEGACY_CHALLENGE_LEN], &r).unwrap());
    }

    #[test]
    fn odd_challenges_are_refused() {
        assert!(answer(b"k", b"short").is_err());
        let msg = [b"{sha512}".as_slice(), &[1u8; 40]].concat();
        assert!(answer(b"k", &msg).is_err());
        let msg = [b"{".as_slice(), &[1u8; 40]].concat();
        assert!(answer(b"k", &msg).is_err());
        assert!(!verify(b"k", b"m", b"").unwrap());
        assert!(!verify(b"k", b"m", b"{sha256}").unwrap());
    }
}
