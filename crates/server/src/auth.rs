//! `--auth-token`: the credentials every listener accepts, compared in constant time.
//!
//! - HTTP and WebSocket upgrades: `Authorization: Bearer TOKEN`, `Authorization: Basic` with
//!   the token as password (any user name), or the query parameter `access_token=TOKEN` (what
//!   ESP's web clients send; browsers cannot set headers on a WebSocket).
//! - The `--pubsub` port: the option `access_token=TOKEN` on the first line
//!   (docs/formats/pubsub-protocol.md).

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// True when `given` is the token. The comparison takes the same time wherever the first
/// difference is (only the length can be told apart).
pub fn token_matches(given: &[u8], token: &str) -> bool {
    bool::from(given.ct_eq(token.as_bytes()))
}

/// Why a request without the right token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all.
    Missing,
    /// Credentials were given and none of them is the token.
    Wrong,
    /// An `Authorization` header this server cannot read.
    Unreadable,
}

impl Refusal {
    /// The reason as told to an HTTP client.
    pub fn http_message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this server needs a token: send 'Authorization: Bearer TOKEN' (sluice client --auth-token TOKEN or SLUICE_AUTH_TOKEN), HTTP Basic with the token as password, or the query parameter access_token=TOKEN"
            }
            Refusal::Wrong => "the token is wrong",
            Refusal::Unreadable => {
                "the Authorization header cannot be read: use 'Bearer TOKEN' or 'Basic base64(USER:TOKEN)'"
            }
        }
    }
}

/// Checks the credentials of an HTTP request: the `Authorization` header (Bearer, or Basic with
/// the token as password) and the `access_token` query parameter. Any one that matches lets
/// the request in.
pub fn check_http(
    token: &str,
    authorization: Option<&[u8]>,
    access_token: Option<&str>,
) -> Result<(), Refusal> {
    let mut given = false;
    let mut unreadable = false;
    if let Some(q) = access_token {
        given = true;
        if token_matches(q.as_bytes(), token) {
            return Ok(());
        }
    }
    if let Some(h) = authorization {
        given = true;
        match header_secret(h) {
            Some(secret) => {
                if token_matches(&secret, token) {
                    return Ok(());
                }
            }
            None => unreadable = true,
        }
    }
    match (given, unreadable) {
        (false, _) => Err(Refusal::Missing),
        (true, true) => Err(Refusal::Unreadable),
        (true, false) => Err(Refusal::Wrong),
    }
}

/// The secret of an `Authorization` header: the Bearer token, or the password of Basic
/// credentials. None when the header is neither.
fn header_secret(h: &[u8]) -> Option<Vec<u8>> {
    let h = std::str::from_utf8(h).ok()?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = raw.iter().position(|&b| b == b':')?;
        return Some(raw[colon + 1..].to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn every_form_of_the_token_is_accepted() {
        let t = "s3cret";
        assert_eq!(check_http(t, Some(b"Bearer s3cret"), None), Ok(()));
        assert_eq!(check_http(t, Some(b"bearer  s3cret "), None), Ok(()));
        assert_eq!(check_http(t, Some(&basic("anyone:s3cret")), None), Ok(()));
        assert_eq!(check_http(t, Some(&basic(":s3cret")), None), Ok(()));
        assert_eq!(check_http(t, None, Some("s3cret")), Ok(()));
        // A wrong header does not hide a right query parameter.
        assert_eq!(check_http(t, Some(b"Bearer no"), Some("s3cret")), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let t = "s3cret";
        assert_eq!(check_http(t, None, None), Err(Refusal::Missing));
        assert_eq!(
            check_http(t, Some(b"Bearer s3cre"), None),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            check_http(t, Some(b"Bearer s3cretX"), None),
            Err(Refusal::Wrong)
        );
        assert_eq!(check_http(t, None, Some("")), Err(Refusal::Wrong));
        // The token as user name is not the password.
        assert_eq!(
            check_http(t, Some(&basic("s3cret:")), None),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            check_http(t, Some(b"Basic !!!"), None),
            Err(Refusal::Unreadable)
        );
        assert_eq!(
            check_http(t, Some(b"Digest x"), None),
            Err(Refusal::Unreadable)
        );
    }
}
