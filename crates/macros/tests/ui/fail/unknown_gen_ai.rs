#[otel_audit::audit(gen_ai.request.modle = "gpt-4o")]
fn f() {}
fn main() {}
