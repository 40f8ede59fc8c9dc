//! Which engine node owns a room: rendezvous (highest-random-weight) hashing
//! on the room id.
//!
//! Every node gets a score for the room; the highest score owns it. The
//! algorithm is fixed and documented in docs/ROUTING.md so that the
//! platform's ticket issuer and clients can compute the same owner:
//!
//! ```text
//! key(node_id)       = fnv1a64(node_id as UTF-8 bytes)
//! score(node, room)  = fmix64(key(node_id) ^ room_id)
//! owner(room)        = the node with the highest score;
//!                      on a tie, the smallest node id (byte order)
//! ```
//!
//! The node id is hashed, not its address, so moving a node to a new
//! address moves no rooms. Removing a node moves only that node's rooms;
//! adding one moves about 1/n of the rooms, all to the new node.
//!
//! Sans-IO: pure functions over a validated [`NodeSet`].

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;

/// Longest node id, bytes.
pub const MAX_NODE_ID: usize = 64;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, over `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer (`fmix64`).
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b93e_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A node's hashing key: FNV-1a 64 of its id's UTF-8 bytes.
pub fn node_key(node_id: &str) -> u64 {
    fnv1a64(node_id.as_bytes())
}

/// The node's score for the room; the highest score owns the room.
pub fn score(node_id: &str, room_id: u64) -> u64 {
    fmix64(node_key(node_id) ^ room_id)
}

/// One engine node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// Stable name; the only input to the hash. 1-[`MAX_NODE_ID`] bytes of
    /// printable ASCII without spaces.
    pub id: String,
    /// `host:port` viewers connect to. Not hashed: changing it moves no
    /// rooms.
    pub addr: String,
}

/// A node list that cannot route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeListError {
    /// No nodes at all.
    #[error("the node list is empty")]
    Empty,
    /// A node id is empty, too long, or has a byte outside `!`..=`~`.
    #[error("node id {0:?} must be 1-{MAX_NODE_ID} bytes of printable ASCII without spaces")]
    BadId(String),
    /// Two nodes share an id.
    #[error("node id {0:?} appears twice")]
    DuplicateId(String),
    /// An address is not `host:port`.
    #[error("node {id:?}: address {addr:?} is not host:port")]
    BadAddr {
        /// Node.
        id: String,
        /// Its address.
        addr: String,
    },
    /// Two nodes share an address.
    #[error("address {0:?} appears twice")]
    DuplicateAddr(String),
    /// An entry of a textual list is not `id=addr`.
    #[error("node entry {0:?} is not id=addr")]
    BadEntry(String),
}

/// The engine nodes rooms are spread over: validated, with each node's key
/// computed once.
#[derive(Debug, Clone)]
pub struct NodeSet {
    /// In the order given (the order has no effect on routing).
    nodes: Vec<Node>,
    /// `keys[i] = node_key(&nodes[i].id)`.
    keys: Vec<u64>,
}

impl NodeSet {
    /// Validates the list: non-empty, ids valid and unique, addresses
    /// `host:port` and unique.
    pub fn new(nodes: Vec<Node>) -> Result<Self, NodeListError> {
        if nodes.is_empty() {
            return Err(NodeListError::Empty);
        }
        let mut ids = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for n in &nodes {
            if !valid_id(&n.id) {
                return Err(NodeListError::BadId(n.id.clone()));
            }
            if !valid_addr(&n.addr) {
                return Err(NodeListError::BadAddr {
                    id: n.id.clone(),
                    addr: n.addr.clone(),
                });
            }
            if !ids.insert(n.id.as_str()) {
                return Err(NodeListError::DuplicateId(n.id.clone()));
            }
            if !addrs.insert(n.addr.as_str()) {
                return Err(NodeListError::DuplicateAddr(n.addr.clone()));
            }
        }
        let keys = nodes.iter().map(|n| node_key(&n.id)).collect();
        Ok(Self { nodes, keys })
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node that owns `room_id`.
    pub fn owner(&self, room_id: u64) -> &Node {
        // Never empty (checked in `new`): start from the first node.
        let best = (1..self.nodes.len()).fold(0, |best, i| {
            if self.rank_key(i, room_id) > self.rank_key(best, room_id) {
                i
            } else {
                best
            }
        });
        &self.nodes[best]
    }

    /// Every node, best first: the owner, then the node that would own the
    /// room without it, and so on (the fallback order when the owner is
    /// down).
    pub fn ranked(&self, room_id: u64) -> Vec<&Node> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_unstable_by_key(|&i| Reverse(self.rank_key(i, room_id)));
        order.into_iter().map(|i| &self.nodes[i]).collect()
    }

    /// Higher is better: the score, then the smaller id.
    fn rank_key(&self, i: usize, room_id: u64) -> (u64, Reverse<&str>) {
        (fmix64(self.keys[i] ^ room_id), Reverse(&self.nodes[i].id))
    }
}

/// `id=addr,id=addr,...` (spaces around entries are ignored).
impl FromStr for NodeSet {
    type Err = NodeListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nodes = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| match e.split_once('=') {
                Some((id, addr)) => Ok(Node {
                    id: id.trim().to_owned(),
                    addr: addr.trim().to_owned(),
                }),
                None => Err(NodeListError::BadEntry(e.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(nodes)
    }
}

impl fmt::Display for NodeSet {
    /// The `id=addr,...` form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={}", n.id, n.addr)?;
        }
        Ok(())
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_NODE_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `host:port`: a non-empty host (a name, an IPv4 address or a bracketed
/// IPv6 address) without spaces or commas, and a port 1-65535.
fn valid_addr(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        && (host.starts_with('[') == host.ends_with(']'))
        && (host.starts_with('[') || !host.contains(':'));
    host_ok && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// This node's view of the routing, shared by the gate and the admin API:
/// its own id and the current node list (none: a single node that owns
/// every room). The list can be replaced while the engine runs
/// (`PUT /admin/routing`); sessions in rooms that moved away are then
/// closed with `wrong_node`.
#[derive(Debug)]
pub struct Routing {
    self_id: String,
    nodes: std::sync::RwLock<Option<std::sync::Arc<NodeSet>>>,
}

impl Routing {
    /// Routing for node `self_id` over `nodes` (`None`: owns every room).
    pub fn new(self_id: impl Into<String>, nodes: Option<NodeSet>) -> Self {
        Routing {
            self_id: self_id.into(),
            nodes: std::sync::RwLock::new(nodes.map(std::sync::Arc::new)),
        }
    }

    /// This node's id (empty without routing).
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// The current node list.
    pub fn nodes(&self) -> Option<std::sync::Arc<NodeSet>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the node list.
    pub fn set(&self, nodes: NodeSet) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(nodes));
    }

    /// The owner of `room_id` when it is another node; `None` when this
    /// node owns it (or there is no node list).
    pub fn elsewhere(&self, room_id: u64) -> Option<Node> {
        let nodes = self.nodes()?;
        let owner = nodes.owner(room_id);
        (owner.id != self.self_id).then(|| owner.clone())
    }

    /// When another node owns `room_id`: the `wrong_node` close reason
    /// phrase, `wrong_node <owner id> <owner addr>`.
    pub fn wrong_node_reason(&self, room_id: u64) -> Option<String> {
        self.elsewhere(room_id)
            .map(|owner| format!("wrong_node {} {}", owner.id, owner.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];

    /// `key(id)` for [`IDS`]. Checked by hand against the Python reference
    /// in docs/ROUTING.md, written from the specification.
    const KEYS: [u64; 3] = [0xe6971cc22078cb53, 0xe6971dc22078cd06, 0xe6971ec22078ceb9];

    /// `(room_id, owner, [score of node-a, node-b, node-c])`: the table in
    /// docs/ROUTING.md, checked the same way.
    #[rustfmt::skip]
    const VECTORS: &[(u64, &str, [u64; 3])] = &[
        (0, "node-c", [0x75777069df9d28d3, 0x6fe8230684fa1fe2, 0x9e6403df72c5f4ea]),
        (1, "node-a", [0xdd2acda4175937ee, 0xb11c999cc1e55b00, 0xa1de4a40dd69f38a]),
        (42, "node-a", [0xd3b08f6f56afffff, 0xd135ac9ae0a383fe, 0x0c37c06a9977d101]),
        (1001, "node-a", [0x78741cd69831cafa, 0x6269102a47a470a6, 0x05d5a9c10c9dfcee]),
        (1 << 63, "node-c", [0x1ae15b6a6e8206a9, 0x8b7dcc5efa3ea3c8, 0xc0a4e666173d6394]),
        (u64::MAX, "node-b", [0x01f692bfc8cd355f, 0x702a53e88ec3689f, 0x0348e06b95c2c31e]),
    ];

    fn abc() -> NodeSet {
        "node-a=10.0.0.1:4433,node-b=10.0.0.2:4433,node-c=10.0.0.3:4433"
            .parse()
            .expect("valid list")
    }

    /// Nodes with the given ids and distinct addresses.
    fn set<S: AsRef<str>>(ids: &[S]) -> NodeSet {
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: id.as_ref().to_owned(),
                addr: format!("10.0.{}.{}:4433", i / 256, i % 256),
            })
            .collect();
        NodeSet::new(nodes).expect("valid list")
    }

    fn id_list(nodes: Vec<&Node>) -> Vec<&str> {
        nodes.into_iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn hashes_match_their_references() {
        // FNV-1a 64 values from the FNV authors' test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        for (id, key) in IDS.iter().zip(KEYS) {
            assert_eq!(node_key(id), key, "key({id})");
        }
    }

    #[test]
    fn test_vectors() {
        let nodes = abc();
        for &(room, owner, scores) in VECTORS {
            for (id, s) in IDS.iter().zip(scores) {
                assert_eq!(score(id, room), s, "score({id}, {room})");
            }
            assert_eq!(nodes.owner(room).id, owner, "owner({room})");
            let mut by_score: Vec<(u64, &str)> =
                IDS.iter().map(|id| (score(id, room), *id)).collect();
            by_score.sort_by(|a, b| b.cmp(a));
            let expected: Vec<&str> = by_score.iter().map(|p| p.1).collect();
            assert_eq!(id_list(nodes.ranked(room)), expected, "ranked({room})");
        }
    }

    #[test]
    fn a_tie_goes_to_the_smallest_id() {
        let mut nodes = set(&["b", "a", "c"]);
        nodes.keys = vec![7, 7, 7];
        for room in [0, 1, u64::MAX] {
            assert_eq!(nodes.owner(room).id, "a");
            assert_eq!(id_list(nodes.ranked(room)), ["a", "b", "c"]);
        }
    }

    #[test]
    fn balance_over_consecutive_rooms() {
        let nodes = abc();
        let mut owned = [0u32; 3];
        for room in 0..30_000u64 {
            let owner = nodes.owner(room);
            owned[IDS.iter().position(|id| *id == owner.id).expect("a member")] += 1;
        }
        for (id, n) in IDS.iter().zip(owned) {
            assert!(
                (9_000..=11_100).contains(&n),
                "{id} owns {n} of 30,000 rooms: {owned:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_lists() {
        let parse = |s: &str| s.parse::<NodeSet>().map(|_| ()).unwrap_err();
        assert_eq!(parse(""), NodeListError::Empty);
        assert_eq!(parse(" , "), NodeListError::Empty);
        assert_eq!(parse("a=h:1,b"), NodeListError::BadEntry("b".into()));
        assert_eq!(parse("=h:1"), NodeListError::BadId("".into()));
        assert_eq!(parse("a b=h:1"), NodeListError::BadId("a b".into()));
        assert_eq!(parse("né=h:1"), NodeListError::BadId("né".into()));
        let long = "x".repeat(MAX_NODE_ID + 1);
        assert_eq!(parse(&format!("{long}=h:1")), NodeListError::BadId(long));
        assert!("x".repeat(MAX_NODE_ID).parse::<NodeSet>().is_err()); // no '='
        assert!(format!("{}=h:1", "x".repeat(MAX_NODE_ID))
            .parse::<NodeSet>()
            .is_ok());
        assert_eq!(parse("a=h:1,a=h:2"), NodeListError::DuplicateId("a".into()));
        assert_eq!(
            parse("a=h:1,b=h:1"),
            NodeListError::DuplicateAddr("h:1".into())
        );
        for addr in [
            "", "h", "h:", ":1", "h:0", "h:65536", "h:+1", "::1:1", "[::1", "a,b:1",
        ] {
            let e = NodeSet::new(vec![Node {
                id: "a".into(),
                addr: addr.into(),
            }])
            .unwrap_err();
            assert!(
                matches!(e, NodeListError::BadAddr { .. }),
                "{addr:?}: {e:?}"
            );
        }
        for addr in [
            "h:1",
            "edge-1.example.com:4433",
            "10.0.0.1:65535",
            "[::1]:4433",
        ] {
            let ok = NodeSet::new(vec![Node {
                id: "a".into(),
                addr: addr.into(),
            }]);
            assert!(ok.is_ok(), "{addr:?}");
        }
    }

    #[test]
    fn display_is_the_parsed_form() {
        let nodes: NodeSet = " a=h:1 , b = h:2 ,".parse().expect("valid list");
        assert_eq!(nodes.to_string(), "a=h:1,b=h:2");
        assert_eq!(
            nodes.nodes()[1],
            Node {
                id: "b".into(),
                addr: "h:2".into()
            }
        );
    }

    /// 1 to 8 distinct node ids.
    fn node_ids(min: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-z0-9._-]{1,12}", min..=8)
            .prop_map(|s| s.into_iter().collect())
    }

    fn rooms() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(any::<u64>(), 1..64)
    }

    proptest! {
        /// The owner is a member and comes first in `ranked`, which lists
        /// every node once.
        #[test]
        fn owner_is_a_member(ids in node_ids(1), rooms in rooms()) {
            let nodes = set(&ids);
            for room in rooms {
                let owner = nodes.owner(room);
                prop_assert!(nodes.nodes().contains(owner));
                let ranked = nodes.ranked(room);
                prop_assert_eq!(ranked[0], owner);
                let mut listed = id_list(ranked);
                listed.sort_unstable();
                let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
                all.sort_unstable();
                prop_assert_eq!(listed, all);
            }
        }

        /// Removing a node moves only its rooms, each to the next node in
        /// its ranking; the other nodes' order is unchanged.
        #[test]
        fn removing_a_node_moves_only_its_rooms(
            ids in node_ids(2),
            gone in any::<prop::sample::Index>(),
            rooms in rooms(),
        ) {
            let before = set(&ids);
            let gone = ids[gone.index(ids.len())].clone();
            let rest: Vec<&String> = ids.iter().filter(|id| **id != gone).collect();
            let after = set(&rest);
            for room in rooms {
                let was = before.owner(room).id.as_str();
                let now = after.owner(room).id.as_str();
                if was == gone {
                    prop_assert_eq!(now, before.ranked(room)[1].id.as_str());
                } else {
                    prop_assert_eq!(now, was);
                }
                let mut expected = id_list(before.ranked(room));
                expected.retain(|id| *id != gone);
                prop_assert_eq!(id_list(after.ranked(room)), expected);
            }
        }

        /// Adding a node moves rooms only to the new node.
        #[test]
        fn adding_a_node_moves_rooms_only_to_it(
            ids in node_ids(1),
            new in "[a-z0-9._-]{1,12}",
            rooms in rooms(),
        ) {
            prop_assume!(!ids.contains(&new));
            let before = set(&ids);
            let mut more = ids.clone();
            more.push(new.clone());
            let after = set(&more);
            for room in rooms {
                let now = after.owner(room).id.as_str();
                prop_assert!(now == before.owner(room).id || now == new);
            }
        }

        /// Neither the order of the list nor the addresses change routing.
        #[test]
        fn order_and_addresses_do_not_matter(
            (ids, shuffled) in node_ids(1).prop_flat_map(|ids| (Just(ids.clone()), Just(ids).prop_shuffle())),
            rooms in rooms(),
        ) {
            let a = set(&ids);
            let b = NodeSet::new(
                shuffled
                    .iter()
                    .map(|id| Node { id: id.clone(), addr: format!("{id}.example:1") })
                    .collect(),
            )
            .expect("valid list");
            for room in rooms {
                prop_assert_eq!(&a.owner(room).id, &b.owner(room).id);
                prop_assert_eq!(id_list(a.ranked(room)), id_list(b.ranked(room)));
            }
        }
    }

    #[test]
    fn routing_names_the_owner_and_follows_a_new_list() {
        let r = Routing::new("node-a", Some(abc()));
        // From the vectors: room 0 is node-c's, room 1 node-a's.
        assert_eq!(r.elsewhere(1), None);
        assert_eq!(r.elsewhere(0).map(|n| n.id), Some("node-c".to_owned()));
        assert_eq!(
            r.wrong_node_reason(0).as_deref(),
            Some("wrong_node node-c 10.0.0.3:4433")
        );
        assert_eq!(r.wrong_node_reason(1), None);
        r.set("node-a=10.0.0.1:4433".parse().expect("valid"));
        assert_eq!(r.elsewhere(0), None, "node-a alone owns everything");
        r.set("node-b=10.0.0.2:4433".parse().expect("valid"));
        assert_eq!(
            r.wrong_node_reason(1).as_deref(),
            Some("wrong_node node-b 10.0.0.2:4433")
        );
        let single = Routing::new("", None);
        assert_eq!(single.elsewhere(0), None);
    }
}
