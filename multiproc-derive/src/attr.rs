//! The attribute's arguments and the `#[multiproc(…)]` helper on functions.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Attribute, Error, LitStr, Path};

/// `#[multiproc::proxy(typeid = "…", crate = "…")]`.
#[derive(Default)]
pub struct Args {
    pub typeid: Option<LitStr>,
    pub krate: Option<Path>,
}

/// Parses the arguments; on an error the arguments understood so far are kept, so
/// the expansion goes on and reports everything at once.
pub fn parse_args(tokens: TokenStream, errors: &mut Vec<Error>) -> Args {
    let mut args = Args::default();
    let mut found = Vec::new();
    let parser = syn::meta::parser(|meta| {
        // Each argument's error is recorded and parsing goes on to the next one.
        let known = meta.path.is_ident("typeid") || meta.path.is_ident("crate");
        let value = if meta.input.peek(syn::Token![=]) {
            meta.value()?.parse::<syn::Expr>()?
        } else {
            found.push(meta.error("expected `= \"…\"` after the argument's name"));
            return Ok(());
        };
        if !known {
            found.push(meta.error(
                "unknown argument: `#[multiproc::proxy]` takes `typeid = \"…\"` and `crate = \"…\"`",
            ));
            return Ok(());
        }
        let lit = match value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => lit,
            other => {
                found.push(Error::new_spanned(other, "expected a string literal"));
                return Ok(());
            }
        };
        if meta.path.is_ident("typeid") {
            if args.typeid.is_some() {
                found.push(meta.error("`typeid` is given twice"));
            } else if lit.value().is_empty() {
                found.push(Error::new(lit.span(), "`typeid` cannot be empty"));
            } else {
                args.typeid = Some(lit);
            }
        } else if args.krate.is_some() {
            found.push(meta.error("`crate` is given twice"));
        } else {
            match lit.parse() {
                Ok(path) => args.krate = Some(path),
                Err(e) => found.push(e),
            }
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        found.push(e);
    }
    errors.extend(found);
    args
}

/// Whether `attr` is the helper `#[multiproc(…)]`.
pub fn is_helper(attr: &Attribute) -> bool {
    attr.path().is_ident("multiproc")
}

/// Reads the helpers among `attrs`: `Ok(true)` for `#[multiproc(skip)]`.
pub fn skip(attrs: &[Attribute], errors: &mut Vec<Error>) -> bool {
    let mut skip = false;
    for attr in attrs.iter().filter(|a| is_helper(a)) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("unknown `multiproc` attribute: expected `#[multiproc(skip)]`"))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    skip
}

/// The attributes a generated function copies from the user's: its doc comment, and
/// the `cfg`s that decide whether it exists at all.
pub fn copied(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"))
        .cloned()
        .collect()
}

/// The `cfg`s alone, for match arms.
pub fn cfgs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect()
}
