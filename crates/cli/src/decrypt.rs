//! `otel-audit decrypt`: opens an event's sealed content for a key holder,
//! and records that access at the collector first.
//!
//! Reading sensitive content must leave a trace: the access is sent to the
//! collector as a `data_access` audit event, and the plaintext is printed
//! only after the collector has acknowledged it (which it does once the
//! event is durable). If the access cannot be recorded, nothing is shown.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use otel_audit::export::{AuditExporter, OtlpExporter, Protocol, QueueConfig};
use otel_audit_event::redact::{KeyConfig, KeyEncoding, Keyring, Policy, decrypt};
use otel_audit_event::{ActorType, AuditEvent, Category, Outcome, Record, SealedContent};

use crate::lookup::{EventAt, clean, find};
use crate::{EXIT_OK, EXIT_PROBLEMS, S3Flags};

/// The action of the access event.
pub(crate) const DECRYPT_ACTION: &str = "audit.content.decrypt";

#[derive(Args)]
pub(crate) struct DecryptArgs {
    #[command(flatten)]
    event: EventAt,
    /// An AES-256 key file, `[KEY_ID=]FILE`. Without KEY_ID the key is taken
    /// to be the one the sealed content names. Repeat for several keys.
    #[arg(long = "key", value_name = "[KEY_ID=]FILE")]
    keys: Vec<String>,
    /// The encoding of --key files.
    #[arg(long, value_enum, default_value_t = Encoding::Hex)]
    key_encoding: Encoding,
    /// A redaction policy YAML (the collector's or the layer's): its
    /// `keys.encryption` keyring is used.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Only this sealed field (repeat for several); default: all.
    #[arg(long, value_name = "FIELD")]
    field: Vec<String>,
    /// Why the content is read; recorded with the access.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Who reads it; recorded with the access. Default: $USER.
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// The collector that records the access: its OTLP endpoint
    /// (`http://host:4317` for gRPC, `http://host:4318` for HTTP). Default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT, else the local collector.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// The OTLP transport to the collector. Default:
    /// OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// A file holding the bearer token for a collector with auth on
    /// (also OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How long to wait for the collector to acknowledge the access.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout_secs: u64,
    /// Print the opened fields as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

#[derive(Clone, Copy, ValueEnum)]
enum Encoding {
    Hex,
    Base64,
    Raw,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Grpc,
    #[value(name = "http/protobuf", alias = "http")]
    HttpProtobuf,
}

/// A `--key` argument before the event says which key id it is for.
struct KeyArg {
    id: Option<String>,
    file: PathBuf,
}

fn parse_key_arg(s: &str) -> KeyArg {
    // A key id never contains `=` or `/`, so `id=path` is told apart from a
    // path that happens to contain `=`.
    match s.split_once('=') {
        Some((id, file)) if !id.is_empty() && !id.contains('/') => KeyArg {
            id: Some(id.to_owned()),
            file: PathBuf::from(file),
        },
        _ => KeyArg {
            id: None,
            file: PathBuf::from(s),
        },
    }
}

/// The keyring from `--policy` and `--key`; plain `--key FILE`s get the key
/// id the sealed content names.
fn keyring(a: &DecryptArgs, sealed: &[&SealedContent]) -> anyhow::Result<Keyring> {
    let mut ring: Option<Keyring> = None;
    if let Some(p) = &a.policy {
        let policy =
            Policy::from_yaml_file(p).with_context(|| format!("--policy {}", p.display()))?;
        let Some(enc) = policy.keys.encryption.clone() else {
            bail!(
                "--policy {}: it has no encryption keys (redaction.keys.encryption)",
                p.display()
            );
        };
        let keys = otel_audit_event::redact::KeysConfig {
            hmac: None,
            encryption: Some(enc),
        }
        .load()
        .with_context(|| format!("--policy {}", p.display()))?;
        ring = keys.encryption;
    }
    let mut named: Vec<&str> = sealed.iter().map(|s| s.key_id.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    for k in a.keys.iter().map(|s| parse_key_arg(s)) {
        let id = match (&k.id, named.as_slice()) {
            (Some(id), _) => id.clone(),
            (None, [one]) => (*one).to_owned(),
            (None, _) => bail!(
                "--key {}: the event's sealed fields use keys {}; say which key this is: --key KEY_ID={}",
                k.file.display(),
                named.join(", "),
                k.file.display()
            ),
        };
        let config = KeyConfig {
            id: id.clone(),
            key_hex: None,
            key_base64: None,
            key_file: Some(k.file.clone()),
            key_env: None,
            encoding: Some(match a.key_encoding {
                Encoding::Hex => KeyEncoding::Hex,
                Encoding::Base64 => KeyEncoding::Base64,
                Encoding::Raw => KeyEncoding::Raw,
            }),
        };
        let bytes = config
            .load()
            .with_context(|| format!("--key {}", k.file.display()))?;
        let added = match &mut ring {
            Some(r) => r.add(id, bytes.to_vec()),
            None => Keyring::encryption(id, bytes.to_vec()).map(|r| ring = Some(r)),
        };
        added.with_context(|| format!("--key {}", k.file.display()))?;
    }
    ring.context("no key given: pass --key [KEY_ID=]FILE or --policy FILE")
}

/// One opened field.
#[derive(serde::Serialize)]
struct Opened {
    field: String,
    key_id: String,
    /// In JSON, `"text": ...` or `"base64": ...`.
    #[serde(flatten)]
    content: Content,
}

/// The plaintext as it was sealed: UTF-8 text, or other bytes.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Content {
    Text(String),
    Base64(String),
}

/// The access event: who read which fields of which event, why, and
/// whether the content opened.
fn access_event(
    record: &Record,
    actor: &str,
    reason: &str,
    fields: &[&SealedContent],
    result: &Result<Vec<Opened>, String>,
    store_url: &str,
) -> AuditEvent {
    let e = &record.event;
    let mut ev = AuditEvent::new(e.tenant.clone(), "", Category::DataAccess, DECRYPT_ACTION);
    ev.service = cli_service();
    ev.actor.id = Some(actor.to_owned());
    ev.actor.kind = Some(ActorType::User);
    ev.target.kind = Some("audit_event".to_owned());
    ev.target.id = Some(e.event_id.to_string());
    let mut key_ids: Vec<&str> = fields.iter().map(|s| s.key_id.as_str()).collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    let field_names: Vec<&str> = fields.iter().map(|s| s.field.as_str()).collect();
    let attrs = &mut ev.attributes;
    attrs.insert("otel_audit.decrypt.reason".into(), reason.to_owned());
    attrs.insert("otel_audit.decrypt.fields".into(), field_names.join(","));
    attrs.insert("otel_audit.decrypt.key_ids".into(), key_ids.join(","));
    attrs.insert(
        "otel_audit.decrypt.chain_id".into(),
        record.chain_id.clone(),
    );
    attrs.insert("otel_audit.decrypt.seq".into(), record.seq.to_string());
    attrs.insert("otel_audit.decrypt.store".into(), store_url.to_owned());
    match result {
        Ok(_) => ev.outcome = Outcome::Success,
        Err(why) => {
            ev.outcome = Outcome::Failure;
            ev.error.kind = Some("decrypt".to_owned());
            ev.error.message = Some(why.clone());
        }
    }
    ev
}

/// This program as the service of the access event (and of the OTLP
/// resource): the standard `OTEL_*` variables apply, as in any application.
fn cli_service() -> otel_audit_event::Service {
    let mut s = otel_audit::service_from_env();
    s.version
        .get_or_insert_with(|| env!("CARGO_PKG_VERSION").to_owned());
    s
}

fn default_actor() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Sends the access event and waits for the collector's acknowledgement.
fn record_access(a: &DecryptArgs, event: AuditEvent) -> anyhow::Result<()> {
    let mut b = OtlpExporter::builder()
        .with_service(cli_service())
        .with_timeout(Duration::from_secs(a.timeout_secs.max(1)))
        .with_queue(QueueConfig {
            flush_timeout: Duration::from_secs(a.timeout_secs.max(1) * 3),
            ..QueueConfig::default()
        });
    if let Some(p) = a.protocol {
        b = b.with_protocol(match p {
            ProtocolArg::Grpc => Protocol::Grpc,
            ProtocolArg::HttpProtobuf => Protocol::HttpProtobuf,
        });
    }
    if let Some(url) = &a.collector {
        b = b.with_endpoint(url.clone());
    }
    if let Some(f) = &a.token_file {
        let token =
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("--token-file {}: the file is empty", f.display());
        }
        b = b.with_header("authorization", format!("Bearer {token}"));
    }
    let exporter = b.build().context("the exporter to the collector")?;
    exporter.export(event);
    let flushed = exporter.force_flush();
    let stats = exporter.stats();
    let _ = exporter.shutdown();
    flushed.context("the collector did not acknowledge the access event")?;
    if stats.exported != 1 {
        bail!(
            "the collector did not acknowledge the access event ({} failed, {} dropped)",
            stats.failed,
            stats.dropped
        );
    }
    Ok(())
}

pub(crate) async fn cmd_decrypt(a: DecryptArgs) -> anyhow::Result<u8> {
    let (event_id, store, range) = a.event.open(&a.s3)?;
    if a.reason.trim().is_empty() {
        bail!("--reason must say why the content is read");
    }
    let found = find(&store, event_id, &range).await?;
    let record = found.record();
    let sealed = &record.event.sealed_content;
    if sealed.is_empty() {
        bail!("event {event_id} has no sealed content: nothing to decrypt");
    }
    for f in &a.field {
        if !sealed.iter().any(|s| &s.field == f) {
            let have: Vec<&str> = sealed.iter().map(|s| s.field.as_str()).collect();
            bail!(
                "--field {f:?}: event {event_id} has no such sealed field (it has {})",
                have.join(", ")
            );
        }
    }
    let chosen: Vec<&SealedContent> = sealed
        .iter()
        .filter(|s| a.field.is_empty() || a.field.contains(&s.field))
        .collect();
    let ring = keyring(&a, &chosen)?;
    let result: Result<Vec<Opened>, String> = chosen
        .iter()
        .map(|s| {
            let plain = decrypt(s, &ring).map_err(|e| e.to_string())?;
            Ok(Opened {
                field: s.field.clone(),
                key_id: s.key_id.clone(),
                content: match String::from_utf8(plain) {
                    Ok(text) => Content::Text(text),
                    Err(e) => Content::Base64(base64_encode(e.as_bytes())),
                },
            })
        })
        .collect();
    let actor = a.actor.clone().unwrap_or_else(default_actor);
    let access = access_event(record, &actor, &a.reason, &chosen, &result, store.url());
    let access_id = access.event_id;
    // The exporter blocks while it waits for the acknowledgement.
    let a = tokio::task::spawn_blocking(move || record_access(&a, access).map(|()| a))
        .await
        .context("the access recorder panicked")?
        .map_err(|e| e.context("the access could not be recorded, so the content is not shown"))?;
    let opened = match result {
        Ok(o) => o,
        Err(why) => {
            eprintln!(
                "otel-audit: cannot decrypt event {event_id}: {why} (the failed attempt was recorded as event {access_id})"
            );
            return Ok(EXIT_PROBLEMS);
        }
    };
    if a.json {
        let out = serde_json::json!({
            "event_id": event_id,
            "access_event_id": access_id,
            "fields": opened,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for o in &opened {
            println!("{} (key {}):", clean(&o.field), clean(&o.key_id));
            match &o.content {
                Content::Text(t) => println!("{}", clean_text(t)),
                Content::Base64(b) => println!("(binary, base64) {b}"),
            }
        }
        eprintln!("access recorded as event {access_id} ({DECRYPT_ACTION}, actor {actor})");
    }
    Ok(EXIT_OK)
}

/// Like [`clean`], but keeps line breaks and tabs: decrypted content is
/// often multi-line text.
fn clean_text(s: &str) -> String {
    s.split('\n')
        .map(|l| clean(&l.replace('\t', "    ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_args() {
        let k = parse_key_arg("aes-1=/run/keys/a");
        assert_eq!(k.id.as_deref(), Some("aes-1"));
        assert_eq!(k.file, PathBuf::from("/run/keys/a"));
        let k = parse_key_arg("/keys/x=y");
        assert_eq!(k.id, None);
        assert_eq!(k.file, PathBuf::from("/keys/x=y"));
        let k = parse_key_arg("key.hex");
        assert_eq!(k.id, None);
    }

    #[test]
    fn multi_line_text_keeps_its_lines() {
        assert_eq!(clean_text("a\nb\u{1b}c"), "a\nb\\u{1b}c");
    }

    #[test]
    fn opened_json_names_the_content_kind() {
        let o = Opened {
            field: "f".into(),
            key_id: "k".into(),
            content: Content::Text("hi".into()),
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"field": "f", "key_id": "k", "text": "hi"})
        );
        let o = Opened {
            content: Content::Base64("AP8=".into()),
            ..o
        };
        assert_eq!(serde_json::to_value(&o).unwrap()["base64"], "AP8=");
    }
}
