//! Lifespan / max-idle parameters (reference §6).

use bytes::{BufMut, BytesMut};

use crate::constants::{flags, version};
use crate::error::DecodeError;
use crate::primitives::{put_vint, put_vlong, Reader, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
    Nanoseconds,
    Microseconds,
    Minutes,
    Hours,
    Days,
}

impl TimeUnit {
    fn nibble(self) -> u8 {
        match self {
            TimeUnit::Seconds => 0,
            TimeUnit::Milliseconds => 1,
            TimeUnit::Nanoseconds => 2,
            TimeUnit::Microseconds => 3,
            TimeUnit::Minutes => 4,
            TimeUnit::Hours => 5,
            TimeUnit::Days => 6,
        }
    }

    /// Converts to milliseconds, saturating; sub-millisecond amounts round down like
    /// `TimeUnit.toMillis` does.
    pub fn to_millis(self, amount: u64) -> i64 {
        let ms: u128 = match self {
            TimeUnit::Seconds => amount as u128 * 1000,
            TimeUnit::Milliseconds => amount as u128,
            TimeUnit::Nanoseconds => amount as u128 / 1_000_000,
            TimeUnit::Microseconds => amount as u128 / 1000,
            TimeUnit::Minutes => amount as u128 * 60_000,
            TimeUnit::Hours => amount as u128 * 3_600_000,
            TimeUnit::Days => amount as u128 * 86_400_000,
        };
        ms.min(i64::MAX as u128) as i64
    }
}

/// One of lifespan or max-idle as carried by a 2.2+ request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    /// Nibble 7: the cache's configured default.
    Default,
    /// Nibble 8: never.
    Infinite,
    Amount(u64, TimeUnit),
}

impl Duration {
    fn nibble(self) -> u8 {
        match self {
            Duration::Default => 7,
            Duration::Infinite => 8,
            Duration::Amount(_, u) => u.nibble(),
        }
    }
}

/// The expiration block exactly as it was on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    /// 2.0 and 2.1: vInt seconds each; <= 0 means "default" with the DEFAULT_* flag, else immortal.
    Seconds { lifespan: i32, max_idle: i32 },
    /// 2.2 and later: a time-units byte then the amounts that have a real unit.
    Units {
        lifespan: Duration,
        max_idle: Duration,
    },
}

/// A resolved lifespan or max-idle, what the store works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Default,
    Infinite,
    Millis(i64),
}

/// 30 days in ms: in 2.x, longer durations are read as Unix times (§6).
const THIRTY_DAYS_MS: i64 = 30 * 24 * 3600 * 1000;

impl Expiration {
    pub const DEFAULT: Expiration = Expiration::Units {
        lifespan: Duration::Default,
        max_idle: Duration::Default,
    };

    pub fn read(r: &mut Reader<'_>, version: u8) -> Result<Expiration> {
        if version < version::V22 {
            return Ok(Expiration::Seconds {
                lifespan: r.vint()? as i32,
                max_idle: r.vint()? as i32,
            });
        }
        let units = r.u8()?;
        let lifespan = read_duration(r, units >> 4)?;
        let max_idle = read_duration(r, units & 0x0F)?;
        Ok(Expiration::Units { lifespan, max_idle })
    }

    pub fn write(&self, buf: &mut BytesMut, version: u8) {
        match *self {
            Expiration::Seconds { lifespan, max_idle } if version < version::V22 => {
                put_vint(buf, lifespan as u32);
                put_vint(buf, max_idle as u32);
            }
            Expiration::Seconds { lifespan, max_idle } => {
                let conv = |s: i32| {
                    if s > 0 {
                        Duration::Amount(s as u64, TimeUnit::Seconds)
                    } else {
                        Duration::Default
                    }
                };
                Expiration::Units {
                    lifespan: conv(lifespan),
                    max_idle: conv(max_idle),
                }
                .write(buf, version)
            }
            Expiration::Units { lifespan, max_idle } if version < version::V22 => {
                let secs = |d: Duration| match d {
                    Duration::Amount(a, u) => (u.to_millis(a) / 1000).min(i32::MAX as i64) as i32,
                    Duration::Default => 0,
                    Duration::Infinite => -1,
                };
                put_vint(buf, secs(lifespan) as u32);
                put_vint(buf, secs(max_idle) as u32);
            }
            Expiration::Units { lifespan, max_idle } => {
                buf.put_u8((lifespan.nibble() << 4) | max_idle.nibble());
                if let Duration::Amount(a, _) = lifespan {
                    put_vlong(buf, a);
                }
                if let Duration::Amount(a, _) = max_idle {
                    put_vlong(buf, a);
                }
            }
        }
    }

    /// Resolves to (lifespan, max-idle) in ms with the per-version rules: the DEFAULT_* flags of
    /// 2.0/2.1 and the "longer than 30 days is a Unix time" rule of 2.x (`now_ms` is the
    /// server clock).
    pub fn resolve(&self, version: u8, request_flags: u32, now_ms: i64) -> (Expiry, Expiry) {
        let unix_rule = version < version::V30;
        let fix = |ms: i64| -> Expiry {
            if unix_rule && ms > THIRTY_DAYS_MS {
                // An absolute Unix time in the past means "already expired": keep it mortal.
                Expiry::Millis((ms - now_ms).max(1))
            } else {
                Expiry::Millis(ms)
            }
        };
        match *self {
            Expiration::Seconds { lifespan, max_idle } => {
                let one = |v: i32, flag: u32| {
                    if v > 0 {
                        fix(v as i64 * 1000)
                    } else if request_flags & flag != 0 {
                        Expiry::Default
                    } else {
                        Expiry::Infinite
                    }
                };
                (
                    one(lifespan, flags::DEFAULT_LIFESPAN),
                    one(max_idle, flags::DEFAULT_MAXIDLE),
                )
            }
            Expiration::Units { lifespan, max_idle } => {
                let one = |d: Duration| match d {
                    Duration::Default => Expiry::Default,
                    Duration::Infinite => Expiry::Infinite,
                    Duration::Amount(a, u) => fix(u.to_millis(a)),
                };
                (one(lifespan), one(max_idle))
            }
        }
    }
}

fn read_duration(r: &mut Reader<'_>, nibble: u8) -> Result<Duration> {
    let unit = match nibble {
        0 => TimeUnit::Seconds,
        1 => TimeUnit::Milliseconds,
        2 => TimeUnit::Nanoseconds,
        3 => TimeUnit::Microseconds,
        4 => TimeUnit::Minutes,
        5 => TimeUnit::Hours,
        6 => TimeUnit::Days,
        7 => return Ok(Duration::Default),
        8 => return Ok(Duration::Infinite),
        other => return Err(DecodeError::malformed(format!("unknown time unit {other}"))),
    };
    Ok(Duration::Amount(r.vlong()?, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloak_work_cache_put_is_07_78() {
        // put(k, v, 120, SECONDS): lifespan SECONDS, maxIdle DEFAULT, then vLong 120 (§6).
        let e = Expiration::Units {
            lifespan: Duration::Amount(120, TimeUnit::Seconds),
            max_idle: Duration::Default,
        };
        let mut b = BytesMut::new();
        e.write(&mut b, 40);
        assert_eq!(b.to_vec(), [0x07, 0x78]);
        assert_eq!(Expiration::read(&mut Reader::new(&b, 16), 40).unwrap(), e);
        let mut b = BytesMut::new();
        Expiration::DEFAULT.write(&mut b, 40);
        assert_eq!(b.to_vec(), [0x77]);
    }

    #[test]
    fn v20_flags_pick_default_or_immortal() {
        let e = Expiration::Seconds {
            lifespan: 0,
            max_idle: 5,
        };
        assert_eq!(
            e.resolve(20, flags::DEFAULT_LIFESPAN, 0),
            (Expiry::Default, Expiry::Millis(5000))
        );
        assert_eq!(
            e.resolve(20, 0, 0),
            (Expiry::Infinite, Expiry::Millis(5000))
        );
    }

    #[test]
    fn unix_time_rule_only_before_30() {
        let now = 1_700_000_000_000;
        let e = Expiration::Units {
            lifespan: Duration::Amount(1_700_000_060, TimeUnit::Seconds),
            max_idle: Duration::Infinite,
        };
        assert_eq!(e.resolve(29, 0, now).0, Expiry::Millis(60_000));
        assert_eq!(e.resolve(30, 0, now).0, Expiry::Millis(1_700_000_060_000));
    }
}
