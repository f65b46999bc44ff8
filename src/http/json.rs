//! Request decoding shared by every handler.
//!
//! Upstream's Go decoders match JSON keys case-insensitively and clients rely
//! on it (ochami sends `MacRequired` for `MACRequired`), so [`ApiJson`] folds
//! keys to lower case before decoding into input types whose field names are
//! lower case. Every decoding failure is a 400 naming what was wrong; a body
//! over the limit stays a 413.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::ApiError;

/// A JSON body decoded with case-insensitive keys.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        decode_folded(&bytes).map(ApiJson)
    }
}

/// A JSON body decoded exactly as sent (free-form documents).
pub struct ExactJson<T>(pub T);

impl<S, T> FromRequest<S> for ExactJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        let v: Value = parse(&bytes)?;
        serde_json::from_value(v)
            .map(ExactJson)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON document is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Parses JSON, folds every object key to lower case and decodes into `T`.
pub fn decode_folded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut v = parse(bytes)?;
    fold_keys(&mut v);
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Parses JSON, folds only the top-level object's keys to lower case and
/// decodes into `T`: for bodies that carry documents whose keys are data.
pub fn decode_top_folded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut v = parse(bytes)?;
    if let Value::Object(map) = &mut v {
        let old = std::mem::take(map);
        for (k, val) in old {
            map.insert(k.to_lowercase(), val);
        }
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Parses JSON as sent (no key folding) and decodes into `T`.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let v = parse(bytes)?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Lower-cases object keys recursively. On a clash the later key wins, as in
/// Go's decoder.
pub fn fold_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                fold_keys(&mut val);
                map.insert(k.to_lowercase(), val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(fold_keys),
        _ => {}
    }
}

/// Query parameters as (lower-cased key, value) pairs, repeats kept.
#[derive(Debug, Default, Clone)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn parse(query: Option<&str>) -> QueryPairs {
        QueryPairs(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
                .collect(),
        )
    }

    /// Every value given for `key` (lower case), comma lists split.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            })
            .collect()
    }

    pub fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// `true`/`1`/`yes`/present-without-value as true.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(|v| {
            v.is_empty() || matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryPairs {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(QueryPairs::parse(parts.uri.query()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_recursively() {
        let mut v: Value = serde_json::json!({"MacRequired": true, "Systems": [{"UUID": "a"}]});
        fold_keys(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"macrequired": true, "systems": [{"uuid": "a"}]})
        );
    }

    #[test]
    fn bad_bodies_are_400() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            nid: i64,
        }
        assert_eq!(
            decode_folded::<T>(b"{").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            decode_folded::<T>(b"").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            decode_folded::<T>(br#"{"NID":"x"}"#).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(decode_folded::<T>(br#"{"NID":3}"#).unwrap().nid, 3);
    }

    #[test]
    fn query_repeats_and_lists() {
        let q = QueryPairs::parse(Some("type=Node&Type=NodeBMC,Chassis&nidonly"));
        assert_eq!(q.all("type"), vec!["Node", "NodeBMC", "Chassis"]);
        assert!(q.flag("nidonly"));
    }
}
