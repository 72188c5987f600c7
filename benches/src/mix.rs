//! Operation kinds and the weighted mix a run draws them from.

use std::fmt;
use std::str::FromStr;

/// One logical operation of the load. `Replace` is a read-then-replace pair on one connection
/// (GET_WITH_METADATA, then REPLACE_IF_UNMODIFIED with the version just read), the way Keycloak
/// updates a session; its latency covers both round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Get,
    Put,
    GetMeta,
    Replace,
    PutIfAbsent,
    Remove,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::GetMeta,
        OpKind::Replace,
        OpKind::PutIfAbsent,
        OpKind::Remove,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The short name used in `--mix` and in the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::GetMeta => "getm",
            OpKind::Replace => "replace",
            OpKind::PutIfAbsent => "pia",
            OpKind::Remove => "remove",
        }
    }

    /// The HotRod operation(s) behind the name, for the report.
    pub fn wire_ops(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Put => "PUT",
            OpKind::GetMeta => "GET_WITH_METADATA",
            OpKind::Replace => "GET_WITH_METADATA + REPLACE_IF_UNMODIFIED",
            OpKind::PutIfAbsent => "PUT_IF_ABSENT (lifespan, fresh key)",
            OpKind::Remove => "REMOVE",
        }
    }

    fn parse(s: &str) -> Option<OpKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "get" => OpKind::Get,
            "put" => OpKind::Put,
            "getm" | "get_with_metadata" | "getwithmetadata" => OpKind::GetMeta,
            "replace" | "replace_if_unmodified" | "replacewithversion" => OpKind::Replace,
            "pia" | "put_if_absent" | "putifabsent" => OpKind::PutIfAbsent,
            "remove" => OpKind::Remove,
            _ => return None,
        })
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A weighted choice of operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// `(kind, cumulative weight)`, in the order given.
    cumulative: Vec<(OpKind, u32)>,
    total: u32,
    spec: String,
}

impl Mix {
    pub fn from_weights(weights: &[(OpKind, u32)]) -> Result<Mix, String> {
        let mut cumulative = Vec::new();
        let mut total = 0u32;
        let mut spec = Vec::new();
        for &(kind, w) in weights {
            if w == 0 {
                continue;
            }
            if cumulative.iter().any(|&(k, _)| k == kind) {
                return Err(format!("operation {kind} listed twice"));
            }
            total = total
                .checked_add(w)
                .ok_or_else(|| "weights too large".to_string())?;
            cumulative.push((kind, total));
            spec.push(format!("{kind}={w}"));
        }
        if total == 0 {
            return Err("the mix has no operation with a weight above 0".into());
        }
        Ok(Mix {
            cumulative,
            total,
            spec: spec.join(","),
        })
    }

    /// The Keycloak-like mix: 60% reads with metadata, 20% read-then-replace-with-version,
    /// 10% putIfAbsent with a lifespan on fresh keys, 10% removes.
    pub fn keycloak() -> Mix {
        Mix::from_weights(&[
            (OpKind::GetMeta, 60),
            (OpKind::Replace, 20),
            (OpKind::PutIfAbsent, 10),
            (OpKind::Remove, 10),
        ])
        .expect("static mix")
    }

    /// Picks a kind for a uniformly random `r`.
    pub fn pick(&self, r: u64) -> OpKind {
        let x = (r % u64::from(self.total)) as u32;
        for &(kind, upto) in &self.cumulative {
            if x < upto {
                return kind;
            }
        }
        unreachable!("x < total")
    }

    pub fn contains(&self, kind: OpKind) -> bool {
        self.cumulative.iter().any(|&(k, _)| k == kind)
    }

    /// Normalised spec, e.g. `getm=60,replace=20,pia=10,remove=10`.
    pub fn spec(&self) -> &str {
        &self.spec
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `get`, `put`, `keycloak`, or weights like `get=60,put=40` (names: get, put, getm,
    /// replace, pia, remove). A bare name in a list counts as weight 1.
    fn from_str(s: &str) -> Result<Mix, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("keycloak") {
            return Ok(Mix::keycloak());
        }
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|e| format!("bad weight in {part:?}: {e}"))?,
                ),
                None => (part, 1),
            };
            let kind = OpKind::parse(name).ok_or_else(|| {
                format!(
                    "unknown operation {name:?} (expected get, put, getm, replace, pia, remove \
                     or keycloak)"
                )
            })?;
            weights.push((kind, w));
        }
        Mix::from_weights(&weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_names() {
        let m: Mix = "get".parse().unwrap();
        assert_eq!(m.spec(), "get=1");
        assert!((0..100).all(|r| m.pick(r) == OpKind::Get));
        let m: Mix = "PUT".parse().unwrap();
        assert_eq!(m.pick(12345), OpKind::Put);
    }

    #[test]
    fn weights_are_respected_exactly_over_a_period() {
        let m: Mix = "get=60,put=40".parse().unwrap();
        let gets = (0..100).filter(|&r| m.pick(r) == OpKind::Get).count();
        assert_eq!(gets, 60);
        let m = Mix::keycloak();
        let mut counts = [0usize; 6];
        for r in 0..1000 {
            counts[m.pick(r).index()] += 1;
        }
        assert_eq!(counts[OpKind::GetMeta.index()], 600);
        assert_eq!(counts[OpKind::Replace.index()], 200);
        assert_eq!(counts[OpKind::PutIfAbsent.index()], 100);
        assert_eq!(counts[OpKind::Remove.index()], 100);
        assert_eq!(counts[OpKind::Get.index()] + counts[OpKind::Put.index()], 0);
    }

    #[test]
    fn keycloak_by_name() {
        let m: Mix = "keycloak".parse().unwrap();
        assert_eq!(m.spec(), "getm=60,replace=20,pia=10,remove=10");
        assert_eq!(m, "getm=60,replace=20,pia=10,remove=10".parse().unwrap());
    }

    #[test]
    fn errors() {
        assert!("".parse::<Mix>().is_err());
        assert!("get=0".parse::<Mix>().is_err());
        assert!("frob=1".parse::<Mix>().is_err());
        assert!("get=x".parse::<Mix>().is_err());
        assert!("get=1,get=2".parse::<Mix>().is_err());
        // zero weights are dropped, not errors, when something else remains
        let m: Mix = "get=0,put=3".parse().unwrap();
        assert!(!m.contains(OpKind::Get));
        assert!(m.contains(OpKind::Put));
    }
}
