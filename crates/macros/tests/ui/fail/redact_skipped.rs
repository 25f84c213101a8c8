#[otel_audit::audit(skip(prompt), redact(prompt = "hmac"))]
fn f(prompt: &str) {}
fn main() {}
