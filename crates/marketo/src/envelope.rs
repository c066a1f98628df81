//! The Marketo response envelope, parsed leniently (reference §2).

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

use crate::classify::{Failure, Verdict, classify};

/// One `errors[]` (or per-record `reasons[]`) item. Codes are quoted integers on the wire; numbers
/// are accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub(crate) struct ApiError {
    #[serde(default, deserialize_with = "lenient_code")]
    pub code: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub message: String,
}

/// `{requestId, success, result?, errors?, warnings?, moreResult?, nextPageToken?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct Envelope<T> {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub result: Option<Vec<T>>,
    #[serde(default)]
    pub errors: Option<Vec<ApiError>>,
    #[serde(default)]
    pub warnings: Option<serde_json::Value>,
    #[serde(default)]
    pub more_result: Option<bool>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Just the members that tell an error envelope, whatever the rest holds.
#[derive(Debug, Deserialize)]
struct Probe {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
}

impl<T> Envelope<T> {
    /// The first error, when the request failed.
    pub fn first_error(&self) -> Option<&ApiError> {
        self.errors.as_ref().and_then(|e| e.first())
    }

    /// The records (an absent `result` is an empty page).
    pub fn records(self) -> Vec<T> {
        self.result.unwrap_or_default()
    }
}

/// How a response body was understood.
#[derive(Debug)]
pub(crate) enum Parsed<T> {
    /// A successful envelope.
    Ok(Envelope<T>),
    /// An error envelope: its action, code and message.
    Failed { action: Verdict<Failure>, code: String, message: String },
    /// Not a readable envelope.
    Malformed(String),
}

/// Parses a 2xx JSON body: the typed parse first (one pass on the hot path), then an untyped probe
/// to tell an error envelope from a malformed body.
///
/// A body that fails only because a string holds a lone UTF-16 surrogate escape (`"\ud83d"`: a
/// Java server cut a string inside an emoji) is read again with each lone surrogate replaced by
/// U+FFFD: otherwise one such value would fail its page on every retry and stop the sync there.
pub(crate) fn parse_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Parsed<T> {
    match parse_exact::<T>(status, body) {
        Parsed::Malformed(why) => match salesync_core::mapping::repair_lone_surrogates(body) {
            Some(fixed) => match parse_exact::<T>(status, &fixed) {
                Parsed::Malformed(_) => Parsed::Malformed(why),
                parsed => {
                    tracing::warn!("Marketo response holds lone UTF-16 surrogate escapes; read them as U+FFFD");
                    parsed
                }
            },
            None => Parsed::Malformed(why),
        },
        parsed => parsed,
    }
}

fn parse_exact<T: DeserializeOwned>(status: u16, body: &[u8]) -> Parsed<T> {
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(env) => match env.success {
            Some(true) => Parsed::Ok(env),
            Some(false) => failed(status, env.first_error()),
            None => Parsed::Malformed("response has no `success` member".into()),
        },
        Err(typed) => match serde_json::from_slice::<Probe>(body) {
            Ok(p) if p.success == Some(false) => failed(status, p.errors.as_ref().and_then(|e| e.first())),
            Ok(_) => Parsed::Malformed(format!("unexpected `result` shape: {typed}")),
            Err(e) => Parsed::Malformed(format!("malformed JSON: {e}")),
        },
    }
}

fn failed<T>(status: u16, err: Option<&ApiError>) -> Parsed<T> {
    match err {
        Some(e) => {
            Parsed::Failed { action: classify(status, Some(&e.code)), code: e.code.clone(), message: e.message.clone() }
        }
        None => Parsed::Malformed("`success:false` without `errors`".into()),
    }
}

/// The first error code of a non-2xx body, when it happens to be an envelope.
pub(crate) fn probe_error(body: &[u8]) -> Option<ApiError> {
    let p = serde_json::from_slice::<Probe>(body).ok()?;
    p.errors.and_then(|e| e.into_iter().next())
}

pub(crate) fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an error code")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.trim().to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(V)
}

pub(crate) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// An integer given as a number or a numeric string.
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Backoff;

    #[test]
    fn reference_leads_example() {
        let body = br#"{"requestId":"1c2d#18c2e4b9d07","success":true,"result":[
            {"id":1001,"firstName":"Ada"},{"id":1002,"firstName":"Alan"}],
            "moreResult":true,"nextPageToken":"PS5VL5WD4UOWGOUCJR6VY7JQO2KUXL7B===="}"#;
        let Parsed::Ok(env) = parse_body::<serde_json::Value>(200, body) else { panic!("not ok") };
        assert_eq!(env.request_id.as_deref(), Some("1c2d#18c2e4b9d07"));
        assert_eq!(env.more_result, Some(true));
        assert_eq!(env.next_page_token.as_deref(), Some("PS5VL5WD4UOWGOUCJR6VY7JQO2KUXL7B===="));
        assert_eq!(env.records().len(), 2);
    }

    #[test]
    fn paging_token_example_has_no_result() {
        let body = br#"{"requestId":"1607c#14884f3e74e","success":true,"nextPageToken":"GIYDAOBNGEYS2MBWKQYDAORQGA5DAMBOGAYDAKZQGAYDALBQ"}"#;
        let Parsed::Ok(env) = parse_body::<serde_json::Value>(200, body) else { panic!("not ok") };
        assert!(env.result.is_none());
        assert!(env.next_page_token.is_some());
    }

    #[test]
    fn error_envelope_is_classified_by_code() {
        let body = br#"{"requestId":"a3f1#18c2e4b9d07","success":false,"errors":[{"code":"602","message":"Access token expired"}]}"#;
        match parse_body::<serde_json::Value>(200, body) {
            Parsed::Failed { action, code, message } => {
                assert_eq!(action, Verdict::Reauthenticate);
                assert_eq!(code, "602");
                assert_eq!(message, "Access token expired");
            }
            other => panic!("{other:?}"),
        }
        // Numeric codes, null result and string warnings are accepted.
        let body = br#"{"success":false,"result":null,"warnings":["x"],"errors":[{"code":606,"message":"Max rate limit '100' exceeded with in '20' secs"}]}"#;
        match parse_body::<serde_json::Value>(200, body) {
            Parsed::Failed { action, code, .. } => {
                assert_eq!(action, Verdict::Retry(Backoff::RateWindow));
                assert_eq!(code, "606");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_envelope_wins_even_when_result_shape_is_wrong() {
        let body =
            br#"{"success":false,"result":"nope","errors":[{"code":"1035","message":"Unsupported filter type"}]}"#;
        assert!(matches!(parse_body::<u32>(200, body), Parsed::Failed { ref code, .. } if code == "1035"));
    }

    #[test]
    fn malformed_bodies() {
        assert!(matches!(parse_body::<u32>(200, b"{\"success\":tru"), Parsed::Malformed(_)));
        assert!(matches!(parse_body::<u32>(200, b"<html>oops</html>"), Parsed::Malformed(_)));
        assert!(matches!(parse_body::<u32>(200, br#"{"result":[]}"#), Parsed::Malformed(_)));
        assert!(matches!(parse_body::<u32>(200, br#"{"success":true,"result":["a"]}"#), Parsed::Malformed(_)));
        assert!(matches!(parse_body::<u32>(200, br#"{"success":false}"#), Parsed::Malformed(_)));
    }

    #[test]
    fn lone_surrogate_escapes_do_not_fail_the_page() {
        let body = br#"{"success":true,"result":[{"id":1,"firstName":"Zo\ud83d"},{"id":2,"firstName":"\ud83d\ude00 \udc00x\\ud800"}]}"#;
        let Parsed::Ok(env) = parse_body::<salesync_core::mapping::LeadRecord>(200, body) else { panic!() };
        let names: Vec<_> = env.records().into_iter().map(|r| r.0.unwrap().first_name.unwrap()).collect();
        // A pair stays an emoji; an escaped backslash before `ud800` is not an escape.
        assert_eq!(names, vec!["Zo\u{fffd}".to_string(), "\u{1F600} \u{fffd}x\\ud800".to_string()]);
        assert_eq!(salesync_core::mapping::repair_lone_surrogates(br#"{"a":"\ud83d\ude00"}"#), None);
        assert_eq!(salesync_core::mapping::repair_lone_surrogates(br#"\u"#), None);
        assert_eq!(salesync_core::mapping::repair_lone_surrogates(br#""\ud800"#).as_deref(), Some(&br#""\ufffd"#[..]));
        // Still malformed for other reasons: the original error is reported.
        assert!(matches!(parse_body::<u32>(200, br#"{"success":true,"result":["\ud800"#), Parsed::Malformed(_)));
    }

    #[test]
    fn warnings_and_missing_members_are_lenient() {
        let body = br#"{"requestId":"x#y","success":true,"warnings":[{"code":1,"message":"m"}],"result":[]}"#;
        assert!(matches!(parse_body::<u32>(200, body), Parsed::Ok(_)));
        let body = br#"{"success":true,"warnings":"plain"}"#;
        let Parsed::Ok(env) = parse_body::<u32>(200, body) else { panic!() };
        assert!(env.records().is_empty());
    }

    #[test]
    fn probe_reads_codes_of_non_2xx_bodies() {
        assert_eq!(
            probe_error(br#"{"success":false,"errors":[{"code":"611","message":"System error"}]}"#).map(|e| e.code),
            Some("611".into())
        );
        assert!(probe_error(b"Bad gateway").is_none());
    }
}
