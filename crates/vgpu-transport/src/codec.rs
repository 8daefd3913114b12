//! A small, total binary codec: little-endian integers, length-prefixed byte
//! strings and sequences. Decoding never panics, never trusts a length beyond
//! the bytes actually present, and caps every sequence, so any input — hostile
//! or truncated — yields a value or a [`DecodeError`].

use std::fmt;

/// Longest string accepted (names, versions, bus ids, paths).
pub const MAX_STRING: usize = 64 * 1024;
/// Most elements accepted in one sequence.
pub const MAX_ITEMS: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended before the value did.
    Truncated,
    /// A length or count above its cap.
    TooLong(usize),
    /// Bytes left over after the value.
    Trailing(usize),
    /// A tag or enum value this version does not know.
    BadTag(u32),
    /// A string that is not UTF-8.
    BadUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated payload"),
            DecodeError::TooLong(n) => write!(f, "length {n} above its cap"),
            DecodeError::Trailing(n) => write!(f, "{n} trailing bytes"),
            DecodeError::BadTag(t) => write!(f, "unknown tag {t}"),
            DecodeError::BadUtf8 => write!(f, "string is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Cursor over a received payload.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    fn len_prefix(&mut self, cap: usize) -> Result<usize, DecodeError> {
        let n = u32::decode(self)? as usize;
        if n > cap {
            return Err(DecodeError::TooLong(n));
        }
        Ok(n)
    }
}

/// A value with a wire form.
pub trait Wire: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Decodes a whole payload, rejecting trailing bytes.
pub fn from_bytes<T: Wire>(buf: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(buf);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

pub fn to_bytes<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

macro_rules! int_wire {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let b = r.take(std::mem::size_of::<$t>())?;
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                Ok(<$t>::from_le_bytes(a))
            }
        }
    )*};
}
int_wire!(u8, u16, u32, u64, i32, i64);

impl Wire for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::BadTag(t as u32)),
        }
    }
}

impl Wire for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len_prefix(MAX_STRING)?;
        let b = r.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8)
    }
}

/// Raw bytes (images, copies): capped by the frame size, not by MAX_ITEMS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Wire for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.0.len() as u32).encode(out);
        out.extend_from_slice(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len_prefix(crate::frame::MAX_PAYLOAD as usize)?;
        Ok(Bytes(r.take(n)?.to_vec()))
    }
}

/// Fixed-size arrays (UUIDs, magic, grid dimensions): no length prefix.
impl<T: Wire + Copy + Default, const N: usize> Wire for [T; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            v.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut a = [T::default(); N];
        for v in a.iter_mut() {
            *v = T::decode(r)?;
        }
        Ok(a)
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len_prefix(MAX_ITEMS)?;
        // Every element takes at least one byte, so a count above what is
        // left is a lie; refusing it early keeps allocation proportional to
        // the bytes actually received.
        if n > r.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            t => Err(DecodeError::BadTag(t as u32)),
        }
    }
}

impl Wire for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

macro_rules! tuple_wire {
    ($($n:tt $t:ident),+) => {
        impl<$($t: Wire),+> Wire for ($($t,)+) {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$n.encode(out);)+
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(($($t::decode(r)?,)+))
            }
        }
    };
}
tuple_wire!(0 A);
tuple_wire!(0 A, 1 B);
tuple_wire!(0 A, 1 B, 2 C);
tuple_wire!(0 A, 1 B, 2 C, 3 D);

/// Declares a plain struct with a field-by-field wire form.
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl $crate::codec::Wire for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$f.encode(out);)*
                let _ = out;
            }
            fn decode(r: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::DecodeError> {
                let _ = &r;
                Ok($name { $($f: <$t as $crate::codec::Wire>::decode(r)?),* })
            }
        }
    };
}

/// Declares an enum whose variants all have named fields, encoded as a u32
/// tag and then the variant's fields in order (as [`wire_struct!`] does).
/// Each variant names its tag: `3 Name { field: Type, ... }`. Decoding is
/// total: an unknown tag is [`DecodeError::BadTag`]. The first variant,
/// with default fields, is the `Default` (so structs holding the enum can
/// derive theirs). `TAGS` lists every tag, in declaration order.
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            $(#[$vm0:meta])*
            $tag0:literal $v0:ident { $($(#[$fm0:meta])* $f0:ident : $t0:ty),* $(,)? }
            $(,
                $(#[$vm:meta])*
                $tag:literal $v:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }
            )* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(#[$vm0])*
            $v0 { $($(#[$fm0])* $f0: $t0),* },
            $(
                $(#[$vm])*
                $v { $($(#[$fm])* $f: $t),* },
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$v0 { $($f0: ::core::default::Default::default()),* }
            }
        }

        impl $name {
            /// Every variant's wire tag, in declaration order.
            pub const TAGS: &'static [u32] = &[$tag0 $(, $tag)*];

            /// This value's wire tag.
            pub fn tag(&self) -> u32 {
                match self {
                    $name::$v0 { .. } => $tag0,
                    $($name::$v { .. } => $tag,)*
                }
            }
        }

        impl $crate::codec::Wire for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $name::$v0 { $($f0),* } => {
                        <u32 as $crate::codec::Wire>::encode(&$tag0, out);
                        $($crate::codec::Wire::encode($f0, out);)*
                    }
                    $($name::$v { $($f),* } => {
                        <u32 as $crate::codec::Wire>::encode(&$tag, out);
                        $($crate::codec::Wire::encode($f, out);)*
                    })*
                }
            }
            fn decode(r: &mut $crate::codec::Reader<'_>) -> Result<Self, $crate::codec::DecodeError> {
                match <u32 as $crate::codec::Wire>::decode(r)? {
                    $tag0 => Ok($name::$v0 { $($f0: <$t0 as $crate::codec::Wire>::decode(r)?),* }),
                    $($tag => Ok($name::$v { $($f: <$t as $crate::codec::Wire>::decode(r)?),* }),)*
                    t => Err($crate::codec::DecodeError::BadTag(t)),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v: (u32, String, Vec<u64>, Option<[u8; 4]>) =
            (7, "H100".into(), vec![1, 2, 3], Some(*b"VGPU"));
        assert_eq!(
            from_bytes::<(u32, String, Vec<u64>, Option<[u8; 4]>)>(&to_bytes(&v)),
            Ok(v)
        );
    }

    #[test]
    fn lies_about_lengths_are_errors() {
        // A string claiming 4 GiB.
        assert_eq!(
            from_bytes::<String>(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::TooLong(u32::MAX as usize))
        );
        // A vector claiming 1000 elements in 4 bytes.
        let mut b = to_bytes(&1000u32);
        b.extend_from_slice(&[0; 4]);
        assert_eq!(from_bytes::<Vec<u64>>(&b), Err(DecodeError::Truncated));
        assert_eq!(from_bytes::<u64>(&[1, 2, 3]), Err(DecodeError::Truncated));
        assert_eq!(from_bytes::<u8>(&[1, 2]), Err(DecodeError::Trailing(1)));
        assert_eq!(from_bytes::<bool>(&[2]), Err(DecodeError::BadTag(2)));
        assert_eq!(
            from_bytes::<String>(&[2, 0, 0, 0, 0xff, 0xfe]),
            Err(DecodeError::BadUtf8)
        );
    }

    crate::wire_enum! {
        /// A test enum with a gap in its tags.
        pub enum Shape {
            1 Point {},
            2 Circle { r: u32 },
            7 Named { name: String, sides: Vec<u16> },
        }
    }

    #[test]
    fn enums_round_trip_and_refuse_unknown_tags() {
        for v in [
            Shape::Point {},
            Shape::Circle { r: 9 },
            Shape::Named {
                name: "hex".into(),
                sides: vec![1, 2, 3, 4, 5, 6],
            },
        ] {
            let b = to_bytes(&v);
            assert_eq!(b[..4], v.tag().to_le_bytes());
            assert_eq!(from_bytes::<Shape>(&b), Ok(v));
        }
        assert_eq!(Shape::TAGS, &[1, 2, 7]);
        assert_eq!(Shape::default(), Shape::Point {});
        assert_eq!(
            from_bytes::<Shape>(&to_bytes(&3u32)),
            Err(DecodeError::BadTag(3))
        );
        assert_eq!(
            from_bytes::<Shape>(&to_bytes(&0u32)),
            Err(DecodeError::BadTag(0))
        );
        // A known tag whose fields are missing.
        assert_eq!(
            from_bytes::<Shape>(&to_bytes(&2u32)),
            Err(DecodeError::Truncated)
        );
        // Lengths inside a variant are capped like anywhere else.
        let mut lie = to_bytes(&7u32);
        lie.extend_from_slice(&to_bytes(&u32::MAX));
        assert_eq!(
            from_bytes::<Shape>(&lie),
            Err(DecodeError::TooLong(u32::MAX as usize))
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = from_bytes::<(String, Vec<Vec<u32>>, Option<Bytes>)>(&bytes);
            let _ = from_bytes::<crate::proto::Inventory>(&bytes);
            let _ = from_bytes::<Vec<Shape>>(&bytes);
            let _ = from_bytes::<crate::proto::GraphInstantiate>(&bytes);
        }
    }
}
