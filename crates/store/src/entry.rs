//! Entry representations and the one expiration rule everything shares.

use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;

use crate::EntrySnapshot;

/// The single definition of "expired", used by reads, by the writer when deciding conditional
/// ops, and (through [`expires_at`]) by the SQL sweep, so that they can never disagree.
pub(crate) fn is_expired(
    created_ms: i64,
    lifespan_ms: i64,
    last_used_ms: i64,
    max_idle_ms: i64,
    now: i64,
) -> bool {
    match expires_at(created_ms, lifespan_ms, last_used_ms, max_idle_ms) {
        Some(at) => now >= at,
        None => false,
    }
}

/// The instant an entry expires, or `None` if it never does. Stored in SQL (`expires_ms`,
/// indexed) so the reaper finds expired rows without scanning the table.
pub(crate) fn expires_at(
    created_ms: i64,
    lifespan_ms: i64,
    last_used_ms: i64,
    max_idle_ms: i64,
) -> Option<i64> {
    let by_lifespan = (lifespan_ms >= 0).then(|| created_ms.saturating_add(lifespan_ms));
    let by_idle = (max_idle_ms >= 0).then(|| last_used_ms.saturating_add(max_idle_ms));
    match (by_lifespan, by_idle) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The in-memory replica of one row. `last_used_ms` is atomic because reads touch it through a
/// shared map guard without going through the writer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub value: Bytes,
    pub version: i64,
    pub created_ms: i64,
    pub lifespan_ms: i64,
    pub max_idle_ms: i64,
    pub last_used_ms: AtomicI64,
}

impl Entry {
    pub fn is_expired(&self, now: i64) -> bool {
        is_expired(
            self.created_ms,
            self.lifespan_ms,
            self.last_used_ms.load(Ordering::Relaxed),
            self.max_idle_ms,
            now,
        )
    }

    /// Expired only because of max-idle by this process's clock (the lifespan has not passed):
    /// another replica may have kept it alive, which only SQL knows.
    pub fn is_idle_expired_only(&self, now: i64) -> bool {
        let lifespan_alive =
            self.lifespan_ms < 0 || now < self.created_ms.saturating_add(self.lifespan_ms);
        self.max_idle_ms >= 0 && lifespan_alive
    }

    pub fn snapshot(&self) -> EntrySnapshot {
        EntrySnapshot {
            value: self.value.clone(),
            version: self.version,
            created_ms: self.created_ms,
            lifespan_ms: self.lifespan_ms,
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
            max_idle_ms: self.max_idle_ms,
        }
    }

    /// Builds the memory copy of a committed row. The value is shared, not copied: every row
    /// reaching memory holds a value of its own (read from SQL, or copied out of the
    /// connection's read buffer by the writer), never a slice pinning a client's buffer.
    pub fn from_row(row: &Row) -> Entry {
        Entry {
            value: row.value.clone(),
            version: row.version,
            created_ms: row.created_ms,
            lifespan_ms: row.lifespan_ms,
            max_idle_ms: row.max_idle_ms,
            last_used_ms: AtomicI64::new(row.last_used_ms),
        }
    }
}

/// A row as the writer sees it inside a transaction.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub value: Bytes,
    pub version: i64,
    pub created_ms: i64,
    pub lifespan_ms: i64,
    pub last_used_ms: i64,
    pub max_idle_ms: i64,
}

impl Row {
    pub fn is_expired(&self, now: i64) -> bool {
        is_expired(
            self.created_ms,
            self.lifespan_ms,
            self.last_used_ms,
            self.max_idle_ms,
            now,
        )
    }

    pub fn expires_at(&self) -> Option<i64> {
        expires_at(
            self.created_ms,
            self.lifespan_ms,
            self.last_used_ms,
            self.max_idle_ms,
        )
    }

    pub fn snapshot(&self) -> EntrySnapshot {
        EntrySnapshot {
            value: self.value.clone(),
            version: self.version,
            created_ms: self.created_ms,
            lifespan_ms: self.lifespan_ms,
            last_used_ms: self.last_used_ms,
            max_idle_ms: self.max_idle_ms,
        }
    }
}

/// Row metadata without the value: what the writer locks and decides on. The value is taken
/// from memory when the versions match (the common case) so large values are not read back
/// from SQL on every overwrite.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowMeta {
    pub version: i64,
    pub created_ms: i64,
    pub lifespan_ms: i64,
    pub last_used_ms: i64,
    pub max_idle_ms: i64,
}

impl RowMeta {
    pub fn with_value(self, value: Bytes) -> Row {
        Row {
            value,
            version: self.version,
            created_ms: self.created_ms,
            lifespan_ms: self.lifespan_ms,
            last_used_ms: self.last_used_ms,
            max_idle_ms: self.max_idle_ms,
        }
    }
}
