#[otel_audit::audit(category = inferense)]
fn f() {}
fn main() {}
