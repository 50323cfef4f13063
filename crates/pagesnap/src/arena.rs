//! Containers for a [`Heap`](crate::Heap): an allocator whose every byte of state
//! lives inside the heap's region, and the collection types that use it.
//!
//! [`Arena`] implements allocator-api2's `Allocator` (0.2, the version hashbrown
//! uses; re-exported here as [`allocator_api2`]) and `GlobalAlloc`. It is
//! [talc](https://docs.rs/talc) managing the region, with the `Talc` struct itself
//! at the region's start, so a restore rolls back the free lists with the data.
//!
//! Out of arena memory is an ordinary allocation failure: `try_reserve`,
//! `Box::try_new_in` and friends return `Err`; infallible calls (`push`, `insert`)
//! call the standard `handle_alloc_error`, which aborts with a message. Nothing is
//! ever written outside the arena.
//!
//! Layout is history: freeing and reallocating in a different order leaves the same
//! logical contents at different addresses. Digests compare bytes, so two heaps are
//! "the same state" only when they are byte-identical — reach states by the same
//! operations (or allocate up front) when you need logical equality.

pub use crate::heap::alloc::{Arena, InArena};
pub use allocator_api2;
pub use hashbrown;

use std::fmt;

/// A vector in an arena.
pub type Vec<'a, T> = allocator_api2::vec::Vec<T, Arena<'a>>;
/// A box in an arena.
pub type Box<'a, T> = allocator_api2::boxed::Box<T, Arena<'a>>;
/// A hash map in an arena (hashbrown), with hashbrown's default hasher.
pub type HashMap<'a, K, V, S = hashbrown::DefaultHashBuilder> =
    hashbrown::HashMap<K, V, S, Arena<'a>>;
/// A hash set in an arena (hashbrown).
pub type HashSet<'a, K, S = hashbrown::DefaultHashBuilder> = hashbrown::HashSet<K, S, Arena<'a>>;

/// A UTF-8 string in an arena (allocator-api2 has no `String`).
#[derive(Clone)]
pub struct String<'a> {
    bytes: Vec<'a, u8>,
}

impl<'a> String<'a> {
    /// An empty string.
    pub fn new_in(arena: Arena<'a>) -> Self {
        String {
            bytes: Vec::new_in(arena),
        }
    }

    /// A copy of `s`.
    pub fn from_str_in(s: &str, arena: Arena<'a>) -> Self {
        let mut out = Self::new_in(arena);
        out.push_str(s);
        out
    }

    /// Appends `s`.
    pub fn push_str(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// Appends `s`, or returns the allocation error (the string is unchanged).
    pub fn try_push_str(
        &mut self,
        s: &str,
    ) -> Result<(), allocator_api2::collections::TryReserveError> {
        self.bytes.try_reserve(s.len())?;
        self.bytes.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// Appends `c`.
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// The contents.
    pub fn as_str(&self) -> &str {
        // Only `&str`s were ever appended, and truncation keeps char boundaries, so
        // this never fails; validation keeps `unsafe` out of this module (but for the
        // `InArena` marker below).
        std::str::from_utf8(&self.bytes).expect("arena strings hold only UTF-8")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Empties the string, keeping its capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The arena the string allocates from.
    pub fn allocator(&self) -> &Arena<'a> {
        self.bytes.allocator()
    }
}

#[allow(unsafe_code)]
// SAFETY: an arena `Vec<u8>` inside: owns only arena memory.
unsafe impl InArena for String<'_> {}

impl fmt::Display for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for String<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for String<'_> {}

impl std::hash::Hash for String<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for String<'_> {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Defines structs that may live in a [`Heap`](crate::Heap): implements
/// [`InArena`] when every field does (checked by the compiler), and
/// [`Family`](crate::Family) for `Name<'static>` so the heap type reads
/// `Heap<Name<'static>>`.
///
/// Takes plain structs with named fields and at most one lifetime parameter, the
/// arena brand. A struct cannot contain itself (the field check would recurse
/// forever); keep recursive shapes as indices into an arena `Vec`.
///
/// ```
/// use pagesnap::arena::{Box, Vec};
/// pagesnap::in_arena! {
///     #[derive(Debug)]
///     pub struct Node<'a> {
///         pub value: u64,
///         pub children: Vec<'a, Box<'a, [u32]>>,
///     }
///     pub struct Point { pub x: i32, pub y: i32 }
/// }
/// ```
///
/// A field that owns memory outside the arena is a compile error:
///
/// ```compile_fail
/// pagesnap::in_arena! {
///     struct Bad<'a> { names: std::vec::Vec<u8>, arena: pagesnap::Arena<'a> }
/// }
/// let _ = pagesnap::Heap::<Bad<'static>>::new(1 << 20, |arena| Bad { names: vec![], arena });
/// ```
#[macro_export]
macro_rules! in_arena {
    () => {};
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> {
            $($(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
        $($rest:tt)*
    ) => {
        $(#[$m])*
        $vis struct $name<$lt> { $($(#[$fm])* $fvis $field: $ty),* }
        // SAFETY: every field is `InArena` (the where clause), so the struct owns
        // nothing outside the arena.
        unsafe impl<$lt> $crate::arena::InArena for $name<$lt>
            where $($ty: $crate::arena::InArena),* {}
        impl $crate::Family for $name<'static> {
            type Of<$lt> = $name<$lt>;
        }
        $crate::in_arena! { $($rest)* }
    };
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
        $($rest:tt)*
    ) => {
        $(#[$m])*
        $vis struct $name { $($(#[$fm])* $fvis $field: $ty),* }
        // SAFETY: every field is `InArena` (the where clause), so the struct owns
        // nothing outside the arena.
        unsafe impl $crate::arena::InArena for $name
            where $($ty: $crate::arena::InArena),* {}
        impl $crate::Family for $name {
            type Of<'a> = $name;
        }
        $crate::in_arena! { $($rest)* }
    };
}
