//! Admin credentials: who may use the admin listener, and how that is checked on each request.
//!
//! Accepted credentials, checked in this order:
//! 1. an admin client certificate (chained to the relay's CA, SAN URI
//!    `urn:scanbridge:admin:<name>`, issued by `scanbridge-relay ca issue-admin`);
//! 2. `Authorization: Bearer <token>` with the token of `[admin] token_file` (API, CLI);
//! 3. for browsers, the `sb_session` cookie set by the login form after the token was typed in
//!    (HttpOnly, Secure, SameSite=Strict). Forms that change something also carry the session's
//!    CSRF token.
//!
//! A site certificate is never an admin credential: a request over a connection with a site
//! certificate and no other credential is refused with 403, and a bearer token or cookie does not
//! turn it into an admin connection either (a site gateway has no business on this listener).
//! Sessions live in memory (bounded); a relay restart logs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use x509_parser::extensions::GeneralName;

use crate::config::AdminToken;
use crate::identity::SITE_URI_PREFIX;

/// Prefix of the SAN URI that makes a certificate an admin certificate.
pub const ADMIN_URI_PREFIX: &str = "urn:scanbridge:admin:";
/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "sb_session";
/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most concurrent browser sessions; the oldest is dropped beyond this.
const MAX_SESSIONS: usize = 256;

/// What the client certificate of a connection says about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCert {
    /// No client certificate (browsers, the CLI with a token).
    None,
    /// An admin certificate, with its name.
    Admin(String),
    /// A site certificate: never an admin credential.
    Site(String),
    /// A certificate of the relay's CA that names neither.
    Other,
}

/// Classifies a verified client certificate.
pub fn classify_cert(der: &[u8]) -> PeerCert {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return PeerCert::Other;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return PeerCert::Other;
    };
    let mut admin = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(site) = uri.strip_prefix(SITE_URI_PREFIX) {
                // A site URI wins over anything else in the same certificate.
                return PeerCert::Site(site.to_string());
            }
            if let Some(a) = uri.strip_prefix(ADMIN_URI_PREFIX) {
                admin = Some(a.to_string());
            }
        }
    }
    match admin {
        Some(a) if !a.is_empty() => PeerCert::Admin(a),
        _ => PeerCert::Other,
    }
}

/// Who the request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin client certificate.
    Certificate(String),
    /// The bearer token.
    Token,
    /// A browser session; carries the session's CSRF token.
    Session { csrf: String },
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("admin credential required: an admin client certificate, `Authorization: Bearer <token from [admin] token_file>`, or log in at /login")]
    Missing,
    #[error("the admin token does not match [admin] token_file")]
    BadToken,
    #[error("a site certificate ({0}) is not an admin credential")]
    SiteCertificate(String),
    #[error("this certificate is not an admin certificate (issue one with `scanbridge-relay ca issue-admin`)")]
    NotAdminCertificate,
}

/// Compares two secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random id (hex, 256 bits).
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created: Instant,
}

/// The admin token and the browser sessions.
#[derive(Clone)]
pub struct Auth {
    token: AdminToken,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl Auth {
    pub fn new(token: AdminToken) -> Auth {
        Auth {
            token,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether `candidate` is the admin token.
    pub fn token_matches(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.as_bytes(), self.token.expose().as_bytes())
    }

    /// Starts a browser session; returns `(session id, csrf token)`.
    pub fn new_session(&self) -> (String, String) {
        let id = random_id();
        let csrf = random_id();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// Ends a browser session.
    pub fn end_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(id);
    }

    /// The CSRF token of a live session.
    fn session_csrf(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .filter(|s| s.created.elapsed() < SESSION_LIFETIME)
            .map(|s| s.csrf.clone())
    }

    /// Authenticates a request. `allow_session`: whether a browser cookie counts (pages and
    /// read-only API calls; API calls that change something need a certificate or the token).
    pub fn authenticate(
        &self,
        peer: &PeerCert,
        headers: &HeaderMap,
        allow_session: bool,
    ) -> Result<Principal, AuthError> {
        match peer {
            PeerCert::Site(site) => return Err(AuthError::SiteCertificate(site.clone())),
            PeerCert::Admin(name) => return Ok(Principal::Certificate(name.clone())),
            PeerCert::Other => return Err(AuthError::NotAdminCertificate),
            PeerCert::None => {}
        }
        if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or_default();
            return match value.strip_prefix("Bearer ") {
                Some(t) if self.token_matches(t.trim()) => Ok(Principal::Token),
                _ => Err(AuthError::BadToken),
            };
        }
        if allow_session {
            if let Some(csrf) = cookie(headers, SESSION_COOKIE).and_then(|id| self.session_csrf(id))
            {
                return Ok(Principal::Session { csrf });
            }
        }
        Err(AuthError::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(AdminToken::new("0123456789abcdef0123"))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_bearer_token_authenticates_and_a_wrong_one_is_refused() {
        let a = auth();
        let ok = headers(&[("authorization", "Bearer 0123456789abcdef0123")]);
        assert_eq!(
            a.authenticate(&PeerCert::None, &ok, false),
            Ok(Principal::Token)
        );
        let bad = headers(&[("authorization", "Bearer 0123456789abcdef0124")]);
        assert_eq!(
            a.authenticate(&PeerCert::None, &bad, true),
            Err(AuthError::BadToken)
        );
        assert_eq!(
            a.authenticate(&PeerCert::None, &HeaderMap::new(), true),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn a_site_certificate_is_refused_even_with_the_right_token() {
        let a = auth();
        let ok = headers(&[("authorization", "Bearer 0123456789abcdef0123")]);
        assert_eq!(
            a.authenticate(&PeerCert::Site("WH01".into()), &ok, true),
            Err(AuthError::SiteCertificate("WH01".into()))
        );
    }

    #[test]
    fn a_session_cookie_counts_only_where_sessions_are_allowed() {
        let a = auth();
        let (id, csrf) = a.new_session();
        let cookie = format!("theme=dark; {SESSION_COOKIE}={id}");
        let h = headers(&[("cookie", &cookie)]);
        assert_eq!(
            a.authenticate(&PeerCert::None, &h, true),
            Ok(Principal::Session { csrf })
        );
        assert_eq!(
            a.authenticate(&PeerCert::None, &h, false),
            Err(AuthError::Missing)
        );
        a.end_session(&id);
        assert_eq!(
            a.authenticate(&PeerCert::None, &h, true),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn secrets_of_different_length_or_content_are_not_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
