//! Exact arithmetic for figures that are rounded (SPEC §3.2: "rounded half
//! away from zero to 2 decimals" acts on the exact value).
//!
//! A float sum can land just below a half that the exact value sits on: a
//! conversation of 371.1 s is 6.185 engaged minutes, which as a float is
//! 6.18499…, so 6.185 + 3 rounds to 9.18 instead of 9.19, and 84.995 can
//! fall short of the 85 of the premium tier. [`Ratio`] keeps such sums
//! exact: decimal inputs (numbers read from JSON or configuration, held as
//! `f64`) are taken at their shortest decimal representation — the digits
//! that were written — and durations as microseconds over 60,000,000.
//!
//! Limits: numerator and denominator are `i128`. When an operation would
//! overflow (inputs with very many decimals multiplied together), the
//! result is the nearest ratio with denominator 10¹² instead, i.e. as exact
//! as a float; figures of ordinary inputs never get there.

use std::cmp::Ordering;

/// An exact rational number, `num / den` with `den > 0`, reduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    num: i128,
    den: i128,
}

/// The denominator of a ratio that had to be approximated.
const APPROX_DEN: i128 = 1_000_000_000_000;

fn gcd(mut a: i128, mut b: i128) -> i128 {
    (a, b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Ratio {
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };

    pub fn int(n: i128) -> Ratio {
        Ratio { num: n, den: 1 }
    }

    /// `num / den`; `None` when `den` is 0.
    pub fn new(num: i128, den: i128) -> Option<Ratio> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den) * den.signum();
        Some(Ratio { num: num / g, den: den / g })
    }

    /// Microseconds as minutes.
    pub fn minutes_of_micros(micros: i128) -> Ratio {
        Ratio::new(micros, 60_000_000).unwrap_or(Ratio::ZERO)
    }

    /// The decimal that `x` was written as (its shortest representation);
    /// non-finite values are 0 (inputs are validated finite).
    pub fn of_f64(x: f64) -> Ratio {
        if !x.is_finite() {
            return Ratio::ZERO;
        }
        // Display never uses exponents and gives the shortest round trip.
        let text = format!("{x}");
        let (negative, digits) = text.strip_prefix('-').map_or((false, text.as_str()), |d| (true, d));
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let parsed = (|| {
            let mut num: i128 = int.parse().ok()?;
            let mut den: i128 = 1;
            for d in frac.bytes() {
                num = num.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
                den = den.checked_mul(10)?;
            }
            Ratio::new(if negative { -num } else { num }, den)
        })();
        parsed.unwrap_or_else(|| Ratio::approx(x))
    }

    fn approx(x: f64) -> Ratio {
        Ratio::new((x * APPROX_DEN as f64).round() as i128, APPROX_DEN).unwrap_or(Ratio::ZERO)
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    fn sum(self, o: Ratio) -> Ratio {
        let g = gcd(self.den, o.den);
        let exact = (|| {
            let den = (self.den / g).checked_mul(o.den)?;
            let num = self.num.checked_mul(o.den / g)?.checked_add(o.num.checked_mul(self.den / g)?)?;
            Ratio::new(num, den)
        })();
        exact.unwrap_or_else(|| Ratio::approx(self.to_f64() + o.to_f64()))
    }

    fn product(self, o: Ratio) -> Ratio {
        // Cross-reduce first, so that products stay small.
        let (g1, g2) = (gcd(self.num, o.den), gcd(o.num, self.den));
        let exact = (|| {
            let num = (self.num / g1).checked_mul(o.num / g2)?;
            let den = (self.den / g2).checked_mul(o.den / g1)?;
            Ratio::new(num, den)
        })();
        exact.unwrap_or_else(|| Ratio::approx(self.to_f64() * o.to_f64()))
    }

    pub fn min(self, o: Ratio) -> Ratio {
        if self.cmp(&o) == Ordering::Greater {
            o
        } else {
            self
        }
    }

    pub fn max(self, o: Ratio) -> Ratio {
        if self.cmp(&o) == Ordering::Less {
            o
        } else {
            self
        }
    }

    pub fn clamp(self, lo: Ratio, hi: Ratio) -> Ratio {
        self.max(lo).min(hi)
    }

    /// Rounded half away from zero to 2 decimals, as the nearest float.
    pub fn round2(self) -> f64 {
        // |x| · 100 = q / den; rounded = ⌊(2q + den) / (2 den)⌋.
        let rounded = (|| {
            let q = self.num.abs().checked_mul(100)?;
            let twice = q.checked_mul(2)?.checked_add(self.den)?;
            Some(twice / self.den.checked_mul(2)?)
        })();
        match rounded {
            Some(r) => self.num.signum() as f64 * r as f64 / 100.0,
            None => (self.to_f64() * 100.0).round() / 100.0,
        }
    }
}

impl std::ops::Add for Ratio {
    type Output = Ratio;
    fn add(self, o: Ratio) -> Ratio {
        self.sum(o)
    }
}

impl std::ops::Mul for Ratio {
    type Output = Ratio;
    fn mul(self, o: Ratio) -> Ratio {
        self.product(o)
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Ratio) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, o: &Ratio) -> Ordering {
        match (self.num.checked_mul(o.den), o.num.checked_mul(self.den)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.to_f64().total_cmp(&o.to_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_away_from_zero_on_the_exact_value() {
        // 371.1 s = 6.185 minutes; as floats 6.185 + 3 rounds down.
        let minutes = Ratio::minutes_of_micros(371_100_000);
        assert_eq!(minutes, Ratio::new(6185, 1000).unwrap_or(Ratio::ZERO));
        assert_eq!((minutes + Ratio::int(3)).round2(), 9.19);
        assert_eq!(Ratio::of_f64(84.995).round2(), 85.0);
        assert_eq!(Ratio::of_f64(-0.125).round2(), -0.13);
        assert_eq!(Ratio::of_f64(0.124).round2(), 0.12);
        assert_eq!(Ratio::of_f64(5.0) * Ratio::of_f64(0.35), Ratio::new(7, 4).unwrap_or(Ratio::ZERO));
    }

    #[test]
    fn decimals_are_read_as_written_and_overflow_approximates() {
        assert_eq!(Ratio::of_f64(0.1) + Ratio::of_f64(0.2), Ratio::of_f64(0.3));
        assert_eq!(Ratio::of_f64(-2.5), Ratio::new(-5, 2).unwrap_or(Ratio::ZERO));
        let tiny = Ratio::of_f64(1.234_567_890_123_456_7e-10);
        let product = tiny * tiny * tiny;
        assert!((product.to_f64() - 1.88e-30).abs() < 1e-12);
        assert!(Ratio::of_f64(0.3) > Ratio::of_f64(0.29) && Ratio::int(-1) < Ratio::ZERO);
    }
}
