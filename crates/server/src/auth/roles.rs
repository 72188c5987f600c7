//! Authorization as Infinispan does it: each role grants a set of permissions
//! (`AuthorizationPermission`), each operation needs one, and the default roles are
//! `GlobalAuthorizationConfiguration.DEFAULT_ROLES`.

use ferrod_codec::Request;

/// A set of `AuthorizationPermission` bits (same bit positions as upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Permissions(pub u32);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    pub const LIFECYCLE: Permissions = Permissions(1 << 0);
    pub const READ: Permissions = Permissions(1 << 1);
    pub const WRITE: Permissions = Permissions(1 << 2);
    pub const EXEC: Permissions = Permissions(1 << 3);
    pub const LISTEN: Permissions = Permissions(1 << 4);
    pub const BULK_READ: Permissions = Permissions(1 << 5);
    pub const BULK_WRITE: Permissions = Permissions(1 << 6);
    pub const ADMIN: Permissions = Permissions(1 << 7);
    pub const CREATE: Permissions = Permissions(1 << 8);
    pub const MONITOR: Permissions = Permissions(1 << 9);
    pub const ALL: Permissions = Permissions(u32::MAX);
    pub const ALL_READ: Permissions = Permissions(Self::READ.0 | Self::BULK_READ.0);
    pub const ALL_WRITE: Permissions = Permissions(Self::WRITE.0 | Self::BULK_WRITE.0);

    pub const fn union(self, o: Permissions) -> Permissions {
        Permissions(self.0 | o.0)
    }

    pub fn implies(self, needed: Permissions) -> bool {
        self.0 & needed.0 == needed.0
    }

    /// Upstream's name of a single permission, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Permissions::LIFECYCLE => "LIFECYCLE",
            Permissions::READ => "READ",
            Permissions::WRITE => "WRITE",
            Permissions::EXEC => "EXEC",
            Permissions::LISTEN => "LISTEN",
            Permissions::BULK_READ => "BULK_READ",
            Permissions::BULK_WRITE => "BULK_WRITE",
            Permissions::ADMIN => "ADMIN",
            Permissions::CREATE => "CREATE",
            Permissions::MONITOR => "MONITOR",
            Permissions::NONE => "NONE",
            _ => "ALL",
        }
    }
}

/// Infinispan's predefined roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Deployer,
    Application,
    Observer,
    Monitor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Deployer,
        Role::Application,
        Role::Observer,
        Role::Monitor,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Application => "application",
            Role::Observer => "observer",
            Role::Monitor => "monitor",
        }
    }

    pub fn permissions(self) -> Permissions {
        use Permissions as P;
        let application = P::ALL_READ
            .union(P::ALL_WRITE)
            .union(P::LISTEN)
            .union(P::EXEC)
            .union(P::MONITOR);
        match self {
            Role::Admin => P::ALL,
            Role::Deployer => application.union(P::CREATE),
            Role::Application => application,
            Role::Observer => P::ALL_READ.union(P::MONITOR),
            Role::Monitor => P::MONITOR,
        }
    }
}

pub fn permissions_of<'a>(roles: impl IntoIterator<Item = &'a Role>) -> Permissions {
    roles
        .into_iter()
        .fold(Permissions::NONE, |p, r| p.union(r.permissions()))
}

/// The permission an operation needs, following the checks upstream's cache and task layers make
/// (`SecureCacheImpl`, `DefaultCacheManagerAdmin`, the admin tasks). `None`: no check beyond
/// being authenticated.
pub fn required(req: &Request) -> Option<Permissions> {
    use Permissions as P;
    Some(match req {
        Request::Ping | Request::AuthMechList | Request::Auth { .. } => return None,
        Request::Get { .. }
        | Request::GetWithVersion { .. }
        | Request::GetWithMetadata { .. }
        | Request::ContainsKey { .. }
        | Request::GetAll { .. }
        | Request::GetStream { .. }
        | Request::StartGetStream { .. }
        | Request::NextGetStream { .. }
        | Request::EndGetStream { .. } => P::READ,
        Request::BulkGet { .. }
        | Request::BulkGetKeys { .. }
        | Request::Size
        | Request::Query { .. }
        | Request::IterationStart { .. }
        | Request::IterationNext { .. }
        | Request::IterationEnd { .. } => P::BULK_READ,
        Request::Put { .. }
        | Request::PutIfAbsent { .. }
        | Request::Replace { .. }
        | Request::ReplaceIfUnmodified { .. }
        | Request::Remove { .. }
        | Request::RemoveIfUnmodified { .. }
        | Request::PutAll { .. }
        | Request::PutStream { .. }
        | Request::StartPutStream { .. }
        | Request::NextPutStream { .. }
        | Request::EndPutStream { .. } => P::WRITE,
        Request::Clear => P::BULK_WRITE,
        Request::AddClientListener { .. } | Request::RemoveClientListener { .. } => P::LISTEN,
        Request::Stats => P::MONITOR,
        Request::Exec { task, .. } => return exec_permission(task),
        // Everything else (counters, transactions, multimaps) changes state somewhere: admins
        // only until each is served and mapped on its own.
        _ => P::ADMIN,
    })
}

/// The permission a request needs on the cache `cache`. Upstream gives the schema cache
/// (`ProtobufMetadataManagerImpl`'s `___protobuf_metadata` configuration) the
/// `CreatePermissionConfiguration` module, with which `AuthorizationManagerImpl.getWritePermission`
/// is CREATE instead of WRITE: every put, replace, remove and putAll there needs CREATE (roles
/// deployer and admin), so an application user cannot change the schemas. CLEAR is checked as
/// BULK_WRITE by `SecureCacheImpl.clear` on every cache, this one included; reads are unchanged.
pub fn required_on(cache: &str, req: &Request) -> Option<Permissions> {
    let needed = required(req)?;
    if cache == ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME && needed == Permissions::WRITE {
        return Some(Permissions::CREATE);
    }
    Some(needed)
}

/// Admin tasks check the cache manager's permissions (`DefaultCacheManagerAdmin`: CREATE for
/// creating or removing caches and templates; reindexing is an ADMIN operation on the cache);
/// any other task is a cache EXEC.
fn exec_permission(task: &str) -> Option<Permissions> {
    use Permissions as P;
    if !task.starts_with("@@") {
        return Some(P::EXEC);
    }
    Some(match task {
        // getAccessibleCacheNames: every authenticated user, filtered upstream by access.
        "@@cache@names" => return None,
        "@@cache@create"
        | "@@cache@getorcreate"
        | "@@cache@remove"
        | "@@template@create"
        | "@@template@remove"
        | "@@schemas@createOrUpdate"
        | "@@schemas@delete" => P::CREATE,
        _ => P::ADMIN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roles_match_upstream() {
        assert!(Role::Observer.permissions().implies(Permissions::BULK_READ));
        assert!(!Role::Observer.permissions().implies(Permissions::WRITE));
        assert!(!Role::Application.permissions().implies(Permissions::CREATE));
        assert!(Role::Deployer.permissions().implies(Permissions::CREATE));
        assert!(!Role::Deployer.permissions().implies(Permissions::ADMIN));
        assert!(Role::Monitor.permissions().implies(Permissions::MONITOR));
        assert!(!Role::Monitor.permissions().implies(Permissions::READ));
        assert!(Role::Admin.permissions().implies(Permissions::ADMIN));
    }

    #[test]
    fn schema_cache_writes_need_create_and_reads_and_clear_do_not() {
        use bytes::Bytes;
        use ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME as META;
        let put = Request::Put {
            key: Bytes::from_static(b"a.proto"),
            expiration: ferrod_codec::Expiration::DEFAULT,
            value: Bytes::from_static(b"x"),
        };
        let remove = Request::Remove {
            key: Bytes::from_static(b"a.proto"),
        };
        let get = Request::Get {
            key: Bytes::from_static(b"a.proto"),
        };
        assert_eq!(required_on(META, &put), Some(Permissions::CREATE));
        assert_eq!(required_on(META, &remove), Some(Permissions::CREATE));
        assert_eq!(required_on(META, &get), Some(Permissions::READ));
        assert_eq!(
            required_on(META, &Request::Clear),
            Some(Permissions::BULK_WRITE)
        );
        assert_eq!(required_on("sessions", &put), Some(Permissions::WRITE));
    }
}
