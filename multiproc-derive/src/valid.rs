//! What the attribute refuses, each with a sentence at the user's span. Every check
//! records its error and goes on, so that all of them are reported at once.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Error, FnArg, GenericParam, ImplItemFn, ItemImpl, ReturnType, Type, WherePredicate};

use crate::ast::{owned, typed_inputs, ungroup};

/// Names every proxy has through the traits it implements (`Clone`, `Debug`,
/// `Serialize`, `Deserialize`, `Proxy`): a method of the same name would hide them.
const TAKEN: &[&str] = &[
    "clone",
    "clone_from",
    "fmt",
    "serialize",
    "deserialize",
    "core",
    "from_core",
];

/// The arguments travel as one tuple, and serde implements its traits for tuples of
/// up to 16 elements.
const MAX_PARAMS: usize = 16;

/// Checks the block itself; returns the type's name when the block can be served.
pub fn block<'a>(item: &'a ItemImpl, errors: &mut Vec<Error>) -> Option<&'a Ident> {
    let before = errors.len();
    if let Some((_, path, _)) = &item.trait_ {
        errors.push(Error::new(
            path.span(),
            "`#[multiproc::proxy]` goes on an inherent `impl` block (`impl Maths { … }`), not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(Error::new(
            item.generics.span(),
            "`#[multiproc::proxy]` cannot serve a generic type: the manager's server holds objects of one concrete type; write the block for that type (`impl Stack<i64> { … }`)",
        ));
    }
    let name = match ungroup(&item.self_ty) {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    };
    if name.is_none() {
        errors.push(Error::new(
            item.self_ty.span(),
            "`#[multiproc::proxy]` serves a named type: `impl Maths { … }`",
        ));
    }
    if errors.len() > before { None } else { name }
}

/// Checks a function the proxy would expose; `false` when it cannot be.
pub fn function(f: &ImplItemFn, is_method: bool, errors: &mut Vec<Error>) -> bool {
    let before = errors.len();
    let sig = &f.sig;
    let skip = "or mark it `#[multiproc(skip)]`";
    let name = sig.ident.to_string();
    if TAKEN.contains(&name.as_str()) {
        errors.push(Error::new(
            sig.ident.span(),
            format!(
                "`{name}` would hide the `{name}` every proxy has (from `Clone`, `Debug`, serde or `Proxy`); rename it, {skip}"
            ),
        ));
    }
    if let Some(token) = &sig.asyncness {
        errors.push(Error::new(
            token.span(),
            format!(
                "an `async fn` cannot be served: the server runs each call to its end on one of its threads; make it a plain `fn`, {skip}"
            ),
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(Error::new(
            token.span(),
            format!(
                "an `unsafe fn` cannot be served: its caller in another process cannot uphold its contract; make it safe, {skip}"
            ),
        ));
    }
    let generic_param = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)));
    let generic_bound = sig.generics.where_clause.as_ref().and_then(|w| {
        w.predicates
            .iter()
            .find(|p| !matches!(p, WherePredicate::Lifetime(_)))
    });
    let generic_span = match (generic_param, generic_bound) {
        (Some(p), _) => Some(p.span()),
        (None, Some(w)) => Some(w.span()),
        (None, None) => None,
    };
    if let Some(span) = generic_span {
        errors.push(Error::new(
            span,
            format!(
                "a served function cannot be generic: the server calls one concrete function by name; use concrete types, {skip}"
            ),
        ));
    }
    if is_method {
        if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
            let by_ref = match ungroup(&r.ty) {
                Type::Reference(re) => ungroup(&re.elem).to_token_stream().to_string() == "Self",
                _ => false,
            };
            if !by_ref {
                errors.push(Error::new(
                    r.span(),
                    format!(
                        "a served method takes `&self` or `&mut self`: the object stays in the manager's server and cannot be moved out of it; borrow it, {skip}"
                    ),
                ));
            }
        }
    }
    let typed = typed_inputs(sig);
    for t in &typed {
        param(&t.ty, errors);
    }
    if let Some(extra) = typed.get(MAX_PARAMS) {
        errors.push(Error::new(
            extra.span(),
            format!(
                "a served function takes at most {MAX_PARAMS} parameters: they travel as one tuple, and serde's largest has {MAX_PARAMS}; gather them in a struct"
            ),
        ));
    }
    // A constructor's result is the object, or an error that travels as its text.
    if let (true, ReturnType::Type(_, ty)) = (is_method, &sig.output) {
        if contains_impl(ty.to_token_stream()) {
            errors.push(Error::new(
                ty.span(),
                "`impl Trait` cannot travel back from the server: return a concrete type",
            ));
        } else if borrows(
            owned(ty)
                .unwrap_or_else(|| (**ty).clone())
                .to_token_stream(),
        ) {
            errors.push(Error::new(
                ty.span(),
                "a proxy receives an owned value: `&str`, `&[T]` and `&T` come back as `String`, `Vec<T>` and `T`, but a borrow inside another type cannot; return an owned type",
            ));
        }
    }
    errors.len() == before
}

fn param(ty: &Type, errors: &mut Vec<Error>) {
    if contains_impl(ty.to_token_stream()) {
        errors.push(Error::new(
            ty.span(),
            "`impl Trait` cannot travel to the server: the server decodes each parameter as one concrete type; name it",
        ));
        return;
    }
    if let Type::Reference(r) = ungroup(ty) {
        if r.mutability.is_some() {
            errors.push(Error::new(
                ty.span(),
                "a `&mut` parameter cannot cross processes: the server works on a copy, so the caller would never see the change; take the value and return the result",
            ));
            return;
        }
    }
    if borrows(owned(ty).unwrap_or_else(|| ty.clone()).to_token_stream()) {
        errors.push(Error::new(
            ty.span(),
            "a parameter may borrow only at its top: `&str`, `&[T]` and `&T` arrive in the server as `String`, `Vec<T>` and `T`, but a borrow inside another type cannot; take an owned type",
        ));
    }
}

/// `impl Trait` anywhere in a type.
fn contains_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == "impl",
        TokenTree::Group(g) => contains_impl(g.stream()),
        _ => false,
    })
}

/// A reference, or a lifetime other than `'static`, anywhere in a type: something
/// a value decoded in another process cannot hold.
fn borrows(tokens: TokenStream) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(tt) = tokens.next() {
        match tt {
            TokenTree::Punct(p) if p.as_char() == '&' => return true,
            TokenTree::Punct(p)
                if p.as_char() == '\''
                    && !matches!(tokens.peek(), Some(TokenTree::Ident(i)) if i == "static") =>
            {
                return true;
            }
            TokenTree::Group(g) if borrows(g.stream()) => return true,
            _ => {}
        }
    }
    false
}
