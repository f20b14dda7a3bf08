//! Task-level `cpu` and `memory`, which ECS takes as a number or a string.
//!
//! - cpu: `256`, `"256"` (CPU units), `"1 vCPU"`, `"0.25 vcpu"` (1 vCPU = 1024 units)
//! - memory: `512`, `"512"` (MiB), `"1 GB"`, `"2GB"`, `"0.5 GB"` (1 GB = 1024 MiB)
//!
//! Decimal values are computed exactly; a value that is not a whole number of
//! units (`"0.1 vCPU"` = 102.4 units) is refused rather than rounded.

use serde_json::Value;

/// CPU units in one vCPU.
pub const UNITS_PER_VCPU: u64 = 1024;
/// MiB in one GB, as ECS counts it.
pub const MIB_PER_GB: u64 = 1024;

/// Parses a task-level `cpu` value into CPU units.
pub(crate) fn parse_cpu(v: &Value) -> Result<u64, String> {
    const HINT: &str =
        "expected cpu units (`256`, `\"256\"`) or vCPUs (`\"1 vCPU\"`, `\"0.25 vcpu\"`)";
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{HINT}, got {n}")),
        Value::String(s) => {
            let t = s.trim();
            if let Some(num) = strip_suffix_ignore_case(t, "vcpu") {
                scaled(num.trim(), UNITS_PER_VCPU)
                    .ok_or_else(|| format!("{HINT}, got {s:?} (not a whole number of cpu units)"))
            } else {
                t.parse::<u64>().map_err(|_| format!("{HINT}, got {s:?}"))
            }
        }
        other => Err(format!("{HINT}, got {}", kind(other))),
    }
}

/// Parses a task-level `memory` value into MiB.
pub(crate) fn parse_memory(v: &Value) -> Result<u64, String> {
    const HINT: &str = "expected MiB (`512`, `\"512\"`) or GB (`\"1 GB\"`, `\"2GB\"`)";
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{HINT}, got {n}")),
        Value::String(s) => {
            let t = s.trim();
            if let Some(num) = strip_suffix_ignore_case(t, "gb") {
                scaled(num.trim(), MIB_PER_GB)
                    .ok_or_else(|| format!("{HINT}, got {s:?} (not a whole number of MiB)"))
            } else {
                t.parse::<u64>().map_err(|_| format!("{HINT}, got {s:?}"))
            }
        }
        other => Err(format!("{HINT}, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// `num` (a decimal such as `2`, `0.25`, `.5`) times `factor`, when that is a
/// whole number; `None` for anything else (signs, exponents, overflow).
fn scaled(num: &str, factor: u64) -> Option<u64> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Trailing zeros of the fraction change nothing; more than 18 significant
    // fractional digits cannot give a whole number of units anyway.
    let frac = frac.trim_end_matches('0');
    if frac.len() > 18 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let denom = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let total = int
        .checked_mul(denom)?
        .checked_add(frac_val)?
        .checked_mul(u128::from(factor))?;
    if total % denom != 0 {
        return None;
    }
    u64::try_from(total / denom).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu(&json!(256)), Ok(256));
        assert_eq!(parse_cpu(&json!("256")), Ok(256));
        assert_eq!(parse_cpu(&json!("1 vCPU")), Ok(1024));
        assert_eq!(parse_cpu(&json!("0.25 vcpu")), Ok(256));
        assert_eq!(parse_cpu(&json!(".5vCPU")), Ok(512));
        assert_eq!(parse_cpu(&json!("2 VCPU")), Ok(2048));
        assert!(parse_cpu(&json!("0.1 vCPU")).is_err());
        assert!(parse_cpu(&json!("-1")).is_err());
        assert!(parse_cpu(&json!(-1)).is_err());
        assert!(parse_cpu(&json!(1.5)).is_err());
        assert!(parse_cpu(&json!("vcpu")).is_err());
        assert!(parse_cpu(&json!(". vcpu")).is_err());
        assert!(parse_cpu(&json!("1e3")).is_err());
        assert!(parse_cpu(&json!(true)).is_err());
        assert!(parse_cpu(&json!("99999999999999999999999 vcpu")).is_err());
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory(&json!(512)), Ok(512));
        assert_eq!(parse_memory(&json!("512")), Ok(512));
        assert_eq!(parse_memory(&json!("1 GB")), Ok(1024));
        assert_eq!(parse_memory(&json!("2GB")), Ok(2048));
        assert_eq!(parse_memory(&json!("0.5 gb")), Ok(512));
        assert_eq!(parse_memory(&json!("1.50 GB")), Ok(1536));
        assert!(parse_memory(&json!("1 MB")).is_err());
        assert!(parse_memory(&json!("0.3 GB")).is_err());
        assert!(parse_memory(&json!("")).is_err());
        assert!(parse_memory(&json!(null)).is_err());
    }
}
