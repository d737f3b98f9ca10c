//! Wall-clock milliseconds, the unit of alarms and chat timestamps (as in Durable Objects).

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
