//! Cron triggers (`crons` in partykit.json): the main party's `onCron` runs at each time its
//! schedule names, in UTC, on one node of the cluster: the one its ring places the cron on.
//! A tick missed while no node ran (or while the ring changed hands) is not run later, as
//! on Cloudflare; a tick may run twice when two nodes briefly disagree on the ring.

use crate::host::Host;
use chrono::{DateTime, Utc};
use conclave_proto::RoomKey;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tracing::{debug, warn};

/// One cron trigger: its name and its schedule.
#[derive(Clone, Debug)]
pub struct Cron {
    pub name: String,
    pub pattern: String,
    schedule: croner::Cron,
}

/// One firing of a cron: what `onCron` gets as its controller.
#[derive(Clone, Debug)]
pub struct CronTick {
    pub name: String,
    pub pattern: String,
    /// When the tick was due, in milliseconds since the epoch.
    pub scheduled_ms: f64,
}

impl Cron {
    /// Parses a schedule as Cloudflare takes one: five fields (minute, hour, day of month,
    /// month, day of week), with `L`, `W` and `#`, weekdays 1–7 from Sunday or by name,
    /// ranges that wrap around (`FRI-MON`, `22-2`) and steps from a start (`0/15`); a
    /// sixth field in front, for seconds, is accepted too. A schedule that never comes
    /// due (the 31st of February) is refused, as Cloudflare refuses it.
    pub fn new(name: &str, pattern: &str) -> Result<Self, String> {
        let refused = |why: String| format!("cron {name}: {pattern:?} {why}");
        let parser = croner::parser::CronParser::builder()
            .alternative_weekdays(true)
            .sloppy_ranges(true)
            .year(croner::parser::Year::Disallowed)
            .build();
        let plain = unwrapped(pattern).map_err(refused)?;
        let schedule = parser
            .parse(&plain)
            .map_err(|e| refused(format!("is not a cron schedule: {e}")))?;
        let cron = Self {
            name: name.to_string(),
            pattern: pattern.to_string(),
            schedule,
        };
        if cron.next_after(Utc::now()).is_none() {
            return Err(refused("never comes due".into()));
        }
        Ok(cron)
    }

    /// The first time after `t` that the schedule names.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.find_next_occurrence(&t, false).ok()
    }

    fn tick_at(&self, at: DateTime<Utc>) -> CronTick {
        CronTick {
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            scheduled_ms: at.timestamp_millis() as f64,
        }
    }

    /// The routing key the ring places this cron by: a node runs it where it would own
    /// that room.
    fn placement(&self) -> Option<RoomKey> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.name.as_bytes());
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        RoomKey::new(CRONS_PARTY, &id).ok()
    }
}

/// `pattern` with what croner reads otherwise than Cloudflare made plain: month and
/// weekday names as numbers (weekdays from SUN = 1), ranges that wrap around split in two
/// (`7-1` is `7-7,1-1`), and a lone `L` for a weekday as Saturday. Refuses more than six
/// fields, and letters where none belong (a name in another field than its own).
fn unwrapped(pattern: &str) -> Result<String, String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let mut fields: Vec<String> = pattern
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    if pattern.trim_start().starts_with('@') {
        return Err(
            "is an alias, which Cloudflare does not take: write its fields (@daily is 0 0 * * *)"
                .into(),
        );
    }
    let given: Vec<&str> = pattern.split_whitespace().collect();
    if fields.len() > 6 {
        return Err(format!(
            "has {} fields: five (minute to weekday), or six with seconds in front",
            fields.len()
        ));
    }
    // The five fields Cloudflare has, after an optional seconds field.
    let first = fields.len().saturating_sub(5);
    let limits = [(0, 59), (0, 23), (1, 31), (1, 12), (1, 7)];
    for (i, (low, high)) in limits.into_iter().enumerate() {
        let Some(field) = fields.get_mut(first + i) else {
            break;
        };
        let names: &[&str] = match i {
            3 => &MONTHS,
            4 => &WEEKDAYS,
            _ => &[],
        };
        for (n, name) in names.iter().enumerate() {
            *field = field.replace(name, &(n + 1).to_string());
        }
        if i == 4 && field == "L" {
            *field = "7".into();
        }
        *field = field
            .split(',')
            .map(|part| wrap_around(part, low, high))
            .collect::<Vec<_>>()
            .join(",");
    }
    for (i, (field, given)) in fields.iter().zip(&given).enumerate() {
        let letters: &[char] = match i.checked_sub(first) {
            Some(2) => &['L', 'W'],
            Some(4) => &['L'],
            _ => &[],
        };
        if field
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !letters.contains(&c))
        {
            return Err(format!(
                "has {given:?} where no such name or letter belongs"
            ));
        }
    }
    Ok(fields.join(" "))
}

/// A range `a-b` with `a` past `b` as the two ranges it wraps around to.
fn wrap_around(part: &str, low: u32, high: u32) -> String {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (part, None),
    };
    let Some((a, b)) = range.split_once('-') else {
        return part.to_string();
    };
    match (a.parse::<u32>(), b.parse::<u32>()) {
        (Ok(a), Ok(b)) if a > b && step.is_none() => format!("{a}-{high},{low}-{b}"),
        _ => part.to_string(),
    }
}

/// The party of the crons' routing keys: a name no project can give a party.
const CRONS_PARTY: &str = "(crons)";

/// Longest sleep between looks at the schedule: a reload may have changed it.
const MAX_SLEEP: Duration = Duration::from_secs(10);

/// A tick this late (the process stalled, the clock stepped) still runs; one later is
/// missed, as a tick due while no node ran is.
const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The most ticks of one cron run in one look at the schedule.
const MAX_TICKS_AT_ONCE: usize = 10;

/// Runs the main party's crons until the host is gone.
pub(crate) async fn run(host: Weak<Host>) {
    let mut checked = Utc::now();
    loop {
        let sleep = {
            let Some(host) = host.upgrade() else { return };
            let now = Utc::now();
            let main = host.parties.get("main");
            let crons = main.as_ref().map(|m| m.crons()).unwrap_or_default();
            for cron in crons.iter() {
                let mut from = checked.max(now - GRACE);
                for _ in 0..MAX_TICKS_AT_ONCE {
                    let Some(at) = cron.next_after(from).filter(|at| *at <= now) else {
                        break;
                    };
                    start(&host, cron, at);
                    from = at;
                }
            }
            // Never back: a clock stepped back does not run ticks again.
            checked = checked.max(now);
            crons
                .iter()
                .filter_map(|c| c.next_after(now))
                .min()
                .and_then(|at| (at - now).to_std().ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP)
        };
        // Past the tick, so that the wall clock has reached it too.
        tokio::time::sleep(sleep + Duration::from_millis(1)).await;
    }
}

/// Runs one tick of `cron` if this node is the one to run it.
fn start(host: &Arc<Host>, cron: &Cron, at: DateTime<Utc>) {
    let Some(key) = cron.placement() else { return };
    let here = host.cluster.is_serving()
        && host.cluster.runs_crons_in_region()
        && host.cluster.places_here(&key);
    if !here {
        debug!(cron = %cron.name, "cron tick left to the node the ring places it on");
        return;
    }
    let Some(main) = host.parties.get("main") else {
        return;
    };
    let tick = cron.tick_at(at);
    let Some(run) = main.run_cron(tick) else {
        return;
    };
    let name = cron.name.clone();
    tokio::spawn(async move {
        let outcome = match crate::panics::guarded_future(run).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                warn!(cron = %name, error = %e, "onCron failed");
                "failed"
            }
            Err(panic) => {
                warn!(cron = %name, "onCron panicked: {panic}");
                "failed"
            }
        };
        metrics::counter!("conclave_cron_runs_total", "outcome" => outcome).increment(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn schedules_read_as_cloudflare_reads_them() {
        // 2026-12-07 is a Monday.
        let monday = at(2026, 12, 7, 12, 0);
        let next = |pattern: &str| Cron::new("c", pattern).unwrap().next_after(monday).unwrap();
        assert_eq!(next("* * * * *"), at(2026, 12, 7, 12, 1));
        assert_eq!(next("*/30 * * * *"), at(2026, 12, 7, 12, 30));
        // Weekdays count from Sunday = 1, as Cloudflare's (Quartz's) do.
        assert_eq!(next("0 17 * * 1"), at(2026, 12, 13, 17, 0));
        assert_eq!(next("0 17 * * sun"), at(2026, 12, 13, 17, 0));
        assert_eq!(next("10 7 * * 2-6"), at(2026, 12, 8, 7, 10));
        assert_eq!(next("10 7 * * MON-FRI"), at(2026, 12, 8, 7, 10));
        // The last Friday of the month.
        assert_eq!(next("0 18 * * 6L"), at(2026, 12, 25, 18, 0));
        assert_eq!(next("0 15 1 * *"), at(2027, 1, 1, 15, 0));
        // Wrapping ranges, steps from a start, a lone L for Saturday, as Cloudflare reads them.
        assert_eq!(next("0 9 * * SAT-SUN"), at(2026, 12, 12, 9, 0));
        assert_eq!(next("0 9 * * 7-1"), at(2026, 12, 12, 9, 0));
        assert_eq!(next("30 22-2 * * *"), at(2026, 12, 7, 22, 30));
        assert_eq!(next("0/15 * * * *"), at(2026, 12, 7, 12, 15));
        assert_eq!(next("0 8 * * L"), at(2026, 12, 12, 8, 0));
        let err = Cron::new("nightly", "every night").unwrap_err();
        assert!(err.contains("nightly"), "{err}");
        let err = Cron::new("never", "0 0 31 2 *").unwrap_err();
        assert!(err.contains("never comes due"), "{err}");
        // Names only in their own fields; no year field.
        for wrong in [
            "0 0 * * MAY",
            "0 0 * MON *",
            "0 0 * * * * 2027",
            "0 X * * *",
        ] {
            assert!(Cron::new("c", wrong).is_err(), "{wrong}");
        }
        let err = Cron::new("c", "0 0 * * monday").unwrap_err();
        assert!(err.contains("\"monday\""), "{err}");
        let err = Cron::new("c", "@daily").unwrap_err();
        assert!(err.contains("alias"), "{err}");
    }

    #[test]
    fn a_cron_is_placed_by_its_name() {
        let a = Cron::new("a", "* * * * *").unwrap().placement().unwrap();
        let again = Cron::new("a", "0 * * * *").unwrap().placement().unwrap();
        let b = Cron::new("b", "* * * * *").unwrap().placement().unwrap();
        assert_eq!(a, again);
        assert_ne!(a, b);
    }
}
