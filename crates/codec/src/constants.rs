//! Op codes, status codes, flags and versions (reference §4, §5, §8).

pub mod version {
    pub const V20: u8 = 20;
    pub const V21: u8 = 21;
    pub const V22: u8 = 22;
    pub const V23: u8 = 23;
    pub const V24: u8 = 24;
    pub const V25: u8 = 25;
    pub const V26: u8 = 26;
    pub const V27: u8 = 27;
    pub const V28: u8 = 28;
    pub const V29: u8 = 29;
    pub const V30: u8 = 30;
    pub const V31: u8 = 31;
    pub const V40: u8 = 40;
    pub const V41: u8 = 41;

    /// Versions a request may carry. 1.x frames (which have an extra tx marker) are rejected.
    pub fn is_supported(v: u8) -> bool {
        matches!(v, 20..=29 | 30 | 31 | 40 | 41)
    }
}

pub mod status {
    pub const SUCCESS: u8 = 0x00;
    pub const NOT_EXECUTED: u8 = 0x01;
    pub const KEY_DOES_NOT_EXIST: u8 = 0x02;
    pub const SUCCESS_WITH_PREVIOUS: u8 = 0x03;
    pub const NOT_EXECUTED_WITH_PREVIOUS: u8 = 0x04;
    pub const INVALID_ITERATION: u8 = 0x05;
    /// 2.4-2.8 only, for caches storing application/x-java-object (§4, §7.3).
    pub const SUCCESS_OBJ_STORAGE: u8 = 0x06;
    pub const SUCCESS_WITH_PREVIOUS_OBJ_STORAGE: u8 = 0x07;
    pub const NOT_EXECUTED_WITH_PREVIOUS_OBJ_STORAGE: u8 = 0x08;
    pub const INVALID_MAGIC_OR_MESSAGE_ID: u8 = 0x81;
    pub const UNKNOWN_OPERATION: u8 = 0x82;
    pub const UNKNOWN_VERSION: u8 = 0x83;
    pub const PARSE_ERROR: u8 = 0x84;
    pub const SERVER_ERROR: u8 = 0x85;
    pub const OPERATION_TIMED_OUT: u8 = 0x86;
    pub const NODE_SUSPECTED: u8 = 0x87;
    pub const ILLEGAL_LIFECYCLE_STATE: u8 = 0x88;

    pub fn is_error(s: u8) -> bool {
        s >= 0x81
    }
}

pub mod flags {
    pub const FORCE_RETURN_VALUE: u32 = 0x0001;
    pub const DEFAULT_LIFESPAN: u32 = 0x0002;
    pub const DEFAULT_MAXIDLE: u32 = 0x0004;
    pub const SKIP_CACHE_LOAD: u32 = 0x0008;
    pub const SKIP_INDEXING: u32 = 0x0010;
    pub const SKIP_LISTENER_NOTIFICATION: u32 = 0x0020;
}

pub mod op {
    pub const PUT: u8 = 0x01;
    pub const GET: u8 = 0x03;
    pub const PUT_IF_ABSENT: u8 = 0x05;
    pub const REPLACE: u8 = 0x07;
    pub const REPLACE_IF_UNMODIFIED: u8 = 0x09;
    pub const REMOVE: u8 = 0x0B;
    pub const REMOVE_IF_UNMODIFIED: u8 = 0x0D;
    pub const CONTAINS_KEY: u8 = 0x0F;
    pub const GET_WITH_VERSION: u8 = 0x11;
    pub const CLEAR: u8 = 0x13;
    pub const STATS: u8 = 0x15;
    pub const PING: u8 = 0x17;
    pub const BULK_GET: u8 = 0x19;
    pub const GET_WITH_METADATA: u8 = 0x1B;
    pub const BULK_GET_KEYS: u8 = 0x1D;
    pub const QUERY: u8 = 0x1F;
    pub const AUTH_MECH_LIST: u8 = 0x21;
    pub const AUTH: u8 = 0x23;
    pub const ADD_CLIENT_LISTENER: u8 = 0x25;
    pub const REMOVE_CLIENT_LISTENER: u8 = 0x27;
    pub const SIZE: u8 = 0x29;
    pub const EXEC: u8 = 0x2B;
    pub const PUT_ALL: u8 = 0x2D;
    pub const GET_ALL: u8 = 0x2F;
    pub const ITERATION_START: u8 = 0x31;
    pub const ITERATION_NEXT: u8 = 0x33;
    pub const ITERATION_END: u8 = 0x35;
    pub const GET_STREAM: u8 = 0x37;
    pub const PUT_STREAM: u8 = 0x39;
    pub const PREPARE_TX: u8 = 0x3B;
    pub const COMMIT_TX: u8 = 0x3D;
    pub const ROLLBACK_TX: u8 = 0x3F;
    pub const ADD_BLOOM_FILTER_LISTENER: u8 = 0x41;
    pub const UPDATE_BLOOM_FILTER: u8 = 0x43;
    pub const COUNTER_CREATE: u8 = 0x4B;
    pub const COUNTER_GET_CONFIGURATION: u8 = 0x4D;
    pub const COUNTER_IS_DEFINED: u8 = 0x4F;
    pub const COUNTER_ADD_AND_GET: u8 = 0x52;
    pub const COUNTER_RESET: u8 = 0x54;
    pub const COUNTER_GET: u8 = 0x56;
    pub const COUNTER_CAS: u8 = 0x58;
    pub const COUNTER_ADD_LISTENER: u8 = 0x5A;
    pub const COUNTER_REMOVE_LISTENER: u8 = 0x5C;
    pub const COUNTER_REMOVE: u8 = 0x5E;
    pub const COUNTER_GET_NAMES: u8 = 0x64;
    pub const GET_MULTIMAP: u8 = 0x67;
    pub const GET_MULTIMAP_WITH_METADATA: u8 = 0x69;
    pub const PUT_MULTIMAP: u8 = 0x6B;
    pub const REMOVE_KEY_MULTIMAP: u8 = 0x6D;
    pub const REMOVE_ENTRY_MULTIMAP: u8 = 0x6F;
    pub const SIZE_MULTIMAP: u8 = 0x71;
    pub const CONTAINS_ENTRY_MULTIMAP: u8 = 0x73;
    pub const CONTAINS_KEY_MULTIMAP: u8 = 0x75;
    pub const CONTAINS_VALUE_MULTIMAP: u8 = 0x77;
    pub const FORGET_TX: u8 = 0x79;
    pub const FETCH_TX_RECOVERY: u8 = 0x7B;
    pub const PREPARE_TX_2: u8 = 0x7D;
    pub const COUNTER_GET_AND_SET: u8 = 0x7F;
    pub const START_PUT_STREAM: u8 = 0xEF;
    pub const NEXT_PUT_STREAM: u8 = 0xED;
    pub const END_PUT_STREAM: u8 = 0xEB;
    pub const START_GET_STREAM: u8 = 0xE9;
    pub const NEXT_GET_STREAM: u8 = 0xE7;
    pub const END_GET_STREAM: u8 = 0xE5;

    pub const ERROR_RESPONSE: u8 = 0x50;
    pub const CACHE_ENTRY_CREATED_EVENT: u8 = 0x60;
    pub const CACHE_ENTRY_MODIFIED_EVENT: u8 = 0x61;
    pub const CACHE_ENTRY_REMOVED_EVENT: u8 = 0x62;
    pub const CACHE_ENTRY_EXPIRED_EVENT: u8 = 0x63;
    pub const COUNTER_EVENT: u8 = 0x66;

    /// Every request op code of the reference's table, in table order.
    pub const ALL_REQUESTS: &[u8] = &[
        PUT,
        GET,
        PUT_IF_ABSENT,
        REPLACE,
        REPLACE_IF_UNMODIFIED,
        REMOVE,
        REMOVE_IF_UNMODIFIED,
        CONTAINS_KEY,
        GET_WITH_VERSION,
        CLEAR,
        STATS,
        PING,
        BULK_GET,
        GET_WITH_METADATA,
        BULK_GET_KEYS,
        QUERY,
        AUTH_MECH_LIST,
        AUTH,
        ADD_CLIENT_LISTENER,
        REMOVE_CLIENT_LISTENER,
        SIZE,
        EXEC,
        PUT_ALL,
        GET_ALL,
        ITERATION_START,
        ITERATION_NEXT,
        ITERATION_END,
        GET_STREAM,
        PUT_STREAM,
        PREPARE_TX,
        COMMIT_TX,
        ROLLBACK_TX,
        ADD_BLOOM_FILTER_LISTENER,
        UPDATE_BLOOM_FILTER,
        COUNTER_CREATE,
        COUNTER_GET_CONFIGURATION,
        COUNTER_IS_DEFINED,
        COUNTER_ADD_AND_GET,
        COUNTER_RESET,
        COUNTER_GET,
        COUNTER_CAS,
        COUNTER_ADD_LISTENER,
        COUNTER_REMOVE_LISTENER,
        COUNTER_REMOVE,
        COUNTER_GET_NAMES,
        GET_MULTIMAP,
        GET_MULTIMAP_WITH_METADATA,
        PUT_MULTIMAP,
        REMOVE_KEY_MULTIMAP,
        REMOVE_ENTRY_MULTIMAP,
        SIZE_MULTIMAP,
        CONTAINS_ENTRY_MULTIMAP,
        CONTAINS_KEY_MULTIMAP,
        CONTAINS_VALUE_MULTIMAP,
        FORGET_TX,
        FETCH_TX_RECOVERY,
        PREPARE_TX_2,
        COUNTER_GET_AND_SET,
        START_PUT_STREAM,
        NEXT_PUT_STREAM,
        END_PUT_STREAM,
        START_GET_STREAM,
        NEXT_GET_STREAM,
        END_GET_STREAM,
    ];

    /// The response op code for a request op code: normally request+1, with the exceptions of §8.
    pub fn response_for(request: u8) -> u8 {
        match request {
            COUNTER_IS_DEFINED => 0x51,
            COUNTER_GET_AND_SET => 0x80,
            0xE4..=0xEF => request - 1,
            other => other.wrapping_add(1),
        }
    }

    pub fn name(code: u8) -> &'static str {
        match code {
            PUT => "PUT",
            GET => "GET",
            PUT_IF_ABSENT => "PUT_IF_ABSENT",
            REPLACE => "REPLACE",
            REPLACE_IF_UNMODIFIED => "REPLACE_IF_UNMODIFIED",
            REMOVE => "REMOVE",
            REMOVE_IF_UNMODIFIED => "REMOVE_IF_UNMODIFIED",
            CONTAINS_KEY => "CONTAINS_KEY",
            GET_WITH_VERSION => "GET_WITH_VERSION",
            CLEAR => "CLEAR",
            STATS => "STATS",
            PING => "PING",
            BULK_GET => "BULK_GET",
            GET_WITH_METADATA => "GET_WITH_METADATA",
            BULK_GET_KEYS => "BULK_GET_KEYS",
            QUERY => "QUERY",
            AUTH_MECH_LIST => "AUTH_MECH_LIST",
            AUTH => "AUTH",
            ADD_CLIENT_LISTENER => "ADD_CLIENT_LISTENER",
            REMOVE_CLIENT_LISTENER => "REMOVE_CLIENT_LISTENER",
            SIZE => "SIZE",
            EXEC => "EXEC",
            PUT_ALL => "PUT_ALL",
            GET_ALL => "GET_ALL",
            ITERATION_START => "ITERATION_START",
            ITERATION_NEXT => "ITERATION_NEXT",
            ITERATION_END => "ITERATION_END",
            GET_STREAM => "GET_STREAM",
            PUT_STREAM => "PUT_STREAM",
            PREPARE_TX => "PREPARE_TX",
            COMMIT_TX => "COMMIT_TX",
            ROLLBACK_TX => "ROLLBACK_TX",
            ADD_BLOOM_FILTER_LISTENER => "ADD_BLOOM_FILTER_NEAR_CACHE_LISTENER",
            UPDATE_BLOOM_FILTER => "UPDATE_BLOOM_FILTER",
            COUNTER_CREATE => "COUNTER_CREATE",
            COUNTER_GET_CONFIGURATION => "COUNTER_GET_CONFIGURATION",
            COUNTER_IS_DEFINED => "COUNTER_IS_DEFINED",
            COUNTER_ADD_AND_GET => "COUNTER_ADD_AND_GET",
            COUNTER_RESET => "COUNTER_RESET",
            COUNTER_GET => "COUNTER_GET",
            COUNTER_CAS => "COUNTER_CAS",
            COUNTER_ADD_LISTENER => "COUNTER_ADD_LISTENER",
            COUNTER_REMOVE_LISTENER => "COUNTER_REMOVE_LISTENER",
            COUNTER_REMOVE => "COUNTER_REMOVE",
            COUNTER_GET_NAMES => "COUNTER_GET_NAMES",
            GET_MULTIMAP => "GET_MULTIMAP",
            GET_MULTIMAP_WITH_METADATA => "GET_MULTIMAP_WITH_METADATA",
            PUT_MULTIMAP => "PUT_MULTIMAP",
            REMOVE_KEY_MULTIMAP => "REMOVE_KEY_MULTIMAP",
            REMOVE_ENTRY_MULTIMAP => "REMOVE_ENTRY_MULTIMAP",
            SIZE_MULTIMAP => "SIZE_MULTIMAP",
            CONTAINS_ENTRY_MULTIMAP => "CONTAINS_ENTRY_MULTIMAP",
            CONTAINS_KEY_MULTIMAP => "CONTAINS_KEY_MULTIMAP",
            CONTAINS_VALUE_MULTIMAP => "CONTAINS_VALUE_MULTIMAP",
            FORGET_TX => "FORGET_TX",
            FETCH_TX_RECOVERY => "FETCH_TX_RECOVERY",
            PREPARE_TX_2 => "PREPARE_TX_2",
            COUNTER_GET_AND_SET => "COUNTER_GET_AND_SET",
            START_PUT_STREAM => "START_PUT_STREAM",
            NEXT_PUT_STREAM => "NEXT_PUT_STREAM",
            END_PUT_STREAM => "END_PUT_STREAM",
            START_GET_STREAM => "START_GET_STREAM",
            NEXT_GET_STREAM => "NEXT_GET_STREAM",
            END_GET_STREAM => "END_GET_STREAM",
            _ => "UNKNOWN",
        }
    }
}
