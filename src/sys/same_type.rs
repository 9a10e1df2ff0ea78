//! Telling a generic type apart from a few concrete ones, which the codec's bulk paths
//! need (so `&Vec<u8>` can be written as one block instead of element by element).
//!
//! Type identity comes from `typeid::of`, which works for types with lifetimes by
//! ignoring them: `&'a [u8]` and `&'static [u8]` have the same id. So an equal id proves
//! an equal type only up to lifetimes, and every cast here compares against a type that
//! has no lifetime of its own ([`LifetimeFree`]), or a reference to one, whose single
//! lifetime the cast never lengthens.

use std::any::TypeId;
use std::mem::ManuallyDrop;

/// Types with no lifetime parameter anywhere inside them.
///
/// # Safety
///
/// An implementing type names no lifetime, not even `'static` (`&'static str` would be
/// wrong: `&'a str` has the same id). Only then does `typeid::of::<T>() ==
/// TypeId::of::<Self>()` prove that `T` *is* `Self`.
pub(crate) unsafe trait LifetimeFree: 'static {}

// SAFETY: primitive numbers, vectors of them, `()` and the postcard serializer writing
// into a plain `Vec<u8>` name no lifetime.
unsafe impl LifetimeFree for () {}
// SAFETY: as above.
unsafe impl LifetimeFree for u8 {}
// SAFETY: as above.
unsafe impl LifetimeFree for i8 {}
// SAFETY: as above.
unsafe impl LifetimeFree for f32 {}
// SAFETY: as above.
unsafe impl LifetimeFree for f64 {}
// SAFETY: as above.
unsafe impl LifetimeFree for u16 {}
// SAFETY: as above.
unsafe impl LifetimeFree for u32 {}
// SAFETY: as above.
unsafe impl LifetimeFree for u64 {}
// SAFETY: as above.
unsafe impl LifetimeFree for usize {}
// SAFETY: as above.
unsafe impl LifetimeFree for i16 {}
// SAFETY: as above.
unsafe impl LifetimeFree for i32 {}
// SAFETY: as above.
unsafe impl LifetimeFree for i64 {}
// SAFETY: as above; `T` is itself lifetime-free.
unsafe impl<T: LifetimeFree> LifetimeFree for Vec<T> {}
// SAFETY: as above: the flavor owns a `Vec<u8>` and nothing else.
unsafe impl LifetimeFree for postcard::Serializer<postcard::ser_flavors::AllocVec> {}
// SAFETY: as above: the flavor owns its buffer, a descriptor and an error, nothing
// borrowed.
unsafe impl LifetimeFree for postcard::Serializer<super::outflow::Outflow> {}

/// Whether `T` is `U` (an exact answer: `U` has no lifetime to ignore).
pub(crate) fn is<T: ?Sized, U: LifetimeFree + ?Sized>() -> bool {
    typeid::of::<T>() == TypeId::of::<U>()
}

/// `value` as a slice of `E`, when `I` is `&[E]` or `&Vec<E>`.
pub(crate) fn as_slice<'b, I, E: LifetimeFree>(value: &'b I) -> Option<&'b [E]> {
    if typeid::of::<I>() == typeid::of::<&[E]>() {
        // SAFETY: the ids say `I` is `&'x [E]` for some `'x` (`E` has no lifetime, so the
        // reference's is the only one ignored). `&'b I` is well-formed only if `I: 'b`,
        // so `'x: 'b`: copying the reference out and using it for `'b` stays inside
        // `'x`. Same type, so same size and alignment for the read.
        Some(unsafe { *std::ptr::from_ref(value).cast::<&'b [E]>() })
    } else if typeid::of::<I>() == typeid::of::<&Vec<E>>() {
        // SAFETY: as above, with `I` being `&'x Vec<E>`.
        Some(unsafe { *std::ptr::from_ref(value).cast::<&'b Vec<E>>() }.as_slice())
    } else {
        None
    }
}

/// The `X` behind `s`, reborrowed, when `S` is `&mut X`.
pub(crate) fn reborrow<'b, S, X: LifetimeFree>(s: &'b mut S) -> Option<&'b mut X> {
    if typeid::of::<S>() == typeid::of::<&mut X>() {
        // SAFETY: the ids say `S` is `&'x mut X` for some `'x` (`X` has no lifetime).
        // `&'b mut S` implies `'x: 'b`, and `s` is borrowed mutably for `'b`, so the
        // reborrow of the inner `&mut X` for `'b` is unique for as long as it lives, as
        // `&mut **s` would be if the type were spelled out.
        Some(unsafe { &mut **std::ptr::from_mut(s).cast::<&'b mut X>() })
    } else {
        None
    }
}

/// `value` as a `U`, when `U` is its type `T`; else `value` back.
pub(crate) fn same<T: LifetimeFree, U>(value: T) -> Result<U, T> {
    if !is::<U, T>() {
        return Err(value);
    }
    let value = ManuallyDrop::new(value);
    // SAFETY: `T` has no lifetime, so a `U` with the same id has none either and is
    // exactly `T`: reading the value as a `U` is a move of it, and `ManuallyDrop` keeps
    // the original from being dropped a second time.
    Ok(unsafe { std::ptr::from_ref::<T>(&*value).cast::<U>().read() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_slice_or_vec_is_seen_as_a_slice_and_nothing_else_is() {
        let v: Vec<u8> = vec![1, 2, 3];
        let r: &Vec<u8> = &v;
        assert_eq!(as_slice::<_, u8>(&r), Some(&[1u8, 2, 3][..]));
        let s: &[u8] = &v;
        assert_eq!(as_slice::<_, u8>(&s), Some(&[1u8, 2, 3][..]));
        assert_eq!(as_slice::<_, i8>(&s), None);
        let w: Vec<u16> = vec![1];
        assert_eq!(as_slice::<_, u8>(&&w), None);
        // Owned, not borrowed: not the shape serde hands to `collect_seq`.
        assert_eq!(as_slice::<_, u8>(&v), None);
    }

    #[test]
    fn a_value_moves_only_into_its_own_type() {
        assert_eq!(same::<Vec<f64>, Vec<f64>>(vec![1.5]), Ok(vec![1.5]));
        assert_eq!(same::<Vec<f64>, Vec<f32>>(vec![1.5]), Err(vec![1.5]));
    }

    #[test]
    fn a_mutable_reference_reborrows_only_as_its_own_target() {
        let mut n = 7u8;
        let mut r = &mut n;
        *reborrow::<_, u8>(&mut r).unwrap() += 1;
        assert!(reborrow::<_, i8>(&mut r).is_none());
        assert_eq!(n, 8);
    }
}
