//! The memory limit: the most bytes one buffer of a forward pass may take.
//!
//! Shapes that pass shape inference can still ask for more memory than the
//! machine has (a padding of 100 000 on an 8×8 input makes a 200 007 ×
//! 200 007 output plane), and an allocation that large aborts the process.
//! The reference forwards and `hasten_fastconv::Plan` check every buffer
//! whose size comes from the input against a limit first and return
//! [`Error::MemoryLimit`] instead.
//!
//! The limit of the reference forwards is process-wide ([`limit`],
//! [`set_limit`]); a plan carries its own in its options. Both default to
//! [`default_limit`]: half the physical memory on Linux (`MemTotal` of
//! `/proc/meminfo`), [`FALLBACK_LIMIT`] where that cannot be read.
//!
//! ```
//! use hasten_core::memory;
//!
//! assert!(memory::check("a small buffer", 1024, 4).is_ok());
//! assert!(memory::check("a huge buffer", usize::MAX / 8, 4).is_err());
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The limit used where the physical memory cannot be read: 8 GiB.
pub const FALLBACK_LIMIT: u64 = 8 << 30;

/// 0 while no explicit limit has been set.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Half the physical memory (read once), or [`FALLBACK_LIMIT`].
pub fn default_limit() -> u64 {
    static DEFAULT: OnceLock<u64> = OnceLock::new();
    *DEFAULT.get_or_init(|| physical_memory().map_or(FALLBACK_LIMIT, |bytes| bytes / 2))
}

/// The physical memory in bytes, where the platform says.
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&info)
}

/// The `MemTotal:  <n> kB` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_total(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let unit = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit).filter(|&b| b > 0)
}

/// The limit in force for the reference forwards: the last [`set_limit`],
/// else [`default_limit`].
pub fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => default_limit(),
        set => set,
    }
}

/// Sets the process-wide limit of the reference forwards, in bytes; `0`
/// restores [`default_limit`].
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Checks a buffer of `elements` values of `element_bytes` bytes each
/// (`what` names it in the error) against [`limit`].
///
/// # Errors
/// [`Error::Overflow`] when the byte count exceeds `u64`,
/// [`Error::MemoryLimit`] when it exceeds the limit.
pub fn check(what: &str, elements: usize, element_bytes: usize) -> Result<()> {
    check_against(what, elements, element_bytes, limit())
}

/// As [`check`], against an explicit `limit` in bytes.
///
/// # Errors
/// As [`check`].
pub fn check_against(what: &str, elements: usize, element_bytes: usize, limit: u64) -> Result<()> {
    let bytes = (elements as u64)
        .checked_mul(element_bytes as u64)
        .ok_or_else(|| Error::overflow(format!("the byte size of {what}")))?;
    if bytes > limit {
        return Err(Error::MemoryLimit {
            what: what.to_string(),
            bytes,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let info = "MemFree:  10 kB\nMemTotal:       16318488 kB\nSwap: 0 kB\n";
        assert_eq!(parse_mem_total(info), Some(16_318_488 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: many kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 0 kB\n"), None);
    }

    #[test]
    fn default_is_a_fraction_of_physical_memory() {
        let d = default_limit();
        match physical_memory() {
            Some(total) => assert_eq!(d, total / 2),
            None => assert_eq!(d, FALLBACK_LIMIT),
        }
        assert!(d > 0);
    }

    #[test]
    fn check_against_reports_bytes_and_limit() {
        assert!(check_against("x", 25, 4, 100).is_ok());
        assert_eq!(
            check_against("x", 26, 4, 100),
            Err(Error::MemoryLimit {
                what: "x".into(),
                bytes: 104,
                limit: 100
            })
        );
        assert!(matches!(
            check_against("x", usize::MAX, 4, u64::MAX),
            Err(Error::Overflow { .. })
        ));
    }
}
