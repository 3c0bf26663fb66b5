//! Every answer the handlers build that is not a served file: one place for bodies, lengths and caching
//! headers. Files are answered by [`crate::server::phone`] with their validators.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The body of every answer: whole, in memory (configuration files are a few KiB).
pub type Body = Full<Bytes>;

/// `status` with `body` of `content_type`, `Cache-Control: no-store` and its length.
pub fn with_body(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// A short plain-text answer (refusals, errors).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    with_body(status, Bytes::from_static(text.as_bytes()), "text/plain; charset=utf-8")
}

/// A plain-text answer made at run time (readiness, metrics).
pub fn text(status: StatusCode, text: String) -> Response<Body> {
    with_body(status, Bytes::from(text), "text/plain; charset=utf-8")
}

/// A JSON answer; `Pragma: no-cache` too, as RFC 6749 §5.1 asks of token answers.
pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = with_body(status, body, "application/json");
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// 405's `Allow` header on `r`.
pub fn allow(mut r: Response<Body>, methods: &'static str) -> Response<Body> {
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
    r
}

/// A HEAD answer: the GET answer's status and headers, no body.
pub fn head_only(r: Response<Body>) -> Response<Body> {
    let (parts, _) = r.into_parts();
    Response::from_parts(parts, Body::default())
}
