//! Validated scalar types of the event model (SPEC §2, §2.6).
//!
//! Each type checks its own rule while it is deserialized, so a decoded event
//! is valid by construction. Custom error messages start with the reject
//! reason (`bad_timestamp: …`), which [`crate::event::Reject`] reads back.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize, Serializer};

use crate::time::{format_micros, parse_rfc3339, Micros};

/// A short string kept inline (up to 24 bytes) instead of on the heap:
/// tenant ids, entity ids and names are the keys of every arrangement, so
/// cloning and comparing them must not allocate or chase pointers.
pub type Text = compact_str::CompactString;

/// Longest string SPEC §2.6 accepts, in characters.
pub const MAX_STRING_CHARS: usize = 1024;
/// Longest tenant id (SPEC §2).
pub const MAX_TENANT_CHARS: usize = 128;

/// An `f64` with a total order so events can live in differential
/// collections (which need `Ord`). JSON has no NaN, so the order is numeric.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

macro_rules! bounded_f64 {
    ($(#[$doc:meta])* $name:ident, $lo:expr, $hi:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub F64);

        impl $name {
            pub fn get(self) -> f64 {
                self.0 .0
            }
            /// Builds a value, or `None` when it is outside the accepted range.
            pub fn new(v: f64) -> Option<Self> {
                ($lo..=$hi).contains(&v).then_some(Self(F64(v)))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = f64::deserialize(d)?;
                Self::new(v).ok_or_else(|| {
                    D::Error::custom(format_args!("out_of_range: {v} not in [{}, {}]", $lo, $hi))
                })
            }
        }
    };
}

bounded_f64!(
    /// A number in [0, 1] (rates and shares).
    Unit, 0.0, 1.0
);
bounded_f64!(
    /// A number in [-1, 1] (sentiment).
    Signed, -1.0, 1.0
);
bounded_f64!(
    /// A number ≥ 0. The upper bound (10^12) keeps fixed-point sums exact;
    /// SPEC §2.6 "number out of range".
    NonNeg, 0.0, 1e12
);

/// An integer count or amount ≥ 0, at most 10^15 so every product and sum
/// of them stays exact in the metrics' fixed-point arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Count(pub u64);

/// Upper bound for [`Count`].
pub const MAX_COUNT: u64 = 1_000_000_000_000_000;

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v > MAX_COUNT {
            return Err(D::Error::custom(format_args!("out_of_range: {v} > {MAX_COUNT}")));
        }
        Ok(Count(v))
    }
}

/// A string of at most [`MAX_STRING_CHARS`] characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Str(pub Text);

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str(Text::from(s))
    }
}

fn check_len<E: serde::de::Error>(s: &str, min: usize, max: usize) -> Result<(), E> {
    // Byte length bounds the char count from above, so most strings skip the count.
    if s.len() > max && s.chars().count() > max {
        return Err(E::custom(format_args!("string_too_long: {} chars > {max}", s.chars().count())));
    }
    if s.chars().count() < min {
        return Err(E::custom(format_args!("out_of_range: string shorter than {min} chars")));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Text::deserialize(d)?;
        check_len::<D::Error>(&s, 0, MAX_STRING_CHARS)?;
        Ok(Str(s))
    }
}

/// A tenant id: 1..=128 characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Tenant(pub Text);

impl Deref for Tenant {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
impl From<&str> for Tenant {
    fn from(s: &str) -> Self {
        Tenant(Text::from(s))
    }
}

impl<'de> Deserialize<'de> for Tenant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Text::deserialize(d)?;
        if s.chars().count() > MAX_TENANT_CHARS {
            return Err(D::Error::custom(format_args!("string_too_long: tenant_id over {MAX_TENANT_CHARS} chars")));
        }
        check_len::<D::Error>(&s, 1, MAX_TENANT_CHARS)?;
        Ok(Tenant(s))
    }
}

/// An RFC 3339 timestamp, held as UTC microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub Micros);

/// RFC 3339 text in human-readable formats (JSON); plain microseconds in
/// binary ones (timely's exchange between processes).
impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format_micros(self.0))
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Micros::deserialize(d).map(Ts);
        }
        let s = Text::deserialize(d)?;
        parse_rfc3339(&s)
            .map(Ts)
            .ok_or_else(|| D::Error::custom(format_args!("bad_timestamp: {s:?} is not RFC 3339 UTC in 1970..2105")))
    }
}
