//! The `#[audit]` attribute of [otel-audit](https://docs.rs/otel-audit).
//!
//! Use it through the `otel-audit` crate (`otel_audit::audit`): the expansion
//! calls into `otel_audit::__private`, which this crate does not depend on.
//!
//! `#[audit(...)]` works like `#[tracing::instrument]`: it opens a span for
//! each call. Unlike `instrument`, every recorded value passes through the
//! redaction policy *before* the span is created, so no other layer in the
//! subscriber ever sees a raw argument; and the span carries what the
//! `AuditLayer` needs to build an audit event (action, category, actor,
//! target, GenAI attributes, outcome, duration).
//!
//! | argument | meaning |
//! |---|---|
//! | `action = "llm.chat"` | the action; default: the function's path |
//! | `category = inference` | `inference`, `tool`, `data_access`, `security`, `governance`, `admin`, `compliance` or `system`; default `tool` with `gen_ai.tool.name`, `inference` with other `gen_ai.*`, else `system` |
//! | `level = info` | `debug`, `info`, `warn`, `error` or `critical` (the event's severity) |
//! | `actor = expr` | who acts: an id (`&str`, `String`) or an `otel_audit::Actor` |
//! | `target = expr` | what is acted on: `(type, id)` or an `otel_audit::Target` |
//! | `fields(key = expr, ...)` | extra attributes, each through the policy |
//! | `skip(arg, ...)`, `skip_all` | arguments not recorded (`self` never is) |
//! | `redact(arg = "hmac", ...)` | force a method: `drop`, `mask`, `mask(N)`, `hmac`, `hash`, `encrypt`, `truncate(N)` |
//! | `ret` | record the returned value (the `Ok` value of a `Result`), through the policy |
//! | `err` | on `Err`, raise the severity to `error` and emit an `ERROR` event with the redacted message |
//! | `gen_ai.request.model = expr`, ... | GenAI attributes by their OpenTelemetry names |
//!
//! Arguments not skipped are recorded under their names and pass through the
//! redaction policy: arguments named like content (`prompt`, `messages`, ...)
//! are HMAC'd by default, and every text is scanned for e-mail addresses,
//! card numbers, keys and other detectors. A returned `Result` sets the
//! outcome (`Ok` → success, `Err` → failure with the error's type and its
//! redacted message).
//!
//! Mistakes are compile errors at the argument: unknown or repeated keys, an
//! unknown category, level or method, redacting an argument that does not
//! exist or is skipped.

mod attr;
mod expand;
// The same parser the runtime uses, so a method accepted here is accepted there.
#[allow(dead_code, missing_docs)]
#[path = "../../event/src/redact/method.rs"]
mod method;

use proc_macro::TokenStream;

/// Turns a function into an audited operation. See the [crate docs](crate).
#[proc_macro_attribute]
pub fn audit(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(args as attr::Args);
    let item = syn::parse_macro_input!(item as syn::ItemFn);
    expand::expand(args, item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
