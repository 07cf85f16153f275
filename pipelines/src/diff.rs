//! Additive difference types: several integer sums carried as the `R` of a
//! differential collection, so `explode` + `count_total` maintain them in
//! O(1) per update whatever the size of the group (retractions subtract).

/// Declares a struct of signed integer sums usable as a differential
/// difference type. A value with every field zero is the identity, so a
/// group disappears exactly when all its contributions are retracted —
/// include a count field to keep groups whose sums happen to be zero.
#[macro_export]
macro_rules! additive {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl differential_dataflow::difference::IsZero for $name {
            fn is_zero(&self) -> bool {
                $(self.$f == 0)&&*
            }
        }
        impl differential_dataflow::difference::Semigroup for $name {
            fn plus_equals(&mut self, rhs: &Self) {
                $(self.$f += rhs.$f;)*
            }
        }
        impl differential_dataflow::difference::Monoid for $name {
            fn zero() -> Self {
                Self::default()
            }
        }
        impl differential_dataflow::difference::Abelian for $name {
            fn negate(&mut self) {
                $(self.$f = -self.$f;)*
            }
        }
        impl differential_dataflow::difference::Multiply<isize> for $name {
            type Output = $name;
            fn multiply(mut self, rhs: &isize) -> $name {
                $(self.$f *= *rhs as $t;)*
                self
            }
        }
    };
}
