#[otel_audit::audit(redact(promt = "hmac"))]
fn f(prompt: &str) {}
fn main() {}
