//! Numbers recorded by `#[audit]`, written as `Display` writes them but
//! without `core::fmt`: formatting an `f64` through `fmt` (the shortest
//! round-trip digits, then padding) costs more than the rest of recording
//! the value. The short forms below cover the numbers calls pass (counts,
//! sizes, temperatures, probabilities); anything else goes through `fmt`, so
//! the text is always exactly `Display`'s.

use std::fmt::Write as _;

/// A number taken from an argument or a field.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// An `f64`.
    F64(f64),
    /// An `f32` (its own shortest digits differ from its `f64` value's).
    F32(f32),
}

/// The number types `#[audit]` records as [`Num`].
pub trait Number {
    /// The value.
    fn num(&self) -> Num;
}

macro_rules! number {
    ($variant:ident as $wide:ty: $($t:ty),*) => {$(
        impl Number for $t {
            fn num(&self) -> Num {
                Num::$variant(<$wide>::from(*self))
            }
        }
    )*};
}
number!(I64 as i64: i8, i16, i32, i64);
number!(U64 as u64: u8, u16, u32, u64);
number!(F64 as f64: f64);
number!(F32 as f32: f32);

impl Number for isize {
    fn num(&self) -> Num {
        // isize is at most 64 bits on every platform Rust supports.
        i64::try_from(*self).map_or(Num::F64(*self as f64), Num::I64)
    }
}

impl Number for usize {
    fn num(&self) -> Num {
        u64::try_from(*self).map_or(Num::F64(*self as f64), Num::U64)
    }
}

impl<T: Number + ?Sized> Number for &T {
    fn num(&self) -> Num {
        (**self).num()
    }
}

impl Num {
    /// Appends the number's `Display` text.
    pub(crate) fn write(self, out: &mut String) {
        match self {
            Num::I64(v) => push_int(out, v < 0, v.unsigned_abs()),
            Num::U64(v) => push_int(out, false, v),
            Num::F64(v) => {
                if !push_f64(out, v) {
                    let _ = write!(out, "{v}");
                }
            }
            Num::F32(v) => {
                if !push_f32(out, v) {
                    let _ = write!(out, "{v}");
                }
            }
        }
    }
}

/// Appends an integer's decimal digits.
fn push_int(out: &mut String, negative: bool, v: u64) {
    let mut buf = Digits::new();
    buf.int(negative, v);
    out.push_str(buf.as_str());
}

/// A number's text, written from the end of a stack buffer and appended
/// to the output in one piece.
struct Digits {
    // u64::MAX has 20 digits; with a sign, a point and six decimals, 28.
    buf: [u8; 32],
    start: usize,
}

impl Digits {
    fn new() -> Self {
        Digits {
            buf: [0; 32],
            start: 32,
        }
    }

    fn byte(&mut self, b: u8) {
        self.start -= 1;
        self.buf[self.start] = b;
    }

    /// `v`'s digits, at least `min_digits` of them (zero-padded).
    fn digits(&mut self, mut v: u64, min_digits: usize) {
        let end = self.start;
        loop {
            self.byte(b'0' + (v % 10) as u8);
            v /= 10;
            if v == 0 && end - self.start >= min_digits {
                break;
            }
        }
    }

    fn int(&mut self, negative: bool, v: u64) {
        self.digits(v, 1);
        if negative {
            self.byte(b'-');
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Appends the `Display` text of `v` when it is below 10⁹ in magnitude and
/// has at most six decimals; false (nothing written) otherwise.
///
/// Why this is `Display`'s text: `Display` prints the shortest decimal that
/// parses back to `v`, positionally. Among decimals with `k` fraction
/// digits, `n / 10^k` parses back to `v` exactly when the correctly rounded
/// quotient of the (exact) `n` and `10^k` is `v`; the first `k` that works
/// gives the fewest digits. Below 10⁹ an `f64`'s spacing is under 10⁻⁷, so at
/// most one decimal with `k <= 6` fraction digits rounds to `v`, and
/// rounding `v * 10^k` (off by less than 0.13 from the exact product) finds it.
fn push_f64(out: &mut String, v: f64) -> bool {
    let a = v.abs();
    if a.is_nan() || a >= 1e9 {
        return false;
    }
    for (k, &p) in POW10.iter().enumerate() {
        // Rounded by adding a half and truncating: `round` is a libm call
        // on baseline x86-64. Exact here: the sum stays below 2^53.
        let n = (a * p + 0.5) as u64;
        if n as f64 / p == a {
            push_decimal(out, v.is_sign_negative(), n, k);
            return true;
        }
    }
    false
}

/// [`push_f64`] for `f32`, which `Display` prints with the shortest digits
/// that parse back to the `f32`. Below 10³ an `f32`'s spacing is under 10⁻⁴;
/// the product is exact in `f64` (24 + 14 bits), and `n < 2^24` and `10^k`
/// are exact in `f32`, so the quotient is correctly rounded there.
fn push_f32(out: &mut String, v: f32) -> bool {
    let a = v.abs();
    if a.is_nan() || a >= 1e3 {
        return false;
    }
    for (k, &p) in POW10[..5].iter().enumerate() {
        let n = (f64::from(a) * p + 0.5) as u64;
        if n as f32 / p as f32 == a {
            push_decimal(out, v.is_sign_negative(), n, k);
            return true;
        }
    }
    false
}

/// Appends `n / 10^k` with exactly `k` fraction digits (`-` for a negative
/// sign, `-0` included, as `Display` does).
fn push_decimal(out: &mut String, negative: bool, n: u64, k: usize) {
    let mut buf = Digits::new();
    if k == 0 {
        buf.int(negative, n);
    } else {
        let scale = 10u64.pow(k as u32);
        buf.digits(n % scale, k);
        buf.byte(b'.');
        buf.int(negative, n / scale);
    }
    out.push_str(buf.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: Num) -> String {
        let mut s = String::new();
        n.write(&mut s);
        s
    }

    #[test]
    fn integers_match_display() {
        for v in [0i64, 1, -1, 9, 10, -10, 4711, i64::MIN, i64::MAX] {
            assert_eq!(text(Num::I64(v)), v.to_string());
        }
        for v in [0u64, 7, 100, 512, u64::MAX] {
            assert_eq!(text(Num::U64(v)), v.to_string());
        }
        assert_eq!(text(usize::MAX.num()), usize::MAX.to_string());
        assert_eq!(text(isize::MIN.num()), isize::MIN.to_string());
    }

    /// SplitMix64, for reproducible samples without a dependency.
    fn samples(mut seed: u64, n: usize) -> impl Iterator<Item = u64> {
        std::iter::repeat_with(move || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = seed;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        })
        .take(n)
    }

    #[test]
    fn floats_match_display() {
        let mut fixed = vec![
            0.0,
            -0.0,
            0.2,
            0.7,
            1.0,
            -1.5,
            0.1 + 0.2,
            1e-7,
            123_456.789,
            999_999_999.999_999,
            1e9,
            1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::EPSILON,
        ];
        // Short decimals (what calls pass) and arbitrary bit patterns.
        let words: Vec<u64> = samples(7, 200_000).collect();
        for (i, w) in words.iter().enumerate() {
            let scale = 10f64.powi((i % 9) as i32 - 2);
            fixed.push((*w % 2_000_000) as f64 / 1000.0 * scale);
            fixed.push(-(((*w >> 20) % 100_000) as f64) / 100.0);
            fixed.push(f64::from_bits(*w));
            fixed.push((*w >> 11) as f64 / (1u64 << 53) as f64 * 2.0);
        }
        for v in fixed {
            assert_eq!(text(Num::F64(v)), v.to_string(), "{:?}", v.to_bits());
        }
    }

    #[test]
    fn f32_match_display() {
        let mut fixed = vec![
            0.0f32,
            -0.0,
            0.1,
            0.2,
            0.7,
            1.0,
            999.9999,
            1e3,
            f32::NAN,
            3.4e38,
        ];
        for w in samples(11, 200_000) {
            fixed.push((w % 100_000) as f32 / 100.0);
            fixed.push(f32::from_bits(w as u32));
            fixed.push((w >> 40) as f32 / (1u64 << 24) as f32);
        }
        for v in fixed {
            assert_eq!(text(Num::F32(v)), v.to_string(), "{:?}", v.to_bits());
        }
    }
}
