//! OTLP logs requests of otel-audit records, converted straight from the
//! protobuf bytes.
//!
//! Decoding a request into opentelemetry-proto's types allocates every key
//! and every value of every attribute, and grows every list one element at a
//! time; the mapping then copies the values it keeps a second time. For a
//! typical record (15 attributes) that was about 45 allocations, most of the
//! receive path's cost. This reader walks the message in place and hands
//! borrowed texts to [`from_otlp_ref`], so only what the event keeps is
//! copied.
//!
//! It handles the shape otel-audit's SDK (and any careful exporter of our
//! records) sends: every log record an otel-audit record (see
//! [`super::classify_log`]), each singular field at most once. On anything
//! else — a GenAI or unmapped record, a repeated singular field (which
//! protobuf merges), a group, a malformed or non-UTF-8 message — it gives
//! up and the caller decodes the request with prost and converts it with
//! [`super::logs`], which produces the same result or the decoding error.
//! So the reader never has to reproduce an edge case of protobuf's merge
//! rules: it only has to recognise that it met one.

use otel_audit_event::otlp::{OtlpLogRef, OtlpValueRef, from_otlp_ref, is_audit_record, keys};

use super::value::id;
use super::{ConvertOptions, Converted, SERVICE_KEYS, Sink, reason};
use crate::ingest::Principal;

/// Nesting of array and kvlist values followed at most. prost allows 100
/// levels of messages; deeper values are left to it.
const MAX_VALUE_DEPTH: u32 = 32;

/// Converts an `ExportLogsServiceRequest` from its protobuf bytes, or
/// `None` when the request is not one this reader handles: some record is
/// not an otel-audit record, a singular field is repeated, or the message
/// is malformed. `Some` is exactly what [`logs`](super::logs) gives for the
/// decoded request; on `None`, decode the request and call that.
pub fn logs(message: &[u8], principal: &Principal, options: &ConvertOptions) -> Option<Converted> {
    let records = count_records(message)?;
    let mut sink = Sink::new(records, principal, options);
    let mut attributes: Vec<(&str, OtlpValueRef<'_>)> = Vec::with_capacity(32);
    let mut resource_logs = Reader::new(message);
    while let Some((field, wire)) = resource_logs.key()? {
        match field {
            1 => {
                let rl = resource_logs.bytes(wire)?;
                resource(rl, &mut sink, &mut attributes)?;
            }
            _ => resource_logs.skip(wire)?,
        }
    }
    Some(sink.finish())
}

/// Log records in the request (a first, shallow pass, so the event list is
/// allocated once at its final size).
fn count_records(message: &[u8]) -> Option<usize> {
    let mut n = 0;
    for_each(message, 1, |rl| {
        for_each(rl, 2, |sl| {
            for_each(sl, 2, |_| {
                n += 1;
                Some(())
            })
        })
    })?;
    Some(n)
}

/// Calls `f` on every length-delimited field `wanted` of `message`,
/// skipping other fields.
fn for_each<'a>(
    message: &'a [u8],
    wanted: u32,
    mut f: impl FnMut(&'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        if field == wanted {
            f(r.bytes(wire)?)?;
        } else {
            r.skip(wire)?;
        }
    }
    Some(())
}

/// One `ResourceLogs`: its resource's service attributes, then its records.
fn resource<'a>(
    message: &'a [u8],
    sink: &mut Sink<'_>,
    attributes: &mut Vec<(&'a str, OtlpValueRef<'a>)>,
) -> Option<()> {
    // Fields may come in any order: find the resource before the records.
    let mut resource = None;
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => once(&mut resource, r.bytes(wire)?)?,
            2 => {
                r.bytes(wire)?;
            }
            3 => {
                r.string(wire)?;
            }
            _ => r.skip(wire)?,
        }
    }
    let mut service: Vec<(&str, OtlpValueRef<'_>)> = Vec::new();
    if let Some(resource) = resource {
        let mut r = Reader::new(resource);
        while let Some((field, wire)) = r.key()? {
            match field {
                1 => {
                    let (key, value) = key_value(r.bytes(wire)?, 0)?;
                    if let Some(value) = value
                        && SERVICE_KEYS.contains(&key)
                    {
                        service.push((key, value));
                    }
                }
                2 => {
                    r.varint(wire)?;
                }
                // Entity references (and anything newer): left to prost.
                _ => return None,
            }
        }
    }
    for_each(message, 2, |scope_logs| {
        let mut scope = None;
        let mut r = Reader::new(scope_logs);
        while let Some((field, wire)) = r.key()? {
            match field {
                1 => once(&mut scope, r.bytes(wire)?)?,
                2 => record(r.bytes(wire)?, &service, sink, attributes)?,
                3 => {
                    r.string(wire)?;
                }
                _ => r.skip(wire)?,
            }
        }
        // The scope is not part of the mapping, but prost would refuse the
        // request if it were malformed.
        scope.map_or(Some(()), instrumentation_scope)
    })
}

/// Checks an `InstrumentationScope` the way decoding it would.
fn instrumentation_scope(message: &[u8]) -> Option<()> {
    let (mut name, mut version, mut dropped) = (None, None, None);
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => once(&mut name, r.string(wire)?)?,
            2 => once(&mut version, r.string(wire)?)?,
            3 => {
                key_value(r.bytes(wire)?, 0)?;
            }
            4 => once(&mut dropped, r.varint(wire)?)?,
            _ => r.skip(wire)?,
        }
    }
    Some(())
}

/// One `LogRecord`, converted into the sink. `None` when the record is not
/// an otel-audit record, or not in the shape this reader handles.
fn record<'a>(
    message: &'a [u8],
    service: &[(&str, OtlpValueRef<'_>)],
    sink: &mut Sink<'_>,
    attributes: &mut Vec<(&'a str, OtlpValueRef<'a>)>,
) -> Option<()> {
    attributes.clear();
    let mut time = None;
    let mut observed = None;
    let mut severity_number = None;
    let mut severity_text = None;
    let mut body = None;
    let mut dropped = None;
    let mut flags = None;
    let mut trace_id = None;
    let mut span_id = None;
    let mut event_name = None;
    // Whether the record is ours (`is_audit_record`): the key counts even
    // when its value is empty.
    let mut has_event_id = false;
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => once(&mut time, r.fixed64(wire)?)?,
            11 => once(&mut observed, r.fixed64(wire)?)?,
            // prost reads an enum as an int32, truncating.
            2 => once(&mut severity_number, r.varint(wire)? as i32)?,
            3 => once(&mut severity_text, r.string(wire)?)?,
            5 => once(&mut body, r.bytes(wire)?)?,
            6 => has_event_id |= push_attribute(r.bytes(wire)?, attributes)? == keys::EVENT_ID,
            7 => once(&mut dropped, r.varint(wire)?)?,
            8 => once(&mut flags, r.fixed32(wire)?)?,
            9 => once(&mut trace_id, r.bytes(wire)?)?,
            10 => once(&mut span_id, r.bytes(wire)?)?,
            12 => once(&mut event_name, r.string(wire)?)?,
            _ => r.skip(wire)?,
        }
    }
    if let Some(body) = body {
        // Not part of an audit record's mapping; checked as prost would.
        any_value(body, 0)?;
    }
    let event_name = event_name.unwrap_or("");
    if !is_audit_record(event_name, has_event_id) {
        return None;
    }
    let index = sink.next();
    let ids = || {
        let trace = id::<16>("trace_id", trace_id.unwrap_or_default())?;
        Ok::<_, otel_audit_event::otlp::MappingError>((
            trace,
            id::<8>("span_id", span_id.unwrap_or_default())?,
        ))
    };
    match ids() {
        Err(e) => sink.reject(index, reason::MAPPING, e.to_string()),
        Ok((trace_id, span_id)) => {
            let log = OtlpLogRef {
                time_unix_nano: time.unwrap_or(0),
                observed_time_unix_nano: observed.unwrap_or(0),
                severity_number: severity_number.unwrap_or(0),
                severity_text: severity_text.unwrap_or(""),
                event_name,
                trace_id,
                span_id,
                attributes,
            };
            sink.audit(index, from_otlp_ref(service, &log));
        }
    }
    Some(())
}

/// Reads a record's `KeyValue` into `attributes` (unless its value is
/// empty) and returns its key.
///
/// The usual attribute, a short key and one short text or int, is built
/// where it goes: an enum returned through memory is written a field at a
/// time and copied on as a whole, and those copies, stalled on the writes
/// before them, were half of the reader's time. (`extend` with one item,
/// because it is inlined where `push` calls an out-of-line `push_mut`,
/// which copies the item again.)
#[inline]
fn push_attribute<'a>(
    message: &'a [u8],
    attributes: &mut Vec<(&'a str, OtlpValueRef<'a>)>,
) -> Option<&'a str> {
    if let Some((key, value)) = short_key_value(message) {
        if let Some((key, text)) = short_text_attribute(message, key.len(), value) {
            attributes.extend(std::iter::once((key, OtlpValueRef::Str(text))));
            return Some(key);
        }
        if let Some(value) = scalar_value(value) {
            let key = std::str::from_utf8(key).ok()?;
            attributes.extend(std::iter::once((key, value)));
            return Some(key);
        }
    }
    let (key, value) = key_value(message, 0)?;
    if let Some(value) = value {
        attributes.push((key, value));
    }
    Some(key)
}

/// The key's and the value's bytes of a `KeyValue` of the usual shape: a
/// key then a value, each shorter than 128 bytes, and nothing else.
#[inline]
fn short_key_value(message: &[u8]) -> Option<(&[u8], &[u8])> {
    if let [0x0a, key_len, rest @ ..] = message
        && *key_len < 0x80
        && let Some((key, [0x12, value_len, value @ ..])) =
            rest.split_at_checked(usize::from(*key_len))
        && *value_len < 0x80
        && value.len() == usize::from(*value_len)
    {
        return Some((key, value));
    }
    None
}

/// The key and the text of `message`, a `KeyValue` of the usual shape
/// ([`short_key_value`]: its key is `key_len` bytes, its value message is
/// `value`) whose value is one short text, with one UTF-8 check for both.
///
/// Every byte of the message around the key and the text is a tag or a
/// length below 0x80, so ASCII: the whole message is UTF-8 exactly when
/// the key and the text are, and both are then slices of it at character
/// boundaries. A call of `from_utf8` per text was 4% of the collector's
/// CPU, most of it the call rather than the check.
#[inline]
fn short_text_attribute<'a>(
    message: &'a [u8],
    key_len: usize,
    value: &[u8],
) -> Option<(&'a str, &'a str)> {
    let text = short_text(value)?;
    let whole = std::str::from_utf8(message).ok()?;
    Some((
        whole.get(2..2 + key_len)?,
        whole.get(message.len() - text.len()..)?,
    ))
}

/// The value of an `AnyValue` of the usual shape: one text shorter than 128
/// bytes, or one int, filling the message. `None` for anything else (and
/// for text that is not UTF-8), which [`any_value_in_general`] reads.
#[inline]
fn scalar_value(message: &[u8]) -> Option<OtlpValueRef<'_>> {
    match message {
        [0x18, int @ ..] => one_varint(int).map(|v| OtlpValueRef::Int(v as i64)),
        _ => std::str::from_utf8(short_text(message)?)
            .ok()
            .map(OtlpValueRef::Str),
    }
}

/// The bytes of an `AnyValue` that is one text shorter than 128 bytes
/// filling the message, not yet checked as UTF-8.
#[inline]
fn short_text(message: &[u8]) -> Option<&[u8]> {
    match message {
        [0x0a, len, text @ ..] if *len < 0x80 && usize::from(*len) == text.len() => Some(text),
        _ => None,
    }
}

/// The varint that is all of `bytes`, if it is one.
#[inline]
fn one_varint(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 10 || bytes.last().is_none_or(|b| b & 0x80 != 0) {
        return None;
    }
    let mut r = Reader::new(bytes);
    let v = r.raw_varint()?;
    r.buf.is_empty().then_some(v)
}

/// A `KeyValue`: its key, and its value unless that is empty (or a
/// profiling string index), which the conversion treats as absent.
#[inline]
fn key_value(message: &[u8], depth: u32) -> Option<(&str, Option<OtlpValueRef<'_>>)> {
    // Nearly every attribute is a short key then a short value, in that
    // order: read without the general loop (whose per-field bookkeeping was
    // most of the reader's time).
    if let Some((key, value)) = short_key_value(message) {
        return Some((std::str::from_utf8(key).ok()?, any_value(value, depth)?));
    }
    key_value_in_general(message, depth)
}

/// [`key_value`] for any field order, repeated fields and long varints;
/// out of line so that the usual case stays small enough to inline (its
/// result then stays in registers instead of going through memory).
#[inline(never)]
fn key_value_in_general(message: &[u8], depth: u32) -> Option<(&str, Option<OtlpValueRef<'_>>)> {
    let (mut key, mut value, mut strindex) = (None, None, None);
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => once(&mut key, r.string(wire)?)?,
            2 => once(&mut value, r.bytes(wire)?)?,
            3 => once(&mut strindex, r.varint(wire)?)?,
            _ => r.skip(wire)?,
        }
    }
    let value = match value {
        Some(v) => any_value(v, depth)?,
        None => None,
    };
    Some((key.unwrap_or(""), value))
}

/// An `AnyValue`; `Some(None)` when it holds no value (or a string index).
#[inline]
fn any_value(message: &[u8], depth: u32) -> Option<Option<OtlpValueRef<'_>>> {
    if depth > MAX_VALUE_DEPTH {
        return None;
    }
    // The usual values, one scalar field filling the message, without the
    // general loop.
    if let Some(v) = scalar_value(message) {
        return Some(Some(v));
    }
    any_value_in_general(message, depth)
}

/// [`any_value`] for every other message (see [`key_value_in_general`]).
#[inline(never)]
fn any_value_in_general(message: &[u8], depth: u32) -> Option<Option<OtlpValueRef<'_>>> {
    let mut value: Option<Option<OtlpValueRef<'_>>> = None;
    let mut r = Reader::new(message);
    while let Some((field, wire)) = r.key()? {
        // A oneof set twice keeps the last value, or merges two messages:
        // rare enough to leave to prost.
        let v = match field {
            1 => Some(OtlpValueRef::Str(r.string(wire)?)),
            2 => Some(OtlpValueRef::Bool(r.varint(wire)? != 0)),
            3 => Some(OtlpValueRef::Int(r.varint(wire)? as i64)),
            4 => Some(OtlpValueRef::Double(f64::from_bits(r.fixed64(wire)?))),
            5 => Some(OtlpValueRef::Array(array(r.bytes(wire)?, depth + 1)?)),
            6 => Some(OtlpValueRef::KvList(kv_list(r.bytes(wire)?, depth + 1)?)),
            7 => Some(OtlpValueRef::Bytes(r.bytes(wire)?)),
            8 => {
                r.varint(wire)?;
                None
            }
            _ => {
                r.skip(wire)?;
                continue;
            }
        };
        once(&mut value, v)?;
    }
    Some(value.flatten())
}

fn array(message: &[u8], depth: u32) -> Option<Vec<OtlpValueRef<'_>>> {
    let mut out = Vec::new();
    for_each(message, 1, |item| {
        if let Some(v) = any_value(item, depth)? {
            out.push(v);
        }
        Some(())
    })?;
    Some(out)
}

fn kv_list(message: &[u8], depth: u32) -> Option<Vec<(&str, OtlpValueRef<'_>)>> {
    let mut out = Vec::new();
    for_each(message, 1, |entry| {
        if let (key, Some(v)) = key_value(entry, depth)? {
            out.push((key, v));
        }
        Some(())
    })?;
    Some(out)
}

/// Sets a singular field; `None` (give up) when it was already set.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// Protobuf wire types this reader reads.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over one message's fields. Every method returns `None` on
/// malformed input or a wire type other than the field's.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next field's number and wire type; `Some(None)` at the end.
    #[inline]
    fn key(&mut self) -> Option<Option<(u32, u8)>> {
        if self.buf.is_empty() {
            return Some(None);
        }
        let key = self.raw_varint()?;
        let field = u32::try_from(key >> 3).ok()?;
        let wire = (key & 7) as u8;
        // Field 0 is invalid; groups (3, 4) and unknown wire types are left
        // to prost.
        if field == 0 || !matches!(wire, VARINT | FIXED64 | LEN | FIXED32) {
            return None;
        }
        Some(Some((field, wire)))
    }

    #[inline]
    fn raw_varint(&mut self) -> Option<u64> {
        // Tags and most lengths are one byte: that case inline, the rest
        // out of line.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Some(u64::from(b));
        }
        self.raw_varint_long()
    }

    #[cold]
    #[inline(never)]
    fn raw_varint_long(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            // The tenth byte may only hold the 64th bit.
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Some(value);
            }
        }
        None
    }

    #[inline]
    fn varint(&mut self, wire: u8) -> Option<u64> {
        (wire == VARINT).then_some(())?;
        self.raw_varint()
    }

    fn fixed64(&mut self, wire: u8) -> Option<u64> {
        (wire == FIXED64).then_some(())?;
        let (head, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(u64::from_le_bytes(*head))
    }

    fn fixed32(&mut self, wire: u8) -> Option<u32> {
        (wire == FIXED32).then_some(())?;
        let (head, rest) = self.buf.split_first_chunk::<4>()?;
        self.buf = rest;
        Some(u32::from_le_bytes(*head))
    }

    #[inline]
    fn bytes(&mut self, wire: u8) -> Option<&'a [u8]> {
        (wire == LEN).then_some(())?;
        let len = usize::try_from(self.raw_varint()?).ok()?;
        if len > self.buf.len() {
            return None;
        }
        let (field, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(field)
    }

    #[inline]
    fn string(&mut self, wire: u8) -> Option<&'a str> {
        std::str::from_utf8(self.bytes(wire)?).ok()
    }

    /// Skips a field this reader does not use (as prost skips unknown
    /// fields).
    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            VARINT => self.raw_varint().map(drop),
            FIXED64 => self.fixed64(wire).map(drop),
            LEN => self.bytes(wire).map(drop),
            FIXED32 => self.fixed32(wire).map(drop),
            _ => None,
        }
    }
}
