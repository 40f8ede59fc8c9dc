//! Where a viewer connects: one `--server`, or a deployment of several
//! engine nodes (`--servers id=addr,…`) over which rooms are routed with the
//! engine's own rendezvous function (`roomgate::route`, docs/ROUTING.md).
//!
//! A viewer starts at its room's owner. On `wrong_node` it follows the
//! reason phrase to the owner the engine names; when an attempt cannot
//! connect it moves on to the next node of the room's ranking (the node
//! that owns the room once the dead one leaves the list).

use std::{collections::HashMap, net::SocketAddr};

use roomgate::route::NodeSet;

/// Most `wrong_node` redirects followed in a row before the viewer backs
/// off like after a failed attempt (two nodes with different lists).
pub const MAX_REDIRECTS: u32 = 4;

/// The servers of a run.
#[derive(Debug)]
pub struct Servers {
    /// The deployment's nodes, if routed.
    nodes: Option<NodeSet>,
    /// Resolved address of every node id (`--servers`), or of the one
    /// `--server` under the empty id.
    addrs: HashMap<String, SocketAddr>,
}

impl Servers {
    /// One server.
    pub fn single(addr: SocketAddr) -> Self {
        Servers {
            nodes: None,
            addrs: HashMap::from([(String::new(), addr)]),
        }
    }

    /// A deployment: `nodes` with each node's resolved address.
    pub fn routed(nodes: NodeSet, addrs: HashMap<String, SocketAddr>) -> Self {
        Servers {
            nodes: Some(nodes),
            addrs,
        }
    }

    /// The addresses to try for `room_id`, best first: the owner, then the
    /// rest of its ranking (one server: just that one).
    pub fn ranked(&self, room_id: u64) -> Vec<SocketAddr> {
        match &self.nodes {
            Some(nodes) => nodes
                .ranked(room_id)
                .iter()
                .filter_map(|n| self.addrs.get(&n.id).copied())
                .collect(),
            None => self.addrs.values().copied().collect(),
        }
    }

    /// Where a `wrong_node` close points: the node's known address if its
    /// id is one of ours, else its address as given (resolved now).
    pub async fn resolve(&self, id: &str, addr: &str) -> Option<SocketAddr> {
        if let Some(a) = self.addrs.get(id).filter(|_| !id.is_empty()) {
            return Some(*a);
        }
        tokio::net::lookup_host(addr).await.ok()?.next()
    }
}

/// The owner named by a `wrong_node` close reason phrase,
/// `wrong_node <id> <host:port>`: `(id, addr)`.
pub fn parse_wrong_node(reason: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(reason).ok()?;
    let mut parts = text.split(' ');
    if parts.next()? != "wrong_node" {
        return None;
    }
    let (id, addr) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || id.is_empty() || addr.is_empty() {
        return None;
    }
    Some((id.to_owned(), addr.to_owned()))
}

/// A viewer's place in its room's ranking.
#[derive(Debug)]
pub struct Target {
    ranked: Vec<SocketAddr>,
    at: usize,
    redirect: Option<SocketAddr>,
    redirects: u32,
    /// Attempts that could not connect since the last `Welcome`.
    failures: usize,
}

impl Target {
    /// Start at `room_id`'s owner.
    pub fn new(servers: &Servers, room_id: u64) -> Self {
        Target {
            ranked: servers.ranked(room_id),
            at: 0,
            redirect: None,
            redirects: 0,
            failures: 0,
        }
    }

    /// Another node of the ranking is still untried since the last
    /// `Welcome`: a failed attempt is worth another try there (even a
    /// viewer's first join).
    pub fn can_fail_over(&self) -> bool {
        self.failures + 1 < self.ranked.len()
    }

    /// Where the next attempt goes.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.redirect.or_else(|| self.ranked.get(self.at).copied())
    }

    /// A session got its `Welcome`: stay here, the redirect chain is over.
    pub fn welcomed(&mut self) {
        self.redirects = 0;
        self.failures = 0;
    }

    /// `wrong_node` named `to`: go there next, unless that makes more than
    /// [`MAX_REDIRECTS`] in a row (then `false`: back off and start over).
    pub fn redirect(&mut self, to: SocketAddr) -> bool {
        self.redirects += 1;
        if self.redirects > MAX_REDIRECTS {
            self.redirects = 0;
            self.redirect = None;
            return false;
        }
        self.redirect = Some(to);
        true
    }

    /// An attempt could not connect (or got no `Welcome`): the next one
    /// goes to the next node of the ranking.
    pub fn failed(&mut self) {
        self.failures += 1;
        if self.redirect.take().is_some() {
            // The node a redirect named failed: back to where the ranking
            // stood (not the next one: that would skip a node).
            return;
        }
        if !self.ranked.is_empty() {
            self.at = (self.at + 1) % self.ranked.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Servers {
        let nodes: NodeSet = "node-a=10.0.0.1:4433,node-b=10.0.0.2:4433,node-c=10.0.0.3:4433"
            .parse()
            .unwrap();
        let addrs = nodes
            .nodes()
            .iter()
            .map(|n| (n.id.clone(), n.addr.parse().unwrap()))
            .collect();
        Servers::routed(nodes, addrs)
    }

    #[test]
    fn a_viewer_starts_at_the_owner_follows_redirects_and_fails_over_in_rank_order() {
        let s = three();
        // docs/ROUTING.md's vectors: room 0 is node-c's.
        let mut t = Target::new(&s, 0);
        let c: SocketAddr = "10.0.0.3:4433".parse().unwrap();
        assert_eq!(t.addr(), Some(c));
        let ranked = s.ranked(0);
        assert_eq!(ranked.len(), 3);
        assert!(t.can_fail_over());
        t.failed();
        assert_eq!(t.addr(), Some(ranked[1]));
        let a: SocketAddr = "10.0.0.1:4433".parse().unwrap();
        assert!(t.redirect(a));
        assert_eq!(t.addr(), Some(a));
        t.welcomed();
        for _ in 0..MAX_REDIRECTS {
            assert!(t.redirect(a));
        }
        assert!(!t.redirect(a), "a redirect loop backs off");
        assert_eq!(t.addr(), Some(ranked[1]));
        assert!(t.redirect(a));
        t.failed();
        assert_eq!(
            t.addr(),
            Some(ranked[1]),
            "the redirect's node failed: not a step"
        );
        t.welcomed();
        t.failed();
        assert!(t.can_fail_over(), "one node left to try");
        t.failed();
        assert!(!t.can_fail_over(), "every node tried");
        assert_eq!(t.addr(), Some(ranked[0]), "round and round");
        t.welcomed();
        assert!(t.can_fail_over());
        assert!(!Target::new(&Servers::single(a), 1).can_fail_over());
    }

    #[test]
    fn wrong_node_reasons_parse_strictly() {
        assert_eq!(
            parse_wrong_node(b"wrong_node node-b 10.0.0.2:4433"),
            Some(("node-b".into(), "10.0.0.2:4433".into()))
        );
        for bad in [
            &b"wrong_node"[..],
            b"wrong_node node-b",
            b"wrong_node  10.0.0.2:4433",
            b"banned node-b 10.0.0.2:4433",
            b"wrong_node a b c",
            b"\xff",
        ] {
            assert_eq!(parse_wrong_node(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn redirects_resolve_known_ids_and_plain_addresses() {
        let s = three();
        assert_eq!(
            s.resolve("node-b", "ignored:1").await,
            Some("10.0.0.2:4433".parse().unwrap())
        );
        assert_eq!(
            s.resolve("node-x", "127.0.0.1:9").await,
            Some("127.0.0.1:9".parse().unwrap())
        );
        let one = Servers::single("127.0.0.1:4433".parse().unwrap());
        assert_eq!(
            one.ranked(5),
            vec!["127.0.0.1:4433".parse::<SocketAddr>().unwrap()]
        );
    }
}
