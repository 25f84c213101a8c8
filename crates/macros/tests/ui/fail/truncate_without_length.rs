#[otel_audit::audit(redact(prompt = "truncate"))]
fn f(prompt: &str) {}
fn main() {}
