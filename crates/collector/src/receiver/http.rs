//! OTLP/HTTP: `POST /v1/logs` and `POST /v1/traces`, binary protobuf
//! (`application/x-protobuf`) or OTLP/JSON (`application/json`), optionally
//! gzip-compressed. The answer uses the request's content type.

use std::future::Future;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::Code;

use super::{
    Failure, Logs, PartialSuccess, ReceiveError, ReceiverContext, Signal, Traces, export, listen,
    retry_after_secs, tls,
};
use crate::config::Endpoint;
use crate::ingest::{Ingest, IngestError};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
const ACCEPTED_TYPES: &str = "application/x-protobuf or application/json";

/// Serves OTLP/HTTP on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets in-flight requests finish and returns.
///
/// Bodies larger than `max_message_bytes` are refused from their
/// `Content-Length` before they are read, and streamed bodies and gzip
/// output are cut off at the limit, so no request holds more than that in
/// memory. Error bodies are a `google.rpc.Status` in the request's content
/// type (plain text when that type is not supported). Status codes:
///
/// | situation | status |
/// |---|---|
/// | accepted (rejected records in `partial_success`) | 200 |
/// | undecodable protobuf, JSON or gzip; invalid UTF-8 | 400 |
/// | no or unknown bearer token | 401 with `WWW-Authenticate: Bearer` |
/// | body larger than `max_message_bytes` (before or after gzip) | 413 |
/// | Content-Type or Content-Encoding not supported | 415 |
/// | backpressure | 429 with `Retry-After` |
/// | durable write failed | 500 |
/// | collector unavailable (shutting down) | 503 with `Retry-After` |
/// | other paths / methods | 404 / 405 |
pub async fn serve_http<I: Ingest>(
    listener: tokio::net::TcpListener,
    endpoint: &Endpoint,
    ctx: Arc<ReceiverContext<I>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    let (incoming, limit) = listen(listener, endpoint, tls::ALPN_HTTP, "http")?;
    let state = Arc::new(HttpState { ctx, limit });
    let router = Router::new()
        .route("/v1/logs", post(handle::<I, Logs>))
        .route("/v1/traces", post(handle::<I, Traces>))
        .with_state(state);
    axum::serve(incoming, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ReceiveError::Http)?;
    tracing::info!("OTLP/HTTP receiver stopped");
    Ok(())
}

struct HttpState<I: Ingest> {
    ctx: Arc<ReceiverContext<I>>,
    limit: usize,
}

/// The body formats of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => PROTOBUF,
            Format::Json => JSON,
        }
    }
}

/// A request refused as a whole.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    /// The gRPC code in the `google.rpc.Status` body.
    code: Code,
    /// The `status` label of `otel_audit_requests_total`.
    label: &'static str,
    /// What the client is told.
    message: String,
    /// What the collector's log says, when `message` may quote request
    /// content (serde's JSON errors can).
    log: Option<String>,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, code: Code, label: &'static str, message: String) -> Self {
        Refusal {
            status,
            code,
            label,
            message,
            log: None,
            retry_after: None,
        }
    }

    fn bad_request(message: String) -> Self {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "bad_request",
            message,
        )
    }

    fn too_large(message: String) -> Self {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            "too_large",
            message,
        )
    }

    fn unsupported(message: String) -> Self {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            "unsupported_media_type",
            message,
        )
    }

    fn from_failure(failure: &Failure) -> Self {
        let message = failure.message();
        match failure {
            Failure::Ingest(IngestError::Backpressure { retry_after, .. }) => Refusal {
                retry_after: Some(*retry_after),
                ..Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    Code::ResourceExhausted,
                    "backpressure",
                    message,
                )
            },
            Failure::Ingest(IngestError::Unavailable { retry_after, .. }) => Refusal {
                retry_after: Some(*retry_after),
                ..Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "unavailable",
                    message,
                )
            },
            Failure::Decode(_) => Refusal::bad_request(message),
            _ => Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                failure.label(),
                message,
            ),
        }
    }
}

async fn handle<I: Ingest, S: Signal>(
    State(state): State<Arc<HttpState<I>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let format = content_format(&parts.headers);
    // Errors are answered in the request's format when it is one of ours.
    let reply = format.as_ref().ok().copied();
    let (label, response) = match process::<I, S>(&state, &parts.headers, format, body).await {
        Ok((format, partial)) => {
            let label = if partial.is_some() { "partial" } else { "ok" };
            (label, success::<S>(format, partial))
        }
        Err(refusal) => {
            // Client errors are worth a warning; refusals the pipeline
            // decided (backpressure, unavailable, internal) are counted in
            // the metrics and, when they are failures, logged where they
            // happened: one line per refused request under load would flood
            // the log.
            if refusal.status.is_client_error() {
                tracing::warn!(
                    transport = "http",
                    signal = S::NAME,
                    status = refusal.label,
                    reason = refusal.log.as_deref().unwrap_or(&refusal.message),
                    "refused an OTLP request"
                );
            }
            (refusal.label, refusal_response(reply, &refusal))
        }
    };
    state.ctx.metrics.requests.add(
        &[
            ("transport", "http"),
            ("signal", S::NAME),
            ("status", label),
        ],
        1,
    );
    response
}

/// Authenticate, bound, decode, export.
async fn process<I: Ingest, S: Signal>(
    state: &HttpState<I>,
    headers: &HeaderMap,
    format: Result<Format, Refusal>,
    body: Body,
) -> Result<(Format, Option<PartialSuccess>), Refusal> {
    let ctx = &state.ctx;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| crate::auth::AuthError::Malformed))
        .transpose();
    let principal = authorization.and_then(|h| ctx.auth.check(h)).map_err(|e| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            "unauthenticated",
            e.to_string(),
        )
    })?;
    let format = format?;
    let gzip = content_encoding(headers)?;
    let limit = state.limit;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Refusal::too_large(format!(
            "the request body of {len} bytes is larger than the limit of {limit} bytes \
             (max_message_bytes)"
        )));
    }
    let body = read_body(body, limit).await?;
    let body: Bytes = if gzip {
        gunzip(&body, limit)?.into()
    } else {
        body
    };
    let input = decode::<S>(format, body)?;
    let partial = export::<I, S>(ctx, &principal, input)
        .await
        .map_err(|f| Refusal::from_failure(&f))?;
    Ok((format, partial))
}

/// The body format named by `Content-Type` (parameters such as `charset`
/// are ignored).
fn content_format(headers: &HeaderMap) -> Result<Format, Refusal> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::unsupported(format!(
            "missing Content-Type: send {ACCEPTED_TYPES}"
        )));
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media = text.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(PROTOBUF) || media.eq_ignore_ascii_case("application/protobuf") {
        Ok(Format::Protobuf)
    } else if media.eq_ignore_ascii_case(JSON) {
        Ok(Format::Json)
    } else {
        Err(Refusal::unsupported(format!(
            "unsupported Content-Type {:?}: send {ACCEPTED_TYPES}",
            super::truncate(&text, 100)
        )))
    }
}

/// Whether the body is gzip-compressed (`Content-Encoding: gzip`); any
/// other encoding than `identity` is refused.
fn content_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        _ => Err(Refusal::unsupported(format!(
            "unsupported Content-Encoding {:?}: send gzip or no encoding",
            super::truncate(&text, 100)
        ))),
    }
}

/// Reads the whole body, refusing it as soon as it exceeds `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Refusal::bad_request(format!("cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(Refusal::too_large(format!(
                "the request body is larger than the limit of {limit} bytes (max_message_bytes)"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Decompresses a gzip body (one or more members), never holding more than
/// `limit` bytes of output: a small "gzip bomb" is refused once its output
/// passes the limit instead of being inflated in full.
fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut decoder = flate2::read::MultiGzDecoder::new(data);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Refusal::bad_request(format!("invalid gzip body: {e}"))),
        };
        if out.len() + n > limit {
            return Err(Refusal::too_large(format!(
                "the decompressed request body is larger than the limit of {limit} bytes \
                 (max_message_bytes)"
            )));
        }
        if out.capacity() - out.len() < n {
            // Grow by doubling, but never past the limit (plain `Vec`
            // growth could reserve up to twice the limit).
            let want = (out.capacity() * 2).max(out.len() + n).min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// Decodes a body in its format. Error messages name the problem and, for
/// JSON, where it is.
fn decode<S: Signal>(format: Format, body: Bytes) -> Result<S::Input, Refusal> {
    match format {
        Format::Protobuf => {
            S::wire(body).map_err(|e| Refusal::bad_request(format!("invalid protobuf: {e}")))
        }
        Format::Json => {
            let text = std::str::from_utf8(&body).map_err(|e| {
                Refusal::bad_request(format!(
                    "invalid UTF-8 at byte {}: an OTLP/JSON body must be UTF-8",
                    e.valid_up_to()
                ))
            })?;
            serde_json::from_str::<S::Request>(text)
                .map(Into::into)
                .map_err(|e| {
                    let (line, column) = (e.line(), e.column());
                    let full = e.to_string();
                    let suffix = format!(" at line {line} column {column}");
                    let what = full.strip_suffix(&suffix).unwrap_or(&full);
                    Refusal {
                        // serde quotes offending values, which may be record
                        // content: the log gets only the position and the kind.
                        log: Some(format!(
                            "invalid JSON at line {line} column {column} ({:?} error)",
                            e.classify()
                        )),
                        ..Refusal::bad_request(format!(
                            "invalid JSON at line {line} column {column}: {what}"
                        ))
                    }
                })
        }
    }
}

/// `200 OK` with the `Export*ServiceResponse` in the request's format.
fn success<S: Signal>(format: Format, partial: Option<PartialSuccess>) -> Response {
    let body = match format {
        Format::Protobuf => S::response(partial).encode_to_vec(),
        // A full success is `{}` rather than `{"partialSuccess":null}`, which
        // strict proto3 JSON parsers may refuse.
        Format::Json if partial.is_none() => b"{}".to_vec(),
        Format::Json => match serde_json::to_vec(&S::response(partial)) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an OTLP/JSON response");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        },
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

/// The error answer: a `google.rpc.Status` in the request's format, or plain
/// text when the request's content type is not supported.
fn refusal_response(reply: Option<Format>, refusal: &Refusal) -> Response {
    let code = refusal.code as i32;
    let (content_type, body): (&str, Vec<u8>) = match reply {
        Some(Format::Protobuf) => (
            PROTOBUF,
            tonic_types::pb::Status {
                code,
                message: refusal.message.clone(),
                details: Vec::new(),
            }
            .encode_to_vec(),
        ),
        Some(Format::Json) => (
            JSON,
            serde_json::json!({ "code": code, "message": refusal.message })
                .to_string()
                .into_bytes(),
        ),
        None => (
            "text/plain; charset=utf-8",
            format!("{}\n", refusal.message).into_bytes(),
        ),
    };
    let mut response =
        (refusal.status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    if let Some(after) = refusal.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    if refusal.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"otel-audit\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let e = gunzip(&bomb, 1024 * 1024).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("1048576 bytes"), "{}", e.message);

        let data = b"hello, world".repeat(1000);
        let out = gunzip(&gzip(&data), data.len()).unwrap();
        assert_eq!(out, data);
        assert!(out.capacity() <= data.len());

        let e = gunzip(b"not gzip at all", 1024).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("invalid gzip body"), "{}", e.message);
    }

    #[test]
    fn content_types_and_encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(
            content_format(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(content_format(&h).unwrap(), Format::Json);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(content_format(&h).unwrap(), Format::Protobuf);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = content_format(&h).unwrap_err();
        assert!(e.message.contains(ACCEPTED_TYPES), "{}", e.message);

        assert!(!content_encoding(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert!(content_encoding(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            content_encoding(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn json_errors_name_the_position_but_logs_do_not_quote_values() {
        let e = decode::<Logs>(
            Format::Json,
            Bytes::from_static(br#"{"resourceLogs": 12345678}"#),
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("invalid JSON at line 1 column "),
            "{}",
            e.message
        );
        let log = e.log.unwrap();
        assert!(!log.contains("12345678"), "{log}");
        let e = decode::<Logs>(Format::Json, Bytes::from_static(b"{\"a\": \"\xff\"}")).unwrap_err();
        assert!(
            e.message.starts_with("invalid UTF-8 at byte 7"),
            "{}",
            e.message
        );
        let e = decode::<Traces>(Format::Protobuf, Bytes::from_static(&[0x0a, 0xff])).unwrap_err();
        assert!(e.message.starts_with("invalid protobuf: "), "{}", e.message);
    }
}
