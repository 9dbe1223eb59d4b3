//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), parsed exactly and rounded up the way the API server's
//! `MilliValue()` / `Value()` do, so a request of `0.1m` CPU still costs one millicore.
//!
//! Grammar (from apimachinery's `resource.Quantity`):
//! `<signedNumber><suffix>`, number `digits`, `digits.digits`, `digits.` or `.digits`; suffix one of the binary
//! `Ki Mi Gi Ti Pi Ei`, the decimal `n u m "" k M G T P E`, or a decimal exponent `e<int>` / `E<int>`.

/// Why a quantity string is not a quantity (or not one we can use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity {0:?} is empty")]
    Empty(String),
    #[error("quantity {0:?} has no number")]
    NoNumber(String),
    #[error("quantity {0:?} has an unknown suffix")]
    BadSuffix(String),
    #[error("quantity {0:?} is too large")]
    Overflow(String),
    #[error("quantity {0:?} is negative")]
    Negative(String),
}

/// An exact quantity: `(-1)^negative × mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedQuantity {
    pub negative: bool,
    pub mantissa: u128,
    pub exp10: i32,
    pub exp2: u32,
}

/// More significant digits than this cannot be held exactly; no real request comes close.
const MAX_DIGITS: usize = 36;

pub fn parse(text: &str) -> Result<ParsedQuantity, QuantityError> {
    let err_text = || text.to_owned();
    if text.is_empty() {
        return Err(QuantityError::Empty(err_text()));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = bytes.first()
        && (c == b'+' || c == b'-')
    {
        negative = c == b'-';
        i = 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &text[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &text[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(QuantityError::NoNumber(err_text()));
    }
    let (exp10_suffix, exp2) = suffix(&text[i..]).ok_or_else(|| QuantityError::BadSuffix(err_text()))?;

    let digits = format!("{int_digits}{frac_digits}");
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_DIGITS {
        return Err(QuantityError::Overflow(err_text()));
    }
    let mantissa = if significant.is_empty() {
        0
    } else {
        significant.parse::<u128>().map_err(|_| QuantityError::Overflow(err_text()))?
    };
    let frac_len = i32::try_from(frac_digits.len()).map_err(|_| QuantityError::Overflow(err_text()))?;
    let exp10 = exp10_suffix.checked_sub(frac_len).ok_or_else(|| QuantityError::Overflow(err_text()))?;
    Ok(ParsedQuantity { negative: negative && mantissa != 0, mantissa, exp10, exp2 })
}

/// The decimal and binary exponents a suffix stands for.
fn suffix(s: &str) -> Option<(i32, u32)> {
    let decimal = |e: i32| Some((e, 0));
    let binary = |e: u32| Some((0, e));
    match s {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let rest = s.strip_prefix('e').or_else(|| s.strip_prefix('E'))?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents beyond this cannot give a representable value anyway.
            let e: i32 = rest.parse().ok().filter(|e: &i32| e.abs() <= 1000)?;
            decimal(e)
        }
    }
}

impl ParsedQuantity {
    /// A key two quantities share exactly when they have the same value (`resource.Quantity.Cmp`, which
    /// `equality.Semantic` uses): `1.5Gi`, `1536Mi` and `1610612736` give one key. The value `±m · 10^e · 2^b` is
    /// reduced to `±m' · 2^p · 5^q` with `m'` free of the factors 2 and 5, which is unique for every nonzero value.
    pub fn canonical_key(&self) -> String {
        if self.mantissa == 0 {
            return "0".to_owned();
        }
        let mut mantissa = self.mantissa;
        let mut two = i64::from(self.exp2) + i64::from(self.exp10);
        let mut five = i64::from(self.exp10);
        while mantissa.is_multiple_of(2) {
            mantissa /= 2;
            two += 1;
        }
        while mantissa.is_multiple_of(5) {
            mantissa /= 5;
            five += 1;
        }
        format!("{}{mantissa}*2^{two}*5^{five}", if self.negative { "-" } else { "" })
    }

    /// `ceil(value × 10^scale)`, e.g. scale 3 for millicores, 0 for bytes.
    pub fn ceil_scaled(&self, scale: i32) -> Option<i128> {
        let e = self.exp10.checked_add(scale)?;
        let numerator = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let magnitude_floor_ceil: (u128, bool) = if e >= 0 {
            (numerator.checked_mul(10u128.checked_pow(u32::try_from(e).ok()?)?)?, false)
        } else {
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(div) => (numerator / div, numerator % div != 0),
                // The divisor exceeds any numerator: the value is below one unit.
                None => (0, numerator != 0),
            }
        };
        let (floor, inexact) = magnitude_floor_ceil;
        let floor = i128::try_from(floor).ok()?;
        if self.negative {
            // ceil(-x) = -floor(x)
            Some(-floor)
        } else {
            floor.checked_add(i128::from(inexact))
        }
    }
}

fn non_negative_scaled(text: &str, scale: i32) -> Result<u64, QuantityError> {
    let q = parse(text)?;
    if q.negative {
        return Err(QuantityError::Negative(text.to_owned()));
    }
    q.ceil_scaled(scale).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| QuantityError::Overflow(text.to_owned()))
}

/// A CPU quantity in millicores, rounded up.
pub fn cpu_millis(text: &str) -> Result<u64, QuantityError> {
    non_negative_scaled(text, 3)
}

/// A memory (or any byte) quantity in bytes, rounded up.
pub fn bytes(text: &str) -> Result<u64, QuantityError> {
    non_negative_scaled(text, 0)
}

/// A whole-unit count (e.g. `nvidia.com/gpu`, pods), rounded up.
pub fn count(text: &str) -> Result<u64, QuantityError> {
    non_negative_scaled(text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        for (text, millis) in [
            ("1", 1000),
            ("100m", 100),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("2.25", 2250),
            ("0.1m", 1),
            ("1500u", 2),
            ("1000000n", 1),
            ("1n", 1),
            ("0", 0),
            ("0m", 0),
            ("+3", 3000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("25e-1", 2500),
            ("1k", 1_000_000),
            ("-0", 0),
        ] {
            assert_eq!(cpu_millis(text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn memory() {
        for (text, b) in [
            ("1", 1),
            ("1Ki", 1024),
            ("1.5Gi", 1_610_612_736),
            ("64Gi", 68_719_476_736),
            ("1Mi", 1_048_576),
            ("1Ti", 1u64 << 40),
            ("1Pi", 1u64 << 50),
            ("1Ei", 1u64 << 60),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("0.5Ki", 512),
            ("0.3", 1),
            ("1m", 1),
            ("1000m", 1),
            ("1001m", 2),
        ] {
            assert_eq!(bytes(text), Ok(b), "{text}");
        }
    }

    #[test]
    fn rejects() {
        for text in ["", "Ki", "1Ki2", "1.2.3", "abc", "1e", "1ki", "1 Ki", " 1", "1KI", "e3", ".", "+", "1e+", "1Kib"]
        {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        assert_eq!(bytes("-1"), Err(QuantityError::Negative("-1".into())));
        assert_eq!(cpu_millis("-100m"), Err(QuantityError::Negative("-100m".into())));
        assert!(matches!(bytes("16Ei"), Err(QuantityError::Overflow(_))));
        assert!(matches!(bytes("1e30"), Err(QuantityError::Overflow(_))));
        assert!(matches!(parse("1234567890123456789012345678901234567890"), Err(QuantityError::Overflow(_))));
    }

    #[test]
    fn exact_representation() {
        assert_eq!(parse("1.5Gi"), Ok(ParsedQuantity { negative: false, mantissa: 15, exp10: -1, exp2: 30 }));
        assert_eq!(parse("-2e-3"), Ok(ParsedQuantity { negative: true, mantissa: 2, exp10: -3, exp2: 0 }));
        assert_eq!(parse("-2e-3").ok().and_then(|q| q.ceil_scaled(0)), Some(0));
        assert_eq!(parse("-2.5").ok().and_then(|q| q.ceil_scaled(0)), Some(-2));
        assert_eq!(parse("1e-100").ok().and_then(|q| q.ceil_scaled(3)), Some(1));
        assert_eq!(parse("000.000").ok().and_then(|q| q.ceil_scaled(3)), Some(0));
    }

    proptest::proptest! {
        #[test]
        fn millis_round_trip(m in 0u64..10_000_000_000) {
            proptest::prop_assert_eq!(cpu_millis(&format!("{m}m")), Ok(m));
            let whole = m / 1000;
            let frac = m % 1000;
            proptest::prop_assert_eq!(cpu_millis(&format!("{whole}.{frac:03}")), Ok(m));
        }

        #[test]
        fn binary_suffixes_multiply(n in 0u64..1_000_000, s in 0usize..4) {
            let (suffix, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)][s];
            proptest::prop_assert_eq!(bytes(&format!("{n}{suffix}")), Ok(n << shift));
        }

        #[test]
        fn never_panics(s in "[-+0-9.eEKMGTPinum]{0,12}") {
            let _ = parse(&s).map(|q| q.ceil_scaled(3));
        }
    }
}
