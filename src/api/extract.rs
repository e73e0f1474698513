//! Turning request bodies into typed input, with the contract's error answers: 413 past 16 KiB
//! (declared or streamed), 422 `json_invalid` / `missing` for bodies that are not what the
//! endpoint takes, and pydantic's per-field errors for fields of the wrong type.

use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error::{ApiError, FieldError};
use crate::domain::credentials::FieldProblem;

/// The largest body any endpoint takes.
pub const MAX_BODY: usize = 16_384;

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes before reading them if the
/// length is declared, and as soon as it is exceeded otherwise.
pub async fn read_body(req: &HttpRequest, mut payload: Payload) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| match e {
                actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge,
                _ => ApiError::validation(FieldError::body(
                    &[],
                    "json_invalid",
                    "Could not read the request body",
                )),
            })?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    // actix's client_request_timeout covers the head only; a body trickled in a byte at a time
    // would otherwise hold a worker's connection for as long as the client likes.
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(ApiError::RequestTimeout))
}

/// The longest a client may take to send a (small) body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most header bytes a request may carry; a browser's requests use a few KiB.
pub const MAX_HEADER_BYTES: usize = 16_384;

/// Middleware: refuses a request whose headers together exceed [`MAX_HEADER_BYTES`] with 431,
/// in the contract's error shape, before any handler runs.
pub async fn limit_headers(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        let res = actix_web::ResponseError::error_response(&ApiError::HeadersTooLarge);
        return Ok(req.into_response(res));
    }
    next.call(req)
        .await
        .map(actix_web::dev::ServiceResponse::map_into_boxed_body)
}

fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_json(req: &HttpRequest) -> bool {
    let m = media_type(req);
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

/// The body as a JSON object. An empty body (nothing but JSON's own whitespace: space, tab,
/// line feed, carriage return) is `missing` if `required`, else `{}`.
pub fn json_object(
    req: &HttpRequest,
    body: &[u8],
    required: bool,
) -> Result<Map<String, Value>, ApiError> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return if required {
            Err(ApiError::validation(FieldError::body(
                &[],
                "missing",
                "Field required",
            )))
        } else {
            Ok(Map::new())
        };
    }
    let invalid =
        || ApiError::validation(FieldError::body(&[], "json_invalid", "JSON decode error"));
    if !is_json(req) {
        return Err(invalid());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation(FieldError::body(
            &[],
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        ))),
        Err(_) => Err(invalid()),
    }
}

/// The body as an urlencoded form; any other content type is an empty form.
pub fn form_fields(req: &HttpRequest, body: &[u8]) -> Vec<(String, String)> {
    if media_type(req) != "application/x-www-form-urlencoded" {
        return Vec::new();
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

/// Reads fields out of a JSON object, collecting every problem before answering, as pydantic
/// does.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self {
            obj,
            errors: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, kind: &'static str, msg: &str) {
        self.errors.push(FieldError::body(&[name], kind, msg));
    }

    /// A required string. JSON `null` is a value of the wrong type, as pydantic says, not an
    /// absent field.
    pub fn string(&mut self, name: &str) -> Option<&'a str> {
        match self.obj.get(name) {
            None => {
                self.push(name, "missing", "Field required");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.push(name, "string_type", "Input should be a valid string");
                None
            }
        }
    }

    /// An optional string: absent or `null` is `Some(None)`; `None` means a wrong type,
    /// already reported.
    pub fn opt_string(&mut self, name: &str) -> Option<Option<&'a str>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => {
                self.push(name, "string_type", "Input should be a valid string");
                None
            }
        }
    }

    /// A required JSON object (a WebAuthn credential, say), as pydantic reads a `dict` field.
    pub fn object(&mut self, name: &str) -> Option<&'a Map<String, Value>> {
        match self.obj.get(name) {
            None => {
                self.push(name, "missing", "Field required");
                None
            }
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                self.push(name, "dict_type", "Input should be a valid dictionary");
                None
            }
        }
    }

    /// An optional JSON object: absent or `null` is `Some(None)`; `None` means a wrong type,
    /// already reported.
    pub fn opt_object(&mut self, name: &str) -> Option<Option<&'a Map<String, Value>>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Object(m)) => Some(Some(m)),
            Some(_) => {
                self.push(name, "dict_type", "Input should be a valid dictionary");
                None
            }
        }
    }

    /// Whether the field is present at all (`null` included): PATCH tells absent from cleared.
    pub fn has(&self, name: &str) -> bool {
        self.obj.contains_key(name)
    }

    /// An optional boolean (JSON `true`/`false` only).
    pub fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.push(name, "bool_type", "Input should be a valid boolean");
                None
            }
        }
    }

    /// Records a parse failure of a field's value.
    pub fn check<T>(&mut self, name: &str, parsed: Result<T, FieldProblem>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(p) => {
                self.errors.push(FieldError::from_problem(name, p));
                None
            }
        }
    }

    /// `Ok` if no field failed, else the 422 with every failure.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Reads a JSON body and hands its object to `parse`, which pulls the fields it needs.
pub async fn json_body<T>(
    req: &HttpRequest,
    payload: Payload,
    required: bool,
    parse: impl FnOnce(&mut Fields<'_>) -> Option<T>,
) -> Result<T, ApiError> {
    let body = read_body(req, payload).await?;
    let obj = json_object(req, &body, required)?;
    let mut fields = Fields::new(&obj);
    let value = parse(&mut fields);
    fields.finish()?;
    value.ok_or(ApiError::Internal)
}
