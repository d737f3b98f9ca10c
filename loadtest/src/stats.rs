//! Latency statistics: HDR histograms in microseconds, reported in milliseconds.

use crate::Report;
use hdrhistogram::Histogram;

/// A histogram for latencies from 1 µs to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Records `us` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 60_000_000));
}

/// Adds `{prefix}_p50_ms`, p90, p99, p999 and max rows.
pub fn add_latency(report: &mut Report, prefix: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        report.add(&format!("{prefix}_samples"), 0);
        return;
    }
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        report.add(
            &format!("{prefix}_{name}_ms"),
            h.value_at_quantile(q) as f64 / 1000.0,
        );
    }
    report.add(&format!("{prefix}_max_ms"), h.max() as f64 / 1000.0);
}

/// A payload that carries its send time: 20 decimal digits of µs since `base`, padded to
/// `len` bytes (at least the 20 digits).
pub fn stamped_payload(sent_us: u64, len: usize) -> String {
    let mut p = format!("{sent_us:020}");
    p.extend(std::iter::repeat_n('x', len.saturating_sub(20)));
    p
}

/// The send time carried by a stamped payload.
pub fn stamp_of(payload: &str) -> Option<u64> {
    let digits = payload.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_reject_other_text() {
        let p = stamped_payload(1_234_567, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(stamp_of(&p), Some(1_234_567));
        assert_eq!(
            stamped_payload(5, 3).len(),
            20,
            "never shorter than the stamp"
        );
        assert_eq!(stamp_of("hello"), None);
        assert_eq!(stamp_of("0000000000000000001x-not-a-stamp"), None);
    }

    #[test]
    fn latency_rows_are_in_milliseconds_and_ordered() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record(&mut h, us * 1000); // 1 ms .. 1 s
        }
        record(&mut h, 0); // clamped, not an error
        let mut r = Report::new("t");
        add_latency(&mut r, "latency", &h);
        let get = |k: &str| r.get(k).and_then(|v| v.as_f64()).unwrap();
        assert!((get("latency_p50_ms") - 500.0).abs() < 2.0);
        assert!((get("latency_p99_ms") - 990.0).abs() < 5.0);
        assert!(get("latency_p50_ms") <= get("latency_p90_ms"));
        assert!(get("latency_p999_ms") <= get("latency_max_ms"));
        let mut empty = Report::new("t");
        add_latency(&mut empty, "latency", &latency_histogram());
        assert_eq!(
            empty.get("latency_samples").and_then(|v| v.as_u64()),
            Some(0)
        );
    }
}
