//! Request extractors whose rejections are our problem+json.
//!
//! axum's own `Json` answers 422 for both a wrong type and a missing field, in plain
//! text. The public contract is sharper: malformed JSON or a wrong type is 400; a
//! missing required field is a 422 naming the field, like any other invalid value.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use chassis_core::validation::FieldError;

use crate::problem::Problem;

/// A JSON body, or a problem+json rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(Problem::unsupported_media_type(
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::payload_too_large(crate::server::BODY_LIMIT_BYTES)
            } else {
                Problem::bad_request(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON document into `T`, classifying failures per the API contract.
///
/// Every request body of this API is a JSON object. serde's derived structs would
/// also accept a positional array (`["a@b.c", "pw"]`), which no client means; refuse it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::bad_request(
            "expected a JSON object, found an array",
        ));
    }
    if has_escaped_nul(bytes) {
        return Err(nul_problem());
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| classify(&error))?;
    deserializer
        .end()
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn classify(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let path = error.path().to_string();
            let message = strip_position(&inner.to_string());
            if let Some(field) = missing_field(&message) {
                let field = if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                Problem::validation(vec![FieldError::new(field, "is required")])
            } else {
                let field = if path == "." { String::new() } else { path };
                Problem::bad_request(if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                })
                .with_errors(vec![FieldError::new(field, message)])
            }
        }
        _ => Problem::bad_request(format!("malformed JSON: {inner}")),
    }
}

/// No text this API stores may hold a NUL character: PostgreSQL's text type cannot,
/// and one store must not accept what the other refuses. Refused once, here, for
/// bodies, query strings and path segments alike.
fn nul_problem() -> Problem {
    Problem::bad_request("text must not contain NUL characters (\\u0000, %00)")
}

/// A `\u0000` escape in a JSON document. Raw control bytes are invalid JSON anyway,
/// and backslashes only occur inside strings, so escapes can be walked pairwise.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(&b"0000"[..]) {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// A percent-encoded NUL in a URL part.
fn has_encoded_nul(part: &str) -> bool {
    part.as_bytes().windows(3).any(|w| w == b"%00")
}

/// serde_json appends " at line L column C"; the path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// For `#[serde(deserialize_with = "chassis::extract::integer")]` on an `i64` field.
///
/// The OpenAPI 3.1 document types such fields `integer`, and JSON Schema counts any
/// number with a zero fractional part as an integer: `2.0` and `2e1` are as valid as
/// `2` and `20`. serde alone would reject them as floats, so a client following the
/// published schema got a 400. Numbers with a fraction (`2.5`) or beyond `i64` are
/// still the wrong type (400).
pub fn integer<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_i64(IntegerVisitor)
}

struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // -2^63 is exact in f64; 2^63 is the first value past i64::MAX.
        const MIN: f64 = i64::MIN as f64;
        const MAX: f64 = -(i64::MIN as f64);
        if v.fract() == 0.0 && (MIN..MAX).contains(&v) {
            Ok(v as i64)
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
}

/// Query parameters, or a 400 problem+json naming what could not be parsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        if has_encoded_nul(query) {
            return Err(nul_problem());
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let field = error.path().to_string();
                let message = error.inner().to_string();
                Problem::bad_request(format!("invalid query string: {message}"))
                    .with_errors(vec![FieldError::new(field, message)])
            })
    }
}

/// Path parameters, or a 400 problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_encoded_nul(parts.uri.path()) {
            return Err(nul_problem());
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        product_id: String,
        quantity: u32,
    }

    #[derive(Debug, Deserialize)]
    struct Counted {
        #[serde(deserialize_with = "integer")]
        n: i64,
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        for (json, n) in [
            (r#"{"n":7}"#, 7),
            (r#"{"n":7.0}"#, 7),
            (r#"{"n":-3.0}"#, -3),
            (r#"{"n":2e1}"#, 20),
            (r#"{"n":-0.0}"#, 0),
        ] {
            assert_eq!(
                parse_json::<Counted>(json.as_bytes()).unwrap().n,
                n,
                "{json}"
            );
        }
    }

    #[test]
    fn fractions_and_out_of_range_numbers_are_400() {
        for json in [
            r#"{"n":7.5}"#,
            r#"{"n":1e19}"#,
            r#"{"n":-1e19}"#,
            r#"{"n":9223372036854775808}"#,
            r#"{"n":"7"}"#,
        ] {
            let p = parse_json::<Counted>(json.as_bytes()).unwrap_err();
            assert_eq!(p.status, 400, "{json}");
            assert_eq!(p.errors[0].field, "n", "{json}");
        }
    }

    #[test]
    fn malformed_json_is_400() {
        let p = parse_json::<Item>(b"{\"product_id\": ").unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn wrong_type_is_400_naming_the_field() {
        let p = parse_json::<Item>(br#"{"product_id":"a","quantity":"two"}"#).unwrap_err();
        assert_eq!(p.status, 400);
        assert_eq!(p.errors[0].field, "quantity");
    }

    #[test]
    fn missing_field_is_422_naming_the_field() {
        let p = parse_json::<Item>(br#"{"product_id":"a"}"#).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "quantity");
    }

    #[test]
    fn unknown_field_is_400() {
        let p = parse_json::<Item>(br#"{"product_id":"a","quantity":1,"x":1}"#).unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn arrays_in_place_of_objects_are_400() {
        let p = parse_json::<Item>(br#" ["a", 1]"#).unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn nul_characters_are_400_but_an_escaped_backslash_is_not_one() {
        let p = parse_json::<Item>(br#"{"product_id":"a\u0000b","quantity":1}"#).unwrap_err();
        assert_eq!(p.status, 400);
        assert!(parse_json::<Item>(br#"{"product_id":"a\\u0000b","quantity":1}"#).is_ok());
        assert!(has_encoded_nul("/api/v1/products/%00"));
        assert!(!has_encoded_nul("/api/v1/products/%200"));
    }

    #[test]
    fn trailing_garbage_is_400() {
        let p = parse_json::<Item>(br#"{"product_id":"a","quantity":1} x"#).unwrap_err();
        assert_eq!(p.status, 400);
    }
}
