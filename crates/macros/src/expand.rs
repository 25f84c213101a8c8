//! Code generation for `#[audit]`.
//!
//! The span is created with every recorded value already redacted: the raw
//! value of an argument never reaches `tracing`, so no layer (fmt,
//! tracing-opentelemetry, ...) can see it.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::attr::{Args, GenAiKind, LEVELS, method_tokens};

/// tracing's value sets hold at most 32 fields.
const MAX_SPAN_FIELDS: usize = 32;

pub(crate) fn expand(args: Args, item: ItemFn) -> syn::Result<TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;

    if sig.constness.is_some() {
        return Err(syn::Error::new(
            sig.constness.span(),
            "#[audit] cannot be used on a const fn",
        ));
    }

    // Arguments by name; `self` and destructuring patterns are never recorded.
    let mut params: Vec<Ident> = Vec::new();
    for input in &sig.inputs {
        if let FnArg::Typed(pt) = input
            && let Pat::Ident(pi) = pt.pat.as_ref()
        {
            params.push(pi.ident.clone());
        }
    }
    args.check(&params)?;

    let p = quote!(::otel_audit::__private);
    let fn_name = sig.ident.to_string();
    let action = match &args.action {
        Some(a) => quote!(#a),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let category = match &args.category {
        Some((c, _)) => c.clone(),
        None if args
            .gen_ai
            .iter()
            .any(|(f, _)| f.key.text == "gen_ai.tool.name") =>
        {
            "tool".into()
        }
        None if !args.gen_ai.is_empty() => "inference".into(),
        None => "system".into(),
    };
    let severity = args.level.as_ref().map_or("info", |(l, _)| l.as_str());
    let tracing_level = LEVELS
        .iter()
        .find(|(n, _)| *n == severity)
        .map(|(_, t)| Ident::new(t, Span::call_site()))
        .expect("level checked while parsing");

    // Statements computing each recorded value (redacted), and the span fields.
    let mut prepare = Vec::new();
    let mut span_fields = Vec::new();
    let mut n_fields = 3; // action, category, outcome

    // An argument given as a field's value (`gen_ai.tool.call.arguments = args`)
    // is recorded there, under that field's policy, and not a second time
    // under its own name (where the policy could treat it differently).
    let used_as_value: Vec<&Ident> = args
        .fields
        .iter()
        .map(|f| &f.value)
        .chain(args.gen_ai.iter().map(|(f, _)| &f.value))
        .filter_map(bare_ident)
        .collect();

    for (i, param) in params.iter().enumerate() {
        if args.skip_all || args.skip.contains(param) || used_as_value.contains(&param) {
            continue;
        }
        let var = Ident::new(&format!("__oa_arg{i}"), param.span());
        let name = LitStr::new(&param.to_string(), param.span());
        let method = match args.method_for(param) {
            Some(m) => {
                let m = method_tokens(m);
                quote!(::core::option::Option::Some(#m))
            }
            None => quote!(::core::option::Option::None),
        };
        prepare.push(quote_spanned! {param.span()=>
            let #var = __oa_ctx.arg(#name, (&&&&#p::Wrap(&#param)).__audit_text(), #method);
        });
        span_fields.push(quote!(#name = __oa_ctx.shown(#var)));
        n_fields += 1;
    }

    for (i, f) in args.fields.iter().enumerate() {
        let var = Ident::new(&format!("__oa_field{i}"), f.key.span);
        let key = &f.key;
        let value = &f.value;
        prepare.push(quote_spanned! {value.span()=>
            let #var = __oa_ctx.arg(#key, (&&&&#p::Wrap(&(#value))).__audit_text(), ::core::option::Option::None);
        });
        span_fields.push(quote!(#key = __oa_ctx.shown(#var)));
        n_fields += 1;
    }

    for (i, (f, kind)) in args.gen_ai.iter().enumerate() {
        let var = Ident::new(&format!("__oa_gen_ai{i}"), f.key.span);
        let key = &f.key;
        let value = &f.value;
        match kind {
            GenAiKind::Int => {
                prepare.push(quote_spanned! {value.span()=>
                    let #var: ::core::option::Option<i64> = __oa_ctx.gen_ai_int(#key, #p::AsI64::as_i64(&(#value)));
                });
                span_fields.push(quote!(#key = #var));
            }
            GenAiKind::Float => {
                prepare.push(quote_spanned! {value.span()=>
                    let #var: f64 = __oa_ctx.gen_ai_float(#key, #p::AsF64::as_f64(&(#value)));
                });
                span_fields.push(quote!(#key = #var));
            }
            GenAiKind::Text | GenAiKind::Attribute => {
                // Text columns are typed; the rest are attributes.
                let text = quote_spanned! {value.span()=> (&&&&#p::Wrap(&(#value))).__audit_text()};
                prepare.push(if *kind == GenAiKind::Text {
                    quote!(let #var = __oa_ctx.gen_ai_text(#key, #text);)
                } else {
                    quote!(let #var = __oa_ctx.arg(#key, #text, ::core::option::Option::None);)
                });
                span_fields.push(quote!(#key = __oa_ctx.shown(#var)));
            }
        }
        n_fields += 1;
    }

    if n_fields > MAX_SPAN_FIELDS {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "#[audit] records {n_fields} fields, more than the {MAX_SPAN_FIELDS} a tracing span can hold; \
                 skip some arguments or move fields into the body"
            ),
        ));
    }

    if let Some(actor) = &args.actor {
        prepare.push(quote_spanned! {actor.span()=>
            __oa_ctx.actor(#p::IntoActor::into_actor(#actor));
        });
    }
    if let Some(target) = &args.target {
        prepare.push(quote_spanned! {target.span()=>
            __oa_ctx.target(#p::IntoTarget::into_target(#target));
        });
    }

    let make_span = quote! {
        #[allow(unused_imports)]
        use #p::{TextSensitive as _, TextStr as _, TextNum as _, TextDisplay as _, TextDebug as _};
        let mut __oa_ctx = #p::Ctx::new(#action, #category, #severity);
        #(#prepare)*
        __oa_ctx.hand_off();
        let __oa_span = #p::tracing::span!(
            target: "otel_audit",
            #p::tracing::Level::#tracing_level,
            "audit",
            "otel_audit.action" = __oa_ctx.action(),
            "otel_audit.category" = #category,
            "otel_audit.outcome" = #p::tracing::field::Empty,
            #(#span_fields,)*
        );
        __oa_ctx.settle();
        __oa_span
    };

    let ret = args.ret;
    let err = args.err;
    let ret_text = if ret {
        quote!((&&#p::Wrap(&__oa_ret)).__audit_ret())
    } else {
        quote!(::core::option::Option::None)
    };
    let finish = quote! {
        {
            #[allow(unused_imports)]
            use #p::{OutcomeDisplay as _, OutcomeDebug as _, OutcomeAny as _, RetResult as _, RetAny as _};
            #p::finish(&__oa_span, (&&&#p::Wrap(&__oa_ret)).__audit_outcome(), #ret_text, #err);
        }
    };

    // The declared type, so the body's value coerces as it would without the
    // attribute (`&String` to `&str`, `?` conversions); not for `impl Trait`.
    let declared = match &sig.output {
        ReturnType::Type(_, ty) if !has_impl_trait(ty) => Some(ty.as_ref().clone()),
        ReturnType::Default => Some(syn::parse_quote!(())),
        _ => None,
    };
    let annotate = match &declared {
        Some(ty) => quote!(: #ty),
        None => quote!(),
    };
    let body = if sig.asyncness.is_some() {
        let future = match &declared {
            Some(ty) => quote!(async move { let __oa_value: #ty = #block; __oa_value }),
            None => quote!(async move #block),
        };
        quote! {
            let __oa_span = { #make_span };
            let __oa_ret #annotate = #p::Instrument::instrument(#future, __oa_span.clone()).await;
            #finish
            __oa_ret
        }
    } else {
        // A closure, so `return` and `?` in the body still pass through `finish`.
        let closure = match &declared {
            Some(ty) => quote!(move || -> #ty #block),
            None => quote!(move || #block),
        };
        quote! {
            let __oa_span = { #make_span };
            let __oa_guard = __oa_span.enter();
            #[allow(clippy::redundant_closure_call)]
            let __oa_ret #annotate = (#closure)();
            #finish
            ::core::mem::drop(__oa_guard);
            __oa_ret
        }
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

/// `x` in `key = x`: an argument's bare name.
fn bare_ident(e: &syn::Expr) -> Option<&Ident> {
    match e {
        syn::Expr::Path(p) if p.qself.is_none() => p.path.get_ident(),
        syn::Expr::Reference(r) => bare_ident(&r.expr),
        syn::Expr::Paren(p) => bare_ident(&p.expr),
        _ => None,
    }
}

/// Whether a type mentions `impl Trait` (which a `let` cannot name).
fn has_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}
