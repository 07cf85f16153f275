//! Fixed-point money and counts for exact, order-independent sums.
//!
//! Floating-point addition is not associative, so a sum of `f64`s would
//! depend on arrival order and batching. Every per-record contribution is
//! rounded once to millionths and summed as an integer; results are then a
//! pure function of the set of current versions (SPEC §2).

/// Millionths of a unit.
pub type Fixed = i128;

pub const SCALE: f64 = 1_000_000.0;

/// Rounds half away from zero to millionths.
pub fn to_fixed(x: f64) -> Fixed {
    (x * SCALE).round() as Fixed
}

pub fn to_f64(x: Fixed) -> f64 {
    x as f64 / SCALE
}

/// `num / den`, or 0 when the denominator is 0.
pub fn ratio(num: Fixed, den: Fixed) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}
