#[otel_audit::audit(redact(prompt = "hsah"))]
fn f(prompt: &str) {}
fn main() {}
