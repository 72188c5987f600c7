//! Client listeners (reference §10): registrations per cache, and the dispatcher that turns the
//! store's committed changes (from every replica) into event frames on listener connections.
//!
//! A slow listener never blocks writers: the dispatcher only ever `try_send`s into a bounded
//! per-connection event queue, and a connection whose queue overflows is closed (the client
//! re-registers on reconnect, as it does after any failover).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, Notify};
use tracing::warn;

use ferrod_codec::event::{
    key_value_version_payload, key_value_with_previous_payload, WrappedContent,
};
use ferrod_codec::{CacheEvent, EventKind, EventPayload};
use ferrod_store::{ChangeEvent, ChangeKind, EntrySnapshot, Store};

/// The converter Keycloak's session-expiration listener names: the event carries key, value and version.
pub const KEY_VALUE_VERSION_CONVERTER: &str = "___eager-key-value-version-converter";
/// Infinispan's built-in converter (what JCache over HotRod registers): the event carries a
/// protostream `KeyValueWithPrevious` (key, new value, previous value).
pub const KEY_VALUE_WITH_PREVIOUS_CONVERTER: &str = "key-value-with-previous-converter-factory";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    None,
    KeyValueVersion,
    KeyValueWithPrevious(WrappedContent),
}

impl Converter {
    /// `value_media_type` is the cache's: in a protostream cache (or one that does not say,
    /// where the Java client writes protostream) the stored bytes are embedded as they are.
    pub fn by_name(name: &str, value_media_type: &str) -> Option<Converter> {
        match name {
            KEY_VALUE_VERSION_CONVERTER => Some(Converter::KeyValueVersion),
            KEY_VALUE_WITH_PREVIOUS_CONVERTER => {
                let content =
                    if value_media_type.is_empty() || value_media_type.contains("protostream") {
                        WrappedContent::Protostream
                    } else {
                        WrappedContent::Bytes
                    };
                Some(Converter::KeyValueWithPrevious(content))
            }
            _ => None,
        }
    }
}

/// The side of a connection listeners use: its event queue and a way to close it.
#[derive(Clone)]
pub struct EventSink {
    pub events: mpsc::Sender<CacheEvent>,
    pub overflow: Arc<Notify>,
}

pub struct Listener {
    pub id: Bytes,
    pub cache: String,
    /// Interest bits (2.6+); 0 = every kind.
    pub interests: u32,
    pub converter: Converter,
    pub use_raw_data: bool,
    pub sink: EventSink,
    /// Which connection registered it, so a connection removes only its own listeners.
    pub connection_id: u64,
    /// includeCurrentState listeners only: what the initial state showed, so live events it
    /// already covered are not delivered a second time (see [`InitialState`]).
    pub initial: Option<Mutex<InitialState>>,
}

/// The hand-over from an includeCurrentState snapshot to live events.
///
/// A committed write is in memory before its event is published (on PostgreSQL the event waits
/// for the change-feed follower to reach its change row), so a snapshot taken in between shows
/// the write and the live event for it still comes. And a change published while the snapshot
/// is being taken and sent must not be delivered before the snapshot's events.
///
/// So the listener is registered *before* the snapshot, holding its live events; the snapshot
/// records each key's version; the connection releases the held events once the initial-state
/// events and the response are queued. Every live event (held or later) of a key in the
/// snapshot is dropped when the snapshot already covers it: an older version of any kind, or
/// the snapshot's version itself created/modified (a removal or expiration carrying the
/// snapshot's version is the removal of that entry, so it is news). Per key, events arrive in
/// commit order, so once one newer than the snapshot passed, the key is forgotten.
#[derive(Default)]
pub struct InitialState {
    /// `Some` until the connection queued the initial-state events and the response.
    held: Option<Vec<(EventKind, Arc<ChangeEvent>)>>,
    versions: HashMap<Bytes, i64>,
}

impl InitialState {
    pub fn holding() -> InitialState {
        InitialState {
            held: Some(Vec::new()),
            versions: HashMap::new(),
        }
    }

    /// Whether the snapshot already told the listener about this change; forgets the key once a
    /// newer change of it passes.
    fn covers(&mut self, kind: EventKind, change: &ChangeEvent) -> bool {
        let Some(&seen) = self.versions.get(&change.key) else {
            return false;
        };
        let older = change.version != 0 && change.version < seen;
        let same =
            change.version == seen && matches!(kind, EventKind::Created | EventKind::Modified);
        if older || same {
            return true;
        }
        self.versions.remove(&change.key);
        false
    }
}

impl Listener {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.interests == 0 || self.interests & kind.interest_bit() != 0
    }

    /// The frame this listener gets for a change; `message_id` is 0 for live events and the
    /// ADD_CLIENT_LISTENER id for initial-state events (§10.3).
    pub fn event(
        &self,
        message_id: u64,
        kind: EventKind,
        key: &Bytes,
        version: i64,
        value: Option<&Bytes>,
        previous: Option<&Bytes>,
    ) -> CacheEvent {
        let payload = match self.converter {
            Converter::None => EventPayload::Plain {
                key: key.clone(),
                version: matches!(kind, EventKind::Created | EventKind::Modified)
                    .then_some(version),
            },
            Converter::KeyValueVersion => EventPayload::Custom {
                raw: self.use_raw_data,
                data: key_value_version_payload(key, value.map(|v| (&v[..], version))),
            },
            Converter::KeyValueWithPrevious(content) => {
                // Like Infinispan's converter: (key, new value, old value); a removal has no
                // new value, only the removed one as the previous.
                let (value, previous) = match kind {
                    EventKind::Removed => (None, previous.or(value)),
                    _ => (value, previous),
                };
                EventPayload::Custom {
                    raw: self.use_raw_data,
                    data: key_value_with_previous_payload(
                        key,
                        value.map(|v| &v[..]),
                        previous.map(|v| &v[..]),
                        content,
                    ),
                }
            }
        };
        CacheEvent {
            message_id,
            kind,
            listener_id: self.id.clone(),
            retried: false,
            payload,
        }
    }

    fn initial_state(&self) -> Option<std::sync::MutexGuard<'_, InitialState>> {
        self.initial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Initial-state event for an existing entry (includeCurrentState); remembers its version
    /// so the live event of the same change is not delivered again.
    pub fn initial_event(&self, message_id: u64, key: &Bytes, e: &EntrySnapshot) -> CacheEvent {
        if let Some(mut st) = self.initial_state() {
            st.versions.insert(key.clone(), e.version);
        }
        self.event(
            message_id,
            EventKind::Created,
            key,
            e.version,
            Some(&e.value),
            None,
        )
    }
}

impl Listener {
    fn send_live(&self, kind: EventKind, change: &ChangeEvent) {
        let frame = self.event(
            0,
            kind,
            &change.key,
            change.version,
            change.value.as_ref(),
            change.previous.as_ref(),
        );
        if self.sink.events.try_send(frame).is_err() {
            // Full (or the connection is already gone): close it rather than block or drop
            // events silently.
            self.sink.overflow.notify_one();
        }
    }

    /// Called once the initial-state events and the ADD response are queued on the connection
    /// (responses are written before events queued after them): delivers the live events held
    /// meanwhile that the snapshot did not cover, and from now on delivers directly.
    pub fn release_held(&self) {
        let Some(mut st) = self.initial_state() else {
            return;
        };
        let held = st.held.take().unwrap_or_default();
        for (kind, change) in held {
            if !st.covers(kind, &change) {
                self.send_live(kind, &change);
            }
        }
    }
}

#[derive(Default)]
pub struct ListenerRegistry {
    by_cache: RwLock<HashMap<String, Vec<Arc<Listener>>>>,
}

impl ListenerRegistry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Arc<Listener>>>> {
        self.by_cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Arc<Listener>>>> {
        self.by_cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` when a listener with this id is already registered on the cache.
    pub fn add(&self, listener: Listener) -> Option<Arc<Listener>> {
        let mut map = self.write();
        let list = map.entry(listener.cache.clone()).or_default();
        if list.iter().any(|l| l.id == listener.id) {
            return None;
        }
        let listener = Arc::new(listener);
        list.push(listener.clone());
        Some(listener)
    }

    pub fn remove(&self, cache: &str, id: &[u8], connection_id: u64) -> bool {
        let mut map = self.write();
        let Some(list) = map.get_mut(cache) else {
            return false;
        };
        let before = list.len();
        list.retain(|l| !(l.id == id && l.connection_id == connection_id));
        let removed = list.len() != before;
        if list.is_empty() {
            map.remove(cache);
        }
        removed
    }

    /// Listeners die with their connection.
    pub fn remove_connection(&self, connection_id: u64) {
        let mut map = self.write();
        map.retain(|_, list| {
            list.retain(|l| l.connection_id != connection_id);
            !list.is_empty()
        });
    }

    pub fn count(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }

    /// Delivers one committed change to every interested listener of its cache. Writes made
    /// with SKIP_LISTENER_NOTIFICATION and whole-cache changes are not for listeners: a CLEAR
    /// raises no client events in Infinispan (its `ClearCommand` notifies nobody).
    pub fn deliver(&self, change: &Arc<ChangeEvent>) {
        if !change.listener_notification {
            return;
        }
        let kind = match change.kind {
            ChangeKind::Created => EventKind::Created,
            ChangeKind::Modified => EventKind::Modified,
            ChangeKind::Removed => EventKind::Removed,
            ChangeKind::Expired => EventKind::Expired,
            ChangeKind::Cleared | ChangeKind::Reloaded => return,
        };
        let map = self.read();
        let Some(list) = map.get(&change.cache) else {
            return;
        };
        for l in list.iter().filter(|l| l.wants(kind)) {
            if let Some(mut st) = l.initial_state() {
                if st.covers(kind, change) {
                    continue;
                }
                if let Some(held) = &mut st.held {
                    held.push((kind, change.clone()));
                    continue;
                }
            }
            l.send_live(kind, change);
        }
    }

    /// Every listener connection is closed: used when the dispatcher itself fell behind the
    /// store's change stream, so listeners cannot be told the truth any more.
    fn close_all(&self) {
        for list in self.read().values() {
            for l in list {
                l.sink.overflow.notify_one();
            }
        }
    }
}

/// Forwards the store's committed changes to listeners until the store's stream ends.
pub async fn dispatch(store: Store, registry: Arc<ListenerRegistry>) {
    let mut rx = store.subscribe();
    loop {
        match rx.recv().await {
            Ok(change) => registry.deliver(&change),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    "listener dispatcher fell behind by {n} changes; closing listener connections"
                );
                registry.close_all();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
