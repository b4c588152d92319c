//! The election decision, from the children of the election path (no ZooKeeper here).

use crate::Role;

/// Name prefix of the election nodes: ZooKeeper appends the sequence, `server-n_0000000017`.
pub const NODE_PREFIX: &str = "server-n_";

/// Where an instance stands, given its own node and the current children of the election path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Its node has the lowest sequence: it is the active instance.
    Active,
    /// A node with a lower sequence exists: it watches `predecessor`, the node just below its
    /// own (not the lowest: only one instance wakes up when a node goes).
    Standby { predecessor: String },
    /// Its own node is not among the children (session expired, node deleted): it must join
    /// again with a new node.
    Lost,
}

/// The sequence number of an election node name (`server-n_0000000017` → 17); `None` for any
/// other name. Sequences print with 10 digits, or 19 past 2^31, so they are compared as numbers.
pub fn node_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(NODE_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Decides the standing of the node named `own` among `children` (names, not paths). Children
/// that are not election nodes are ignored.
pub fn decide<S: AsRef<str>>(own: &str, children: &[S]) -> Standing {
    let Some(mine) = node_sequence(own) else {
        return Standing::Lost;
    };
    let mut present = false;
    let mut predecessor: Option<(u64, &str)> = None;
    for child in children {
        let name = child.as_ref();
        let Some(seq) = node_sequence(name) else {
            continue;
        };
        if seq == mine {
            present = true;
        } else if seq < mine && predecessor.is_none_or(|(p, _)| seq > p) {
            predecessor = Some((seq, name));
        }
    }
    match (present, predecessor) {
        (false, _) => Standing::Lost,
        (true, None) => Standing::Active,
        (true, Some((_, name))) => Standing::Standby {
            predecessor: name.to_string(),
        },
    }
}

/// The role that follows from a standing while the lease is (or is not) valid: without a valid
/// lease an instance cannot know where it stands.
pub fn role_for(standing: &Standing, lease_valid: bool) -> Role {
    match standing {
        _ if !lease_valid => Role::Unknown,
        Standing::Active => Role::Active,
        Standing::Standby { .. } => Role::Standby,
        Standing::Lost => Role::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(seq: u64) -> String {
        format!("{NODE_PREFIX}{seq:010}")
    }

    #[test]
    fn sequences() {
        assert_eq!(node_sequence("server-n_0000000017"), Some(17));
        assert_eq!(node_sequence("server-n_0000000000"), Some(0));
        assert_eq!(
            node_sequence("server-n_2147483648000000000"),
            Some(2_147_483_648_000_000_000)
        );
        assert_eq!(node_sequence("server-n_"), None);
        assert_eq!(node_sequence("server-n_12a"), None);
        assert_eq!(node_sequence("server-n_-1"), None);
        assert_eq!(node_sequence("lock-0000000001"), None);
        assert_eq!(node_sequence("server-n_99999999999999999999999"), None);
    }

    #[test]
    fn lowest_is_active() {
        let children = [n(19), n(17), n(18)];
        assert_eq!(decide(&n(17), &children), Standing::Active);
        assert_eq!(decide(&n(7), &[n(7)]), Standing::Active);
    }

    #[test]
    fn others_watch_only_their_predecessor() {
        let children = [n(19), n(17), n(18), n(25)];
        assert_eq!(
            decide(&n(18), &children),
            Standing::Standby { predecessor: n(17) }
        );
        assert_eq!(
            decide(&n(19), &children),
            Standing::Standby { predecessor: n(18) }
        );
        assert_eq!(
            decide(&n(25), &children),
            Standing::Standby { predecessor: n(19) }
        );
    }

    #[test]
    fn predecessor_gone_but_a_lower_node_remains() {
        // 18 left; 19 now watches 17 and stays standby.
        assert_eq!(
            decide(&n(19), &[n(17), n(19)]),
            Standing::Standby { predecessor: n(17) }
        );
        // 17 left too: 19 is active.
        assert_eq!(decide(&n(19), &[n(19), n(20)]), Standing::Active);
    }

    #[test]
    fn compares_sequences_as_numbers_not_text() {
        // Past 2^31 ZooKeeper prints 19 digits; text order would still work for equal widths,
        // but mixed widths must compare numerically.
        let big = format!("{NODE_PREFIX}{:019}", 3_000_000_000u64);
        let small = n(2_000_000_000);
        assert_eq!(
            decide(&big, &[big.clone(), small.clone()]),
            Standing::Standby {
                predecessor: small.clone()
            }
        );
        assert_eq!(decide(&small, &[big, small.clone()]), Standing::Active);
    }

    #[test]
    fn own_node_missing_is_lost() {
        assert_eq!(decide(&n(18), &[n(17), n(19)]), Standing::Lost);
        assert_eq!(decide(&n(18), &Vec::<String>::new()), Standing::Lost);
        assert_eq!(decide("not-a-node", &[n(1)]), Standing::Lost);
    }

    #[test]
    fn foreign_children_are_ignored() {
        let five = n(5);
        let children = ["config", "server-n_x", five.as_str(), "lock-0000000001"];
        assert_eq!(decide(&n(5), &children), Standing::Active);
    }

    #[test]
    fn roles() {
        let standby = Standing::Standby { predecessor: n(1) };
        assert_eq!(role_for(&Standing::Active, true), Role::Active);
        assert_eq!(role_for(&standby, true), Role::Standby);
        assert_eq!(role_for(&Standing::Lost, true), Role::Unknown);
        for s in [Standing::Active, standby, Standing::Lost] {
            assert_eq!(role_for(&s, false), Role::Unknown);
        }
    }
}
