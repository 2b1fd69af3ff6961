//! The wire format of a call, whatever transport carries it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::failure::RpcFailure;

/// The status of a value answer (`{"ok": ..}`); HTTP carries it as its status code.
pub const ANSWER_OK: u16 = 200;
/// The status of a typed-error answer (`{"err": ..}`): the caller's business (out of
/// stock, declined), not a server fault, hence a 4xx.
pub const ANSWER_ERR: u16 = 422;

/// The body of every answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T, E> {
    Ok(T),
    Err(E),
}

/// What came back from a peer, still encoded: a status and a body. For a contract
/// answer the status is [`ANSWER_OK`] or [`ANSWER_ERR`] and the body a [`Reply`];
/// anything else is the transport's or the server's own refusal (overloaded, out of
/// time, unknown method), with a problem document as the body when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What serving one call produced, for the transport to send.
#[derive(Debug)]
pub enum Served {
    /// A contract answer ([`ANSWER_OK`] or [`ANSWER_ERR`]).
    Answer(Answer),
    /// The arguments were malformed: the caller's bug (HTTP: 400); the detail says
    /// what was wrong.
    Malformed(String),
    /// The answer could not be encoded: a server fault (HTTP: 500).
    Unencodable(serde_json::Error),
}

/// Decodes a call's arguments, one JSON object named by parameter; `Err` is the
/// detail of a malformed call.
pub fn args<A: DeserializeOwned>(body: &[u8]) -> Result<A, String> {
    // serde would also take an array as positional arguments: not our wire format.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("malformed call arguments: expected a JSON object".to_owned());
    }
    serde_json::from_slice(body).map_err(|e| format!("malformed call arguments: {e}"))
}

/// Encodes the outcome of a call as its answer.
pub fn answer<T: Serialize, E: Serialize + std::fmt::Display>(result: Result<T, E>) -> Served {
    let (status, body) = match result {
        Ok(value) => (ANSWER_OK, serde_json::to_vec(&Reply::<T, E>::Ok(value))),
        Err(error) => {
            tracing::debug!(error = %error, "call answered with a typed error");
            (ANSWER_ERR, serde_json::to_vec(&Reply::<T, E>::Err(error)))
        }
    };
    match body {
        Ok(body) => Served::Answer(Answer { status, body }),
        Err(e) => Served::Unencodable(e),
    }
}

/// Reads `peer`'s answer as the contract's [`Reply`], or says why it is none.
pub fn decode<T: DeserializeOwned, E: DeserializeOwned>(
    peer: &'static str,
    answer: &Answer,
) -> Result<Reply<T, E>, RpcFailure> {
    let Answer { status, body } = answer;
    if *status == ANSWER_OK || *status == ANSWER_ERR {
        if let Ok(reply) = serde_json::from_slice::<Reply<T, E>>(body) {
            return Ok(reply);
        }
        if *status == ANSWER_OK {
            return Err(RpcFailure::Protocol {
                peer,
                message: "the answer does not match the contract".to_owned(),
            });
        }
    }
    // Not a contract answer: a problem document (404 unknown method after a partial
    // deploy, 503 overloaded, 504 out of time ...). Keep its gist.
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    Err(RpcFailure::Status {
        peer,
        status: *status,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Args {
        id: String,
    }

    #[test]
    fn arguments_are_one_object() {
        assert_eq!(args::<Args>(br#" {"id":"p1","newer":1}"#).unwrap().id, "p1");
        for malformed in ["[\"p1\"]", "", "null", "{}", "{\"id\": 5}"] {
            let detail = args::<Args>(malformed.as_bytes()).unwrap_err();
            assert!(detail.starts_with("malformed call arguments"), "{detail}");
        }
    }

    #[test]
    fn answers_round_trip_and_other_bodies_are_failures() {
        let Served::Answer(ok) = answer::<u32, String>(Ok(7)) else {
            panic!("not an answer")
        };
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (ANSWER_OK, &br#"{"ok":7}"#[..])
        );
        assert!(matches!(decode::<u32, String>("p", &ok), Ok(Reply::Ok(7))));
        let Served::Answer(err) = answer::<u32, String>(Err("no".into())) else {
            panic!("not an answer")
        };
        assert!(matches!(decode::<u32, String>("p", &err), Ok(Reply::Err(e)) if e == "no"));

        let garbled = Answer {
            status: ANSWER_OK,
            body: b"{\"ok\":\"seven\"}".to_vec(),
        };
        assert!(matches!(
            decode::<u32, String>("p", &garbled),
            Err(RpcFailure::Protocol { .. })
        ));
        let problem = Answer {
            status: 503,
            body: br#"{"status":503,"detail":"overloaded"}"#.to_vec(),
        };
        assert_eq!(
            decode::<u32, String>("p", &problem).unwrap_err(),
            RpcFailure::Status {
                peer: "p",
                status: 503,
                detail: "overloaded".into()
            }
        );
    }
}
