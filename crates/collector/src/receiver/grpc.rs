//! OTLP/gRPC: `opentelemetry.proto.collector.{logs,trace}.v1` `Export`.
//!
//! A tower layer in front of tonic's router ([`Guard`]) authenticates each
//! request from its `authorization` metadata before the message is decoded,
//! counts every answer in `otel_audit_requests_total`, and gives the errors
//! tonic raises itself (decoding, size limits) the codes the OTLP
//! specification asks for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::http;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::{CompressionEncoding, DecodeBuf, EnabledCompressionEncodings};
use tonic::codegen::{BoxFuture, StdError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{
    Failure, Logs, LogsInput, ReceiveError, ReceiverContext, Signal, Traces, export, listen, tls,
};
use crate::auth::{AuthError, Authenticator};
use crate::config::Endpoint;
use crate::ingest::{Ingest, IngestError, Principal};
use crate::metrics::Metrics;

const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets in-flight requests finish and returns.
///
/// Requests may be compressed with gzip or zstd. Status codes:
///
/// | situation | code |
/// |---|---|
/// | accepted (rejected records in `partial_success`) | `OK` |
/// | no or unknown bearer token | `UNAUTHENTICATED` |
/// | message larger than `max_message_bytes` (after decompression) | `RESOURCE_EXHAUSTED` |
/// | undecodable message or compression | `INVALID_ARGUMENT` |
/// | backpressure | `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` |
/// | collector unavailable (shutting down) | `UNAVAILABLE` with a `google.rpc.RetryInfo` |
/// | durable write failed | `INTERNAL` |
pub async fn serve_grpc<I: Ingest>(
    listener: tokio::net::TcpListener,
    endpoint: &Endpoint,
    ctx: Arc<ReceiverContext<I>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    let (incoming, limit) = listen(listener, endpoint, tls::ALPN_GRPC, "grpc")?;

    let service = Arc::new(GrpcService { ctx: ctx.clone() });
    let logs = LogsServer {
        service: service.clone(),
        limit,
    };
    let traces = TraceServiceServer::from_arc(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);
    let guard = GuardLayer(Arc::new(GuardState {
        auth: ctx.auth.clone(),
        metrics: ctx.metrics.clone(),
        limit,
    }));
    tonic::transport::Server::builder()
        .max_frame_size(MAX_FRAME_BYTES)
        .layer(guard)
        .add_service(logs)
        .add_service(traces)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ReceiveError::Grpc)?;
    tracing::info!("OTLP/gRPC receiver stopped");
    Ok(())
}

/// The largest HTTP/2 frame the receiver accepts (hyper's default is 16
/// KiB, HTTP/2's least). An export request is some hundreds of KiB; each
/// frame of it costs a pass through h2, hyper and tonic, and with 16 KiB
/// frames those passes cost the collector about 2% of its CPU under load
/// (1.01-1.03 x events per CPU-second at 256 KiB, five alternating pairs).
/// Flow control still bounds what a connection may send ahead (hyper's
/// 1 MiB windows), so this adds no memory beyond one frame per connection.
const MAX_FRAME_BYTES: u32 = 256 * 1024;

/// When the guard saw the request's headers: the handler, which runs once
/// tonic has read and decoded the body, measures the time in between.
#[derive(Clone, Copy)]
struct Arrived(std::time::Instant);

/// The `LogsService` and `TraceService` implementation.
struct GrpcService<I: Ingest> {
    ctx: Arc<ReceiverContext<I>>,
}

impl<I: Ingest> GrpcService<I> {
    async fn handle<S: Signal>(
        &self,
        request: tonic::Request<impl Into<S::Input>>,
    ) -> Result<tonic::Response<S::Response>, Status> {
        let (_, extensions, message) = request.into_parts();
        let message = message.into();
        if let Some(Arrived(at)) = extensions.get::<Arrived>() {
            self.ctx.metrics.grpc_receive_seconds.observe(at.elapsed());
        }
        let outcome = extensions.get::<Outcome>().cloned();
        let set = |label: &'static str| {
            if let Some(o) = &outcome {
                let _ = o.0.set(label);
            }
        };
        let Some(principal) = extensions.get::<Principal>() else {
            // The guard layer always inserts it; without it the request
            // was not authenticated, so it must not be stored.
            set("internal");
            return Err(Status::internal(
                "the request was not authenticated (receiver misconfigured)",
            ));
        };
        match export::<I, S>(&self.ctx, principal, message).await {
            Ok(partial) => {
                set(if partial.is_some() { "partial" } else { "ok" });
                Ok(tonic::Response::new(S::response(partial)))
            }
            Err(failure) => {
                set(failure.label());
                if let Failure::Decode(_) = failure {
                    // Found while converting, not by tonic: logged as
                    // `rewrite_tonic_error` logs tonic's.
                    tracing::warn!(
                        transport = "grpc",
                        signal = S::NAME,
                        status = failure.label(),
                        reason = %failure.message(),
                        "refused an OTLP request"
                    );
                }
                Err(status_for(&failure))
            }
        }
    }
}

/// `LogsService` in place of opentelemetry-proto's generated server: the
/// same routing, compression and size limit, with a codec that leaves the
/// request as protobuf bytes, so records are converted straight from them
/// (`convert::logs_from_wire`) instead of being decoded into owned strings
/// first.
struct LogsServer<I: Ingest> {
    service: Arc<GrpcService<I>>,
    limit: usize,
}

impl<I: Ingest> Clone for LogsServer<I> {
    fn clone(&self) -> Self {
        LogsServer {
            service: self.service.clone(),
            limit: self.limit,
        }
    }
}

impl<I: Ingest> tonic::server::NamedService for LogsServer<I> {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<I: Ingest, B> tower::Service<http::Request<B>> for LogsServer<I>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Response, std::convert::Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != LOGS_PATH {
            let response = Status::unimplemented("unknown method of LogsService").into_http();
            return Box::pin(std::future::ready(Ok(response)));
        }
        let export = LogsExport(self.service.clone());
        let limit = self.limit;
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(WireCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

/// The `Export` method of [`LogsServer`].
struct LogsExport<I: Ingest>(Arc<GrpcService<I>>);

impl<I: Ingest> tonic::server::UnaryService<LogsInput> for LogsExport<I> {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<tonic::Response<ExportLogsServiceResponse>, Status>;

    fn call(&mut self, request: tonic::Request<LogsInput>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.handle::<Logs>(request).await })
    }
}

/// Encodes responses with prost; hands requests on as their bytes.
struct WireCodec;

impl tonic::codec::Codec for WireCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = LogsInput;
    type Encoder = tonic_prost::ProstEncoder<ExportLogsServiceResponse>;
    type Decoder = WireDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder
    }
}

/// The message as it arrived (tonic has taken off the gRPC framing and
/// compression, and enforced the size limit).
struct WireDecoder;

impl tonic::codec::Decoder for WireDecoder {
    type Item = LogsInput;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<LogsInput>, Status> {
        // Hands over the buffer's bytes without copying them.
        let len = bytes::Buf::remaining(buf);
        Ok(Some(LogsInput::Wire(bytes::Buf::copy_to_bytes(buf, len))))
    }
}

#[tonic::async_trait]
impl<I: Ingest> TraceService for GrpcService<I> {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        self.handle::<Traces>(request).await
    }
}

/// The gRPC status of a refused request. Retryable refusals carry a
/// `google.rpc.RetryInfo` so OTLP exporters wait as long as asked.
fn status_for(failure: &Failure) -> Status {
    let message = failure.message();
    match failure {
        Failure::Ingest(IngestError::Backpressure { retry_after, .. }) => {
            Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(*retry_after)),
            )
        }
        Failure::Ingest(IngestError::Unavailable { retry_after, .. }) => {
            Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(*retry_after)),
            )
        }
        // As `rewrite_tonic_error` words tonic's own decoding errors.
        Failure::Decode(_) => Status::invalid_argument(format!("invalid request: {message}")),
        _ => Status::internal(message),
    }
}

/// Where the handler records the `status` label of its answer, so the guard
/// can tell its answers from errors tonic produced before the handler ran.
#[derive(Clone, Default)]
struct Outcome(Arc<OnceLock<&'static str>>);

/// What the guard needs.
struct GuardState {
    auth: Authenticator,
    metrics: Arc<Metrics>,
    limit: usize,
}

/// Wraps tonic's router in a [`Guard`].
#[derive(Clone)]
struct GuardLayer(Arc<GuardState>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.0.clone(),
        }
    }
}

/// Authenticates `Export` calls before their message is decoded, counts the
/// answers and rewrites tonic's own decoding errors (see the module doc).
#[derive(Clone)]
struct Guard<S> {
    inner: S,
    state: Arc<GuardState>,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready is the one to call; leave a
        // fresh clone in its place (the usual tower pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signal = match request.uri().path() {
            LOGS_PATH => Logs::NAME,
            TRACES_PATH => Traces::NAME,
            // Unknown methods: tonic answers UNIMPLEMENTED.
            _ => return Box::pin(inner.call(request)),
        };
        let state = self.state.clone();
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| AuthError::Malformed));
        let principal = header
            .transpose()
            .and_then(|h| state.auth.check(h.map(str::trim)));
        match principal {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
            }
            Err(e) => {
                count(&state.metrics, signal, "unauthenticated");
                tracing::warn!(
                    transport = "grpc",
                    signal,
                    status = "unauthenticated",
                    reason = %e,
                    "refused an OTLP request"
                );
                let response = Status::unauthenticated(e.to_string()).into_http();
                return Box::pin(std::future::ready(Ok(response)));
            }
        }
        let outcome = Outcome::default();
        request.extensions_mut().insert(outcome.clone());
        request
            .extensions_mut()
            .insert(Arrived(std::time::Instant::now()));
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let label = match outcome.0.get() {
                Some(label) => label,
                None => rewrite_tonic_error(&mut response, state.limit, signal),
            };
            count(&state.metrics, signal, label);
            Ok(response)
        })
    }
}

fn count(metrics: &Metrics, signal: &'static str, status: &'static str) {
    metrics.requests.add(
        &[
            ("transport", "grpc"),
            ("signal", signal),
            ("status", status),
        ],
        1,
    );
}

/// Maps an error tonic answered before the handler ran (the handler records
/// its own outcome) to the OTLP status and returns the metrics label.
///
/// tonic reports an oversized message as `OUT_OF_RANGE` and an undecodable
/// one as `INTERNAL` (the gRPC library convention); OTLP wants
/// `RESOURCE_EXHAUSTED` and `INVALID_ARGUMENT`, and `INTERNAL` would make
/// exporters retry a request that can never succeed.
fn rewrite_tonic_error(
    response: &mut Response,
    limit: usize,
    signal: &'static str,
) -> &'static str {
    let Some(status) = Status::from_header_map(response.headers()) else {
        // No status in the headers: a normal response whose status is in
        // the trailers; only the handler produces those.
        return "ok";
    };
    let (code, message, label) = match status.code() {
        Code::Ok => return "ok",
        Code::OutOfRange | Code::ResourceExhausted => (
            Code::ResourceExhausted,
            format!(
                "the request is larger than the limit of {limit} bytes (max_message_bytes): {}",
                status.message()
            ),
            "too_large",
        ),
        Code::Internal | Code::InvalidArgument | Code::DataLoss => (
            Code::InvalidArgument,
            format!("invalid request: {}", status.message()),
            "bad_request",
        ),
        // UNIMPLEMENTED on an Export path: a compression the receiver does
        // not accept; tonic's answer already lists the accepted ones.
        other => {
            let label = if other == Code::Unimplemented {
                "unsupported_media_type"
            } else {
                "bad_request"
            };
            tracing::warn!(
                transport = "grpc",
                signal,
                status = label,
                code = ?other,
                reason = status.message(),
                "refused an OTLP request"
            );
            return label;
        }
    };
    tracing::warn!(
        transport = "grpc",
        signal,
        status = label,
        reason = %message,
        "refused an OTLP request"
    );
    *response = Status::new(code, message).into_http();
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_carry_retry_info() {
        let s = status_for(&Failure::Ingest(IngestError::Backpressure {
            reason: "wal_full".into(),
            retry_after: std::time::Duration::from_secs(3),
        }));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("wal_full"), "{}", s.message());
        let retry = s.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(3)));

        let s = status_for(&Failure::Ingest(IngestError::Unavailable {
            reason: "shutting down".into(),
            retry_after: std::time::Duration::from_secs(1),
        }));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.get_details_retry_info().is_some());

        let s = status_for(&Failure::Panicked);
        assert_eq!(s.code(), Code::Internal);
    }

    #[test]
    fn tonic_decode_errors_become_invalid_argument() {
        let mut response: Response =
            Status::internal("failed to decode Protobuf message: invalid wire type").into_http();
        assert_eq!(
            rewrite_tonic_error(&mut response, 1024, "logs"),
            "bad_request"
        );
        let s = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("invalid wire type"), "{}", s.message());

        let mut response: Response = Status::out_of_range("too large").into_http();
        assert_eq!(
            rewrite_tonic_error(&mut response, 1024, "logs"),
            "too_large"
        );
        let s = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("1024 bytes"), "{}", s.message());
    }
}
