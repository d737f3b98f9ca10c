//! Liveness durations. Their order is the safety argument, so it is checked:
//!
//! `heartbeat` < `self_fence_after` < `ttl`: a node renews every `heartbeat`; if no renewal
//! succeeded for `self_fence_after` (counted from when the last successful one was sent) it
//! stops serving; its key expires at the earliest `ttl` after that send, and only then can
//! placement drop it from the ring and another node claim its rooms. Durations only: no
//! two machines' clocks are compared.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessTiming {
    /// How often a node renews its key.
    pub heartbeat: Duration,
    /// How long the key lives without renewal.
    pub ttl: Duration,
    /// How long without a successful renewal before the node stops serving.
    pub self_fence_after: Duration,
    /// How often placement looks at the keys.
    pub poll: Duration,
}

impl Default for LivenessTiming {
    fn default() -> Self {
        Self::from_heartbeat_and_ttl(Duration::from_millis(500), Duration::from_secs(2))
    }
}

impl LivenessTiming {
    /// Self-fencing a quarter of the TTL before expiry; placement polls at half the
    /// heartbeat.
    pub fn from_heartbeat_and_ttl(heartbeat: Duration, ttl: Duration) -> Self {
        Self {
            heartbeat,
            ttl,
            self_fence_after: ttl * 3 / 4,
            poll: heartbeat / 2,
        }
    }

    /// Checks the order the safety argument needs.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() || self.poll.is_zero() {
            return Err("heartbeat and poll intervals must be positive".into());
        }
        if self.heartbeat * 2 > self.self_fence_after {
            return Err(format!(
                "self-fence after {:?} leaves no room for a missed heartbeat every {:?}",
                self.self_fence_after, self.heartbeat
            ));
        }
        if self.self_fence_after >= self.ttl {
            return Err(format!(
                "a node must fence itself ({:?}) before its key expires ({:?})",
                self.self_fence_after, self.ttl
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_heartbeat_before_self_fence_before_expiry() {
        let t = LivenessTiming::default();
        assert_eq!(t.check(), Ok(()));
        assert!(t.heartbeat < t.self_fence_after && t.self_fence_after < t.ttl);
    }

    #[test]
    fn orders_that_could_let_two_owners_overlap_are_refused() {
        let ms = Duration::from_millis;
        assert!(LivenessTiming {
            heartbeat: ms(500),
            ttl: ms(2000),
            self_fence_after: ms(2000),
            poll: ms(250)
        }
        .check()
        .is_err());
        assert!(LivenessTiming {
            heartbeat: ms(900),
            ttl: ms(2000),
            self_fence_after: ms(1500),
            poll: ms(250)
        }
        .check()
        .is_err());
        assert!(LivenessTiming::from_heartbeat_and_ttl(ms(2000), ms(2000))
            .check()
            .is_err());
        assert_eq!(
            LivenessTiming::from_heartbeat_and_ttl(ms(100), ms(1000)).check(),
            Ok(())
        );
    }
}
