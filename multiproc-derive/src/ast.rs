//! What the attribute reads from the `impl` block: the type, its constructors and its
//! methods, each already shaped as the server and the proxy need it.

use proc_macro2::{Group, Ident, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, PatType, ReturnType, Signature,
    Type, Visibility,
};

use crate::{attr, valid};

/// The block, as far as it expands: refused functions are left out.
pub struct Input<'a> {
    pub self_ty: &'a Type,
    /// The type's own name (the last segment of its path).
    pub name: &'a Ident,
    pub ctors: Vec<Function<'a>>,
    pub methods: Vec<Function<'a>>,
}

/// A constructor or a method that the proxy exposes.
pub struct Function<'a> {
    pub ident: &'a Ident,
    /// The name on the wire: the identifier without `r#`.
    pub name: String,
    pub vis: &'a Visibility,
    /// Doc comment and `cfg`s, copied onto the proxy's function.
    pub attrs: Vec<Attribute>,
    /// The `cfg`s alone, for the server's match arms.
    pub cfgs: Vec<Attribute>,
    pub params: Vec<Param>,
    /// What the proxy returns inside `multiproc::Result`; `None` for `()`.
    pub output: Option<Type>,
    /// A constructor returning `Result<Self, E>`.
    pub fallible: bool,
}

pub struct Param {
    /// The proxy's name for it.
    pub name: Ident,
    /// The proxy's type for it: the user's, `Self` spelled out and a top-level
    /// lifetime elided.
    pub ty: Type,
    /// What the server decodes: `String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`.
    pub owned: Type,
    /// The server lends the decoded value (`&owned`) rather than moving it.
    pub lent: bool,
}

impl<'a> Input<'a> {
    /// Reads the block. `None` when the block itself is refused (a trait impl, a
    /// generic block): then nothing but the block is emitted.
    pub fn from_syn(item: &'a ItemImpl, errors: &mut Vec<Error>) -> Option<Input<'a>> {
        let name = valid::block(item, errors)?;
        let self_tokens = item.self_ty.to_token_stream();
        let mut input = Input {
            self_ty: &item.self_ty,
            name,
            ctors: Vec::new(),
            methods: Vec::new(),
        };
        let mut ctor_seen = false;
        for impl_item in &item.items {
            let f = match impl_item {
                ImplItem::Fn(f) => f,
                ImplItem::Const(c) => {
                    helper_misplaced(&c.attrs, errors);
                    continue;
                }
                ImplItem::Type(t) => {
                    helper_misplaced(&t.attrs, errors);
                    continue;
                }
                _ => continue,
            };
            let skipped = attr::skip(&f.attrs, errors);
            if skipped || matches!(f.vis, Visibility::Inherited) {
                continue;
            }
            let is_method = f.sig.receiver().is_some();
            let fallible = match constructs(&f.sig.output, &self_tokens) {
                Some(fallible) => fallible,
                None if is_method => false,
                None => continue, // an associated function of another kind: not served
            };
            ctor_seen |= !is_method;
            if !valid::function(f, is_method, errors) {
                continue;
            }
            let mut function = Function::new(f, &self_tokens);
            function.fallible = fallible && !is_method;
            if is_method {
                input.methods.push(function);
            } else {
                input.ctors.push(function);
            }
        }
        if !ctor_seen {
            errors.push(Error::new(
                item.self_ty.span(),
                format!(
                    "`#[multiproc::proxy]` needs a constructor: a `pub fn` in this block that returns `Self` (or `Result<Self, E>`), such as `pub fn new(..) -> Self`; the manager builds `{name}` objects with it"
                ),
            ));
        }
        Some(input)
    }
}

impl<'a> Function<'a> {
    fn new(f: &'a ImplItemFn, self_tokens: &TokenStream) -> Function<'a> {
        let typed = typed_inputs(&f.sig);
        let params = typed
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = match &*t.pat {
                    Pat::Ident(p) if p.subpat.is_none() => p.ident.clone(),
                    _ => format_ident!("arg{}", i, span = t.pat.span()),
                };
                let ty = with_self(&t.ty, self_tokens);
                let (owned, lent) = match owned(&ty) {
                    Some(owned) => (owned, true),
                    None => (ty.clone(), false),
                };
                Param {
                    name,
                    ty: elide_top_lifetime(ty),
                    owned,
                    lent,
                }
            })
            .collect();
        let output = match &f.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => {
                let ty = with_self(ty, self_tokens);
                Some(owned(&ty).unwrap_or(ty))
            }
        };
        Function {
            ident: &f.sig.ident,
            name: f.sig.ident.unraw().to_string(),
            vis: &f.vis,
            attrs: attr::copied(&f.attrs),
            cfgs: attr::cfgs(&f.attrs),
            params,
            output,
            fallible: false,
        }
    }
}

/// A `#[multiproc(…)]` helper anywhere but on a function.
fn helper_misplaced(attrs: &[Attribute], errors: &mut Vec<Error>) {
    for a in attrs.iter().filter(|a| attr::is_helper(a)) {
        errors.push(Error::new(
            a.span(),
            "`#[multiproc(…)]` goes on a function of the block",
        ));
    }
}

/// Whether a function returning `output` constructs the type: `Some(false)` for
/// `-> Self` (or the type spelled as in the `impl` line), `Some(true)` for
/// `-> Result<Self, E>`, `None` otherwise.
pub fn constructs(output: &ReturnType, self_tokens: &TokenStream) -> Option<bool> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let is_self = |ty: &Type| {
        let spelled = ungroup(ty).to_token_stream().to_string();
        spelled == "Self" || spelled == self_tokens.to_string()
    };
    if is_self(ty) {
        return Some(false);
    }
    let Type::Path(p) = ungroup(ty) else {
        return None;
    };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(ok)) if last.ident == "Result" && is_self(ok) => Some(true),
        _ => None,
    }
}

/// `Type::Group` (what a `macro_rules!` leaves around a type) looked through.
/// The parameters of `sig` other than `self`.
pub fn typed_inputs(sig: &Signature) -> Vec<&PatType> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

pub fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        ty => ty,
    }
}

/// The owned form of a top-level borrow, `None` when `ty` is not one: `String` for
/// `&str`, `Vec<T>` for `&[T]`, `T` for `&T` and `&mut T`.
pub fn owned(ty: &Type) -> Option<Type> {
    let Type::Reference(r) = ungroup(ty) else {
        return None;
    };
    let elem = ungroup(&r.elem);
    Some(match elem {
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
            syn::parse_quote_spanned!(elem.span()=> ::std::string::String)
        }
        Type::Slice(s) => {
            let item = &s.elem;
            syn::parse_quote_spanned!(elem.span()=> ::std::vec::Vec<#item>)
        }
        other => other.clone(),
    })
}

/// `&'a T` as `&T`: the proxy's functions have no lifetime parameters.
fn elide_top_lifetime(ty: Type) -> Type {
    match ty {
        Type::Reference(mut r) => {
            r.lifetime = None;
            Type::Reference(r)
        }
        ty => ty,
    }
}

/// `ty` with every `Self` replaced by the served type: in the proxy, `Self` is the proxy.
fn with_self(ty: &Type, self_tokens: &TokenStream) -> Type {
    let replaced = replace_self(ty.to_token_stream(), self_tokens);
    syn::parse2(replaced).unwrap_or_else(|_| ty.clone())
}

fn replace_self(tokens: TokenStream, self_tokens: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|tt| match tt {
            TokenTree::Ident(ref i) if i == "Self" => self_tokens
                .clone()
                .into_iter()
                .map(|mut t| {
                    t.set_span(i.span());
                    t
                })
                .collect::<Vec<_>>(),
            TokenTree::Group(g) => {
                let mut inner = Group::new(g.delimiter(), replace_self(g.stream(), self_tokens));
                inner.set_span(g.span());
                vec![TokenTree::Group(inner)]
            }
            tt => vec![tt],
        })
        .collect()
}
