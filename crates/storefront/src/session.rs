//! The shopper's session and the forms' CSRF protection, both in cookies: the
//! storefront keeps no state of its own.
//!
//! - `__Host-bazaar_session` holds the access token identity issued at sign-in (`Secure;
//!   HttpOnly; SameSite=Lax`): scripts cannot read it, other sites' forms do not send
//!   it on a POST. It expires with the token.
//! - `__Host-bazaar_refresh` holds the refresh token issued with it (same attributes,
//!   as long as that lives): once the access token has expired, the next request
//!   trades it for a new pair (`http::renew_session`) instead of asking to sign in.
//! - `__Host-bazaar_csrf` holds a random token that every state-changing form repeats in a
//!   hidden field; a POST is refused unless both are present and equal. Double submit
//!   rather than an HMAC of the session: it needs no secret shared between storefront
//!   replicas, and it also protects the forms used before there is a session (sign in
//!   and sign up, against login CSRF). Another site can neither read the cookie
//!   (HttpOnly, same origin) nor set it: the `__Host-` prefix makes browsers accept
//!   the cookie only from this host itself, `Secure`, `Path=/` and without `Domain`,
//!   so a sibling subdomain cannot plant a token of its choosing (which it could with a
//!   plain name, `Domain=` the parent and a longer `Path`), and so it cannot forge a
//!   matching field.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chassis::auth::{Principal, Role, Tokens};
use contracts::identity::SignedIn;
use subtle::ConstantTimeEq as _;

pub(crate) const SESSION_COOKIE: &str = "__Host-bazaar_session";
pub(crate) const CSRF_COOKIE: &str = "__Host-bazaar_csrf";
pub(crate) const REFRESH_COOKIE: &str = "__Host-bazaar_refresh";

/// The CSRF cookie lives for a day; a form older than that is posted again.
const CSRF_MAX_AGE_SECS: u64 = 24 * 3600;

/// One request's view of the shopper: who (if signed in), and the CSRF token its
/// forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Visit {
    pub(crate) shopper: Option<Principal>,
    csrf: String,
    /// The CSRF cookie is new: the response must set it.
    new_csrf: bool,
}

/// The value of cookie `name` in `headers`.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

impl Visit {
    /// The visit a request's cookies describe; an invalid or expired session token is
    /// no session.
    pub(crate) fn from_headers(headers: &HeaderMap, tokens: &Tokens) -> Self {
        let shopper = cookie(headers, SESSION_COOKIE).and_then(|token| tokens.verify(token));
        let presented = cookie(headers, CSRF_COOKIE)
            .filter(|v| (32..=64).contains(&v.len()))
            .map(str::to_owned);
        let new_csrf = presented.is_none();
        let csrf = presented.unwrap_or_else(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
        Self {
            shopper,
            csrf,
            new_csrf,
        }
    }

    /// The token this visit's forms carry.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a posted form's token matches the cookie. A visit without the cookie
    /// never matches (its token was just made up).
    pub(crate) fn csrf_ok(&self, posted: &str) -> bool {
        !self.new_csrf && bool::from(self.csrf.as_bytes().ct_eq(posted.as_bytes()))
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.shopper.as_ref().is_some_and(|p| p.role == Role::Admin)
    }

    /// The cookies a response to this visit must set (the CSRF one, when new).
    pub(crate) fn set_cookies(&self, headers: &mut HeaderMap) {
        if self.new_csrf {
            append(
                headers,
                &format!(
                    "{CSRF_COOKIE}={}; Path=/; Max-Age={CSRF_MAX_AGE_SECS}; Secure; HttpOnly; SameSite=Strict",
                    self.csrf
                ),
            );
        }
    }
}

fn append(headers: &mut HeaderMap, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// Starts (or renews) a session: each token in its cookie, for as long as it is valid.
pub(crate) fn start(headers: &mut HeaderMap, signed: &SignedIn) {
    for (name, value, max_age) in [
        (SESSION_COOKIE, &signed.token, signed.expires_in),
        (
            REFRESH_COOKIE,
            &signed.refresh_token,
            signed.refresh_expires_in,
        ),
    ] {
        append(
            headers,
            &format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"),
        );
    }
}

/// Ends the session's cookies.
pub(crate) fn end(headers: &mut HeaderMap) {
    for name in [SESSION_COOKIE, REFRESH_COOKIE] {
        append(
            headers,
            &format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"),
        );
    }
}

/// Whether a response already sets the session cookie (signs in or out itself).
pub(crate) fn sets_session(headers: &HeaderMap) -> bool {
    let prefix = format!("{SESSION_COOKIE}=");
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(prefix.as_bytes()))
}

/// Puts `token` in the request's session cookie, the other cookies kept: the page
/// then sees the renewed session as if the browser had sent it.
pub(crate) fn use_session(headers: &mut HeaderMap, token: &str) {
    let mut pairs: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && pair
                    .split_once('=')
                    .is_none_or(|(name, _)| name != SESSION_COOKIE)
        })
        .map(str::to_owned)
        .collect();
    pairs.push(format!("{SESSION_COOKIE}={token}"));
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&pairs.join("; ")) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(cookies).unwrap());
        headers
    }

    #[test]
    fn a_form_matches_only_its_cookie() {
        let tokens = Tokens::new(&[7; 32], 60);
        let fresh = Visit::from_headers(&HeaderMap::new(), &tokens);
        assert!(!fresh.csrf_ok(fresh.csrf()), "no cookie, no match");
        let value = "a".repeat(43);
        let visit = Visit::from_headers(&headers(&format!("x=1; {CSRF_COOKIE}={value}")), &tokens);
        assert!(visit.csrf_ok(&value));
        assert!(!visit.csrf_ok(""));
        assert!(!visit.csrf_ok(&"b".repeat(43)));
        assert!(visit.shopper.is_none());
    }

    #[test]
    fn a_renewed_session_replaces_only_the_session_cookie() {
        let mut request = headers(&format!("a=1; {SESSION_COOKIE}=old; {REFRESH_COOKIE}=r"));
        use_session(&mut request, "new");
        assert_eq!(
            request[header::COOKIE],
            format!("a=1; {REFRESH_COOKIE}=r; {SESSION_COOKIE}=new").as_str()
        );
        let mut none = HeaderMap::new();
        use_session(&mut none, "t");
        assert_eq!(none[header::COOKIE], format!("{SESSION_COOKIE}=t").as_str());

        let mut response = HeaderMap::new();
        assert!(!sets_session(&response));
        end(&mut response);
        assert!(sets_session(&response));
        assert_eq!(response.get_all(header::SET_COOKIE).iter().count(), 2);
    }

    #[test]
    fn the_session_is_the_token_in_its_cookie() {
        let tokens = Tokens::new(&[7; 32], 60);
        let token = tokens.issue("u1", Role::Customer).unwrap();
        let visit = Visit::from_headers(&headers(&format!("{SESSION_COOKIE}={token}")), &tokens);
        assert_eq!(visit.shopper.unwrap().user_id, "u1");
        let forged = Visit::from_headers(&headers(&format!("{SESSION_COOKIE}=x.y.z")), &tokens);
        assert!(forged.shopper.is_none());
    }
}
