//! Message rate limits (per connection, and per address): a token bucket.

use std::time::Instant;

/// A bucket's refill rate and size.
#[derive(Clone, Copy)]
pub(crate) struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// A token bucket whose rate is kept elsewhere (one per socket would otherwise hold a
/// copy of the configured rate): each call passes it.
pub(crate) struct Tokens {
    tokens: f64,
    last: Instant,
}

impl Tokens {
    /// A full bucket.
    pub fn new(rate: Rate) -> Self {
        Self {
            tokens: rate.burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, rate: Rate) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + earned).min(rate.burst);
        self.last = now;
    }

    /// Whether the bucket has refilled to its burst.
    pub fn is_full(&mut self, rate: Rate) -> bool {
        self.refill(rate);
        self.tokens >= rate.burst
    }

    /// How long until the bucket holds a whole token (zero if it does).
    pub fn time_to_token(&mut self, rate: Rate) -> std::time::Duration {
        self.refill(rate);
        let missing = (1.0 - self.tokens).max(0.0);
        std::time::Duration::from_secs_f64(missing / rate.per_second)
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, rate: Rate) -> bool {
        self.refill(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket with its rate.
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: Tokens,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64) -> Self {
        let rate = Rate { per_second, burst };
        Self {
            rate,
            tokens: Tokens::new(rate),
        }
    }

    /// Whether the bucket has refilled to its burst.
    pub fn is_full(&mut self) -> bool {
        self.tokens.is_full(self.rate)
    }

    /// How long until the bucket holds a whole token (zero if it does).
    pub fn time_to_token(&mut self) -> std::time::Duration {
        self.tokens.time_to_token(self.rate)
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self) -> bool {
        self.tokens.take(self.rate)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burst_then_refuse() {
        let mut b = super::TokenBucket::new(1.0, 3.0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        let wait = b.time_to_token();
        assert!(
            wait > std::time::Duration::from_millis(900)
                && wait <= std::time::Duration::from_secs(1)
        );
    }
}
