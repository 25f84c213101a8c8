//! Sending the pre-encoded requests over OTLP/gRPC and timing the answers.
//!
//! The requests go to `opentelemetry.proto.collector.logs.v1.LogsService/Export`
//! exactly as `LogsServiceClient::export` sends them, except that the protobuf
//! encoding was done before the clock started ([`RawCodec`] writes the bytes
//! as they are), so the generator spends little CPU of its own while the
//! collector is measured. An `OK` answer is the collector's durable
//! acknowledgement (the events are fsynced in its WAL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;

use otel_audit_loadgen::workload::Request;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// First pause after a retryable refusal; doubled per attempt up to
/// [`MAX_RETRY_PAUSE`].
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Attempts per request before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 50;

/// How to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `http://host:port` of the OTLP/gRPC receiver.
    pub endpoint: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections the in-flight requests are spread over.
    pub connections: usize,
    /// Open-loop pacing in events per second; `None` sends flat out.
    pub rate: Option<f64>,
    /// Per-attempt deadline.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Events in the requests that were sent.
    pub sent: u64,
    /// Events acknowledged (`OK`, minus partial-success rejections).
    pub accepted: u64,
    /// Events rejected in a partial success.
    pub rejected: u64,
    /// Events whose request failed: a non-retryable status, or still refused
    /// after [`MAX_ATTEMPTS`].
    pub failed: u64,
    /// Retryable refusals (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`) that were retried.
    pub retries: u64,
    /// From the first request to the last answer.
    pub wall: Duration,
    /// Per-request acknowledgement latency, sorted, in microseconds: from the
    /// first attempt (rate mode: from the scheduled send time) to the final answer.
    pub latencies_us: Vec<u64>,
    /// gRPC codes of failures and refusals, with their first message.
    pub errors: BTreeMap<String, (u64, String)>,
}

impl LoadResult {
    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_us.len());
        self.latencies_us[i - 1] as f64 / 1000.0
    }
}

/// Sends every request once (retrying refusals) over `concurrency` streams
/// and returns the counts and latencies. Connections are made before the
/// clock starts.
pub async fn run(requests: Arc<Vec<Request>>, options: &LoadOptions) -> anyhow::Result<LoadResult> {
    let endpoint = Endpoint::from_shared(options.endpoint.clone())
        .with_context(|| format!("--endpoint {}", options.endpoint))?
        .timeout(options.timeout)
        .connect_timeout(Duration::from_secs(10));
    let mut channels = Vec::new();
    for _ in 0..options.connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", options.endpoint))?,
        );
    }
    // When request i is due, in rate mode: after the events before it.
    let due: Option<Arc<Vec<Duration>>> = options.rate.map(|rate| {
        let mut before = 0u64;
        Arc::new(
            requests
                .iter()
                .map(|r| {
                    let at = Duration::from_secs_f64(before as f64 / rate);
                    before += u64::from(r.events);
                    at
                })
                .collect(),
        )
    });
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..options.concurrency.max(1) {
        let channel = channels[w % channels.len()].clone();
        let (requests, next, due) = (requests.clone(), next.clone(), due.clone());
        workers.push(tokio::spawn(worker(channel, requests, next, due, start)));
    }
    let mut total = LoadResult::default();
    for w in workers {
        let r = w.await.context("a sending task panicked")?;
        total.sent += r.sent;
        total.accepted += r.accepted;
        total.rejected += r.rejected;
        total.failed += r.failed;
        total.retries += r.retries;
        total.latencies_us.extend(r.latencies_us);
        for (code, (n, msg)) in r.errors {
            let e = total.errors.entry(code).or_insert((0, msg));
            e.0 += n;
        }
    }
    total.wall = start.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

async fn worker(
    channel: Channel,
    requests: Arc<Vec<Request>>,
    next: Arc<AtomicUsize>,
    due: Option<Arc<Vec<Duration>>>,
    start: Instant,
) -> LoadResult {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut out = LoadResult::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = requests.get(i) else {
            break;
        };
        let events = u64::from(request.events);
        let t0 = match &due {
            Some(due) => {
                let at = start + due[i];
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        out.sent += events;
        let mut attempt = 1;
        loop {
            let answer = match grpc.ready().await {
                Ok(()) => {
                    grpc.unary(
                        tonic::Request::new(request.bytes.clone()),
                        PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
                }
                Err(e) => Err(Status::unavailable(format!("connection: {e}"))),
            };
            match answer {
                Ok(response) => {
                    let rejected = response
                        .into_inner()
                        .partial_success
                        .map_or(0, |p| p.rejected_log_records.max(0) as u64)
                        .min(events);
                    out.rejected += rejected;
                    out.accepted += events - rejected;
                    break;
                }
                Err(status)
                    if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
                        && attempt < MAX_ATTEMPTS =>
                {
                    note(&mut out, &status);
                    out.retries += 1;
                    let pause = RETRY_PAUSE
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(MAX_RETRY_PAUSE);
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(status) => {
                    note(&mut out, &status);
                    out.failed += events;
                    break;
                }
            }
        }
        out.latencies_us.push(t0.elapsed().as_micros() as u64);
    }
    out
}

/// Counts a failure or refusal under its gRPC code, keeping the first message.
fn note(out: &mut LoadResult, status: &Status) {
    let e = out
        .errors
        .entry(format!("{:?}", status.code()))
        .or_insert_with(|| (0, status.message().chars().take(300).collect()));
    e.0 += 1;
}

/// Sends already-encoded `ExportLogsServiceRequest` bytes as they are, and
/// decodes the `ExportLogsServiceResponse` with prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// The encoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<ExportLogsServiceResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let r = LoadResult {
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
            ..Default::default()
        };
        assert_eq!(r.latency_ms(0.5), 50.0);
        assert_eq!(r.latency_ms(0.99), 99.0);
        assert_eq!(r.latency_ms(1.0), 100.0);
        assert_eq!(LoadResult::default().latency_ms(0.5), 0.0);
    }
}
