//! Canary values through `#[audit]` into the real exporters: not one appears
//! in the OTLP/HTTP request bytes on the wire or in the JSON-lines output,
//! while their HMACs do and are recomputable with the key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use otel_audit::export::{
    AuditExporter, ExportError, ExportStats, JsonLinesExporter, OtlpExporter, Protocol,
};
use otel_audit::{AuditEvent, AuditLayer, audit};
use tracing_subscriber::layer::SubscriberExt;

const KEY: [u8; 32] = [0x17; 32];

/// Every event to both exporters.
struct Tee(Vec<Box<dyn AuditExporter>>);

impl AuditExporter for Tee {
    fn export(&self, event: AuditEvent) {
        for e in &self.0 {
            e.export(event.clone());
        }
    }
    fn force_flush(&self) -> Result<(), ExportError> {
        self.0.iter().try_for_each(|e| e.force_flush())
    }
    fn shutdown(&self) -> Result<(), ExportError> {
        self.0.iter().try_for_each(|e| e.shutdown())
    }
    fn stats(&self) -> ExportStats {
        self.0[0].stats()
    }
}

/// Records the raw bytes of every HTTP request; answers OTLP success.
fn wire_recorder() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let wire = Arc::new(Mutex::new(Vec::new()));
    let w = wire.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let w = w.clone();
            std::thread::spawn(move || serve(conn, &w));
        }
    });
    (url, wire)
}

fn serve(conn: TcpStream, wire: &Mutex<Vec<u8>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.extend_from_slice(line.as_bytes());
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        {
            let mut w = wire.lock().unwrap();
            w.extend_from_slice(&head);
            w.extend_from_slice(&body);
        }
        // An empty ExportLogsServiceResponse is zero bytes of protobuf.
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(ok).is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);
impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lookup failed for {0}")]
struct LookupError(String);

#[audit(action = "support.answer", category = inference, actor = user,
        redact(card = "mask(4)", note = "hmac"))]
fn answer(
    user: &str,
    prompt: &str,
    card: &str,
    note: &str,
    free_text: &str,
) -> Result<(), LookupError> {
    let _ = (prompt, card, free_text);
    otel_audit::current().content("gen_ai.output.messages", note);
    if free_text.contains("fail") {
        return Err(LookupError(free_text.to_owned()));
    }
    Ok(())
}

#[test]
fn canaries_are_absent_from_otlp_bytes_and_json_lines() {
    let canaries = [
        "alice.smith@example.com",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "078-05-1120",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "+44 20 7946 0958",
        "GB82WEST12345698765432",
        "192.168.10.77",
        "my diagnosis is type 2 diabetes",
        "wire 250000 to account 12345678",
    ];
    let (url, wire) = wire_recorder();
    let json = Buffer(Arc::new(Mutex::new(Vec::new())));
    let otlp = OtlpExporter::builder()
        .with_protocol(Protocol::HttpProtobuf)
        .with_endpoint(url)
        .build()
        .unwrap();
    let tee = Tee(vec![
        Box::new(otlp),
        Box::new(JsonLinesExporter::new(json.clone()).unwrap()),
    ]);
    let tee = Arc::new(tee);
    let layer = AuditLayer::builder()
        .service_name("wire-test")
        .hmac_key("k-wire", KEY)
        .shared_exporter(tee.clone())
        .build()
        .unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let text = format!(
            "contact {} ssn {} keys {} {} {} phone {} iban {} ip {} fail",
            canaries[0],
            canaries[3],
            canaries[4],
            canaries[5],
            canaries[6],
            canaries[7],
            canaries[8],
            canaries[9]
        );
        answer("user-1", canaries[10], canaries[2], canaries[11], &text).unwrap_err();
        answer(
            "user-2",
            canaries[10],
            canaries[1],
            canaries[11],
            "all good",
        )
        .unwrap();
    });
    tee.shutdown().unwrap();
    assert_eq!(
        tee.stats().exported,
        2,
        "both events reached the OTLP receiver"
    );

    let wire = wire.lock().unwrap().clone();
    let json = json.0.lock().unwrap().clone();
    assert!(!wire.is_empty() && !json.is_empty());
    for c in canaries {
        for (what, bytes) in [("OTLP bytes", &wire), ("JSON lines", &json)] {
            assert!(
                !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
                "{c:?} in the {what}"
            );
        }
    }
    // The prompt's HMAC is on the wire, as raw bytes in an OTLP bytes value.
    let ring = otel_audit::redact::Keyring::hmac("k-wire", KEY.to_vec()).unwrap();
    let mac = ring.hmac_sha256("k-wire", canaries[10].as_bytes()).unwrap();
    let on_wire = wire.windows(32).any(|w| w == mac) || {
        let hex = hex_lower(&mac);
        wire.windows(64).any(|w| w == hex.as_bytes())
    };
    assert!(on_wire, "the prompt's HMAC is exported");
    assert!(String::from_utf8_lossy(&json).contains(&hex_lower(&mac)));
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
