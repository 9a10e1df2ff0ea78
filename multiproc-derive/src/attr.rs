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
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("typeid") {
            let lit: LitStr = meta.value()?.parse()?;
            if args.typeid.is_some() {
                return Err(meta.error("`typeid` is given twice"));
            }
            if lit.value().is_empty() {
                return Err(Error::new(lit.span(), "`typeid` cannot be empty"));
            }
            args.typeid = Some(lit);
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            if args.krate.is_some() {
                return Err(meta.error("`crate` is given twice"));
            }
            args.krate = Some(lit.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument: `#[multiproc::proxy]` takes `typeid = \"…\"` and `crate = \"…\"`",
            ))
        }
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
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
