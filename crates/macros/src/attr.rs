//! Parsing `#[audit(...)]` arguments. Every mistake is an error spanned at the
//! argument that caused it, so the compiler points at the right place.

use std::collections::BTreeMap;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token, parenthesized};

use crate::method::{Method, parse_method};

/// The categories of docs/FORMAT.md, as written in `category = ...`.
pub(crate) const CATEGORIES: &[&str] = &[
    "inference",
    "tool",
    "data_access",
    "security",
    "governance",
    "admin",
    "compliance",
    "system",
];

/// Levels, as written in `level = ...`, and the tracing level each maps to.
pub(crate) const LEVELS: &[(&str, &str)] = &[
    ("debug", "DEBUG"),
    ("info", "INFO"),
    ("warn", "WARN"),
    ("error", "ERROR"),
    ("critical", "ERROR"),
];

/// Where a `gen_ai.*` key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GenAiKind {
    /// A short text column (model, provider, ...).
    Text,
    /// A token count.
    Int,
    /// The sampling temperature.
    Float,
    /// An attribute under its own name, through its name's policy: prompt
    /// and completion content (`gen_ai.input.messages`, ...) is HMAC'd by
    /// the default policy.
    Attribute,
}

/// The OpenTelemetry GenAI attributes `#[audit]` understands.
pub(crate) const GEN_AI_KEYS: &[(&str, GenAiKind)] = &[
    ("gen_ai.provider.name", GenAiKind::Text),
    ("gen_ai.operation.name", GenAiKind::Text),
    ("gen_ai.request.model", GenAiKind::Text),
    ("gen_ai.response.model", GenAiKind::Text),
    ("gen_ai.conversation.id", GenAiKind::Text),
    ("gen_ai.agent.name", GenAiKind::Text),
    ("gen_ai.tool.name", GenAiKind::Text),
    ("gen_ai.usage.input_tokens", GenAiKind::Int),
    ("gen_ai.usage.output_tokens", GenAiKind::Int),
    ("gen_ai.request.temperature", GenAiKind::Float),
    ("gen_ai.input.messages", GenAiKind::Attribute),
    ("gen_ai.output.messages", GenAiKind::Attribute),
    ("gen_ai.system_instructions", GenAiKind::Attribute),
    ("gen_ai.tool.call.arguments", GenAiKind::Attribute),
    ("gen_ai.tool.call.result", GenAiKind::Attribute),
    ("gen_ai.tool.call.id", GenAiKind::Attribute),
    ("gen_ai.agent.id", GenAiKind::Attribute),
    ("gen_ai.response.id", GenAiKind::Attribute),
    ("gen_ai.response.finish_reasons", GenAiKind::Attribute),
];

/// A dotted key (`gen_ai.request.model`, `user.id`) with the span of its text.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) span: Span,
}

impl Parse for Key {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            if lit.value().is_empty() {
                return Err(syn::Error::new(lit.span(), "field names must not be empty"));
            }
            return Ok(Key {
                text: lit.value(),
                span: lit.span(),
            });
        }
        // `type`, `fn` and friends are fine as field names.
        let first = Ident::parse_any(input)?;
        let mut text = first.unraw().to_string();
        let mut span = first.span();
        while input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            let next = Ident::parse_any(input)?;
            text.push('.');
            text.push_str(&next.unraw().to_string());
            span = span.join(next.span()).unwrap_or(span);
        }
        Ok(Key { text, span })
    }
}

/// One `key = expr` of `fields(...)` or a `gen_ai.*` key.
pub(crate) struct Field {
    pub(crate) key: Key,
    pub(crate) value: Expr,
}

/// A `redact(arg = "method")` entry.
pub(crate) struct Redact {
    pub(crate) arg: Ident,
    pub(crate) method: Method,
}

/// Everything `#[audit(...)]` was given.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) action: Option<LitStr>,
    pub(crate) category: Option<(String, Span)>,
    pub(crate) level: Option<(String, Span)>,
    pub(crate) actor: Option<Expr>,
    pub(crate) target: Option<Expr>,
    pub(crate) fields: Vec<Field>,
    pub(crate) gen_ai: Vec<(Field, GenAiKind)>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) skip_all: bool,
    pub(crate) redact: Vec<Redact>,
    pub(crate) ret: bool,
    pub(crate) err: bool,
}

const KEYS: &str = "action, category, level, actor, target, fields(...), skip(...), skip_all, \
                    redact(...), ret, err or a gen_ai.* attribute";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        while !input.is_empty() {
            let key: Key = input.parse()?;
            if let Some(first) = seen.get(&key.text) {
                let mut e = syn::Error::new(key.span, format!("`{}` is given twice", key.text));
                e.combine(syn::Error::new(*first, "first given here"));
                return Err(e);
            }
            seen.insert(key.text.clone(), key.span);
            match key.text.as_str() {
                "action" => {
                    input.parse::<Token![=]>()?;
                    let lit: LitStr = input.parse()?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(lit.span(), "action must not be empty"));
                    }
                    args.action = Some(lit);
                }
                "category" => {
                    input.parse::<Token![=]>()?;
                    args.category = Some(word(input, "category", CATEGORIES)?);
                }
                "level" => {
                    input.parse::<Token![=]>()?;
                    let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
                    args.level = Some(word(input, "level", &names)?);
                }
                "actor" => {
                    input.parse::<Token![=]>()?;
                    args.actor = Some(input.parse()?);
                }
                "target" => {
                    input.parse::<Token![=]>()?;
                    args.target = Some(input.parse()?);
                }
                "fields" => {
                    let content;
                    parenthesized!(content in input);
                    let list = Punctuated::<FieldArg, Token![,]>::parse_terminated(&content)?;
                    let mut names: BTreeMap<String, Span> = BTreeMap::new();
                    for f in list {
                        if names.insert(f.0.key.text.clone(), f.0.key.span).is_some() {
                            return Err(syn::Error::new(
                                f.0.key.span,
                                format!("field `{}` is given twice", f.0.key.text),
                            ));
                        }
                        args.fields.push(f.0);
                    }
                }
                "skip" => {
                    let content;
                    parenthesized!(content in input);
                    // `self` is accepted (as `instrument` users write it) though
                    // it is never recorded.
                    let list = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                        &content,
                        Ident::parse_any,
                    )?;
                    for id in list {
                        if args.skip.contains(&id) {
                            return Err(syn::Error::new(
                                id.span(),
                                format!("`{id}` is skipped twice"),
                            ));
                        }
                        args.skip.push(id);
                    }
                }
                "skip_all" => args.skip_all = true,
                "redact" => {
                    let content;
                    parenthesized!(content in input);
                    let list = Punctuated::<RedactArg, Token![,]>::parse_terminated(&content)?;
                    for r in list {
                        if args.redact.iter().any(|x| x.arg == r.0.arg) {
                            return Err(syn::Error::new(
                                r.0.arg.span(),
                                format!("`{}` is redacted twice", r.0.arg),
                            ));
                        }
                        args.redact.push(r.0);
                    }
                }
                "ret" => args.ret = true,
                "err" => args.err = true,
                k if k.starts_with("gen_ai.") => {
                    let Some((_, kind)) = GEN_AI_KEYS.iter().find(|(n, _)| *n == k) else {
                        let known: Vec<&str> = GEN_AI_KEYS.iter().map(|(n, _)| *n).collect();
                        return Err(syn::Error::new(
                            key.span,
                            format!("unknown GenAI attribute `{k}`; known: {}", known.join(", ")),
                        ));
                    };
                    input.parse::<Token![=]>()?;
                    let value: Expr = input.parse()?;
                    args.gen_ai.push((Field { key, value }, *kind));
                }
                other => {
                    return Err(syn::Error::new(
                        key.span,
                        format!("unknown argument `{other}`; expected {KEYS}"),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// A bare word or a string from a fixed set.
fn word(input: ParseStream<'_>, what: &str, allowed: &[&str]) -> syn::Result<(String, Span)> {
    let (text, span) = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        (lit.value(), lit.span())
    } else {
        let id = Ident::parse_any(input)?;
        (id.unraw().to_string(), id.span())
    };
    if !allowed.contains(&text.as_str()) {
        return Err(syn::Error::new(
            span,
            format!(
                "unknown {what} `{text}`; expected one of {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok((text, span))
}

struct FieldArg(Field);

impl Parse for FieldArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Key = input.parse()?;
        if key.text.starts_with("otel_audit.") {
            return Err(syn::Error::new(
                key.span,
                "field names starting with `otel_audit.` are reserved",
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(FieldArg(Field { key, value }))
    }
}

struct RedactArg(Redact);

impl Parse for RedactArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let arg = Ident::parse_any(input)?;
        input.parse::<Token![=]>()?;
        let lit: LitStr = input.parse()?;
        let method = parse_method(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
        Ok(RedactArg(Redact { arg, method }))
    }
}

impl Args {
    /// Checks the arguments against the function they annotate.
    pub(crate) fn check(&self, params: &[Ident]) -> syn::Result<()> {
        let known = |id: &Ident| params.iter().any(|p| p == id);
        for id in &self.skip {
            if id != "self" && !known(id) {
                return Err(syn::Error::new(
                    id.span(),
                    format!("cannot skip `{id}`: the function has no such argument"),
                ));
            }
        }
        if self.skip_all && !self.skip.is_empty() {
            return Err(syn::Error::new(
                self.skip[0].span(),
                "`skip(...)` is pointless with `skip_all`",
            ));
        }
        for r in &self.redact {
            if !known(&r.arg) {
                return Err(syn::Error::new(
                    r.arg.span(),
                    format!(
                        "cannot redact `{}`: the function has no such argument",
                        r.arg
                    ),
                ));
            }
            if self.skip_all || self.skip.contains(&r.arg) {
                return Err(syn::Error::new(
                    r.arg.span(),
                    format!(
                        "cannot redact `{}`: it is skipped, so it is never recorded",
                        r.arg
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The method `redact(...)` names for `arg`.
    pub(crate) fn method_for(&self, arg: &Ident) -> Option<Method> {
        self.redact.iter().find(|r| &r.arg == arg).map(|r| r.method)
    }
}

/// `Method` as the tokens of an expression building it.
pub(crate) fn method_tokens(m: Method) -> TokenStream {
    let path = quote::quote!(::otel_audit::__private::Method);
    match m {
        Method::Drop => quote::quote!(#path::Drop),
        Method::Mask { keep_chars } => quote::quote!(#path::Mask { keep_chars: #keep_chars }),
        Method::Hmac => quote::quote!(#path::Hmac),
        Method::Hash => quote::quote!(#path::Hash),
        Method::Encrypt => quote::quote!(#path::Encrypt),
        Method::Truncate { max_chars } => {
            quote::quote!(#path::Truncate { max_chars: #max_chars })
        }
    }
}

impl ToTokens for Key {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        LitStr::new(&self.text, self.span).to_tokens(tokens);
    }
}
