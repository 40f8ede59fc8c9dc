//! Blocked terms: one Aho-Corasick automaton over a room's (or the global)
//! term list, matched against the [`skeleton`] of a message.
//!
//! A term may hold `*` wildcards, each standing for zero or more chars. A
//! term is split at its wildcards into literal *pieces*; each piece is
//! skeletonized (so "加 微信" and "加.微.信" are the piece "加微信") and every
//! distinct piece of every term goes into one automaton. A term matches when
//! its pieces occur in order, without overlapping, anywhere in the message's
//! skeleton: a wildcard may span the whole message. Matching is one
//! overlapping pass over the text; only terms with wildcards whose first
//! piece was seen get an in-order check.
//!
//! Because the skeleton drops spaces and collapses repeated letters, short
//! Latin terms match inside unrelated words ("ass" skeletonizes to "as");
//! terms of four or more letters, or CJK terms, are the safe kind.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};

use super::text::skeleton;

/// Why a term list was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TermError {
    /// The term has no letter or digit outside its wildcards ("*", "!!").
    #[error("blocked term has no letters or digits: {0:?}")]
    Empty(String),
    /// The automaton could not be built (too many or too long terms).
    #[error("blocked terms automaton: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

/// A compiled list of blocked terms. Cheap to clone (the automaton is shared).
#[derive(Debug, Clone, Default)]
pub struct BlockedTerms {
    /// The terms as given.
    patterns: Vec<String>,
    /// Per term, its piece ids in order.
    pieces: Vec<Box<[u32]>>,
    /// Per piece id, the `(term, position)` pairs that use it.
    owners: Vec<Box<[(u32, u32)]>>,
    /// Per piece id, whether some term with several pieces uses it.
    in_multi: Vec<bool>,
    /// `None` when there are no terms.
    automaton: Option<AhoCorasick>,
}

impl BlockedTerms {
    /// Compiles `patterns` (in priority order; see [`matches`](Self::matches)).
    ///
    /// Fails with [`TermError::Empty`] for a term whose skeleton is empty.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, TermError> {
        let mut piece_ids: HashMap<String, u32> = HashMap::new();
        let mut distinct: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut pieces = Vec::with_capacity(patterns.len());
        for (term, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            let ids: Box<[u32]> = pattern
                .split('*')
                .map(skeleton)
                .filter(|piece| !piece.is_empty())
                .map(|piece| {
                    *piece_ids.entry(piece).or_insert_with_key(|piece| {
                        distinct.push(piece.clone());
                        owners.push(Vec::new());
                        index_u32(distinct.len() - 1)
                    })
                })
                .collect();
            if ids.is_empty() {
                return Err(TermError::Empty(pattern.to_owned()));
            }
            for (position, &id) in ids.iter().enumerate() {
                owners[id as usize].push((index_u32(term), index_u32(position)));
            }
            pieces.push(ids);
        }
        let in_multi = owners
            .iter()
            .map(|users| users.iter().any(|&(t, _)| pieces[t as usize].len() > 1))
            .collect();
        let automaton = if distinct.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&distinct)?,
            )
        };
        Ok(BlockedTerms {
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            pieces,
            owners: owners.into_iter().map(Vec::into_boxed_slice).collect(),
            in_multi,
            automaton,
        })
    }

    /// The first term, in list order, found in `skeleton`, as it was given.
    ///
    /// `skeleton` must be the [`skeleton`] of the message: matching raw text
    /// misses every evasion the skeleton undoes.
    pub fn matches(&self, skeleton: &str) -> Option<&str> {
        let automaton = self.automaton.as_ref()?;
        let mut best: Option<u32> = None;
        // Occurrences of pieces used by wildcard terms: (piece, start, end).
        let mut hits: Vec<(u32, usize, usize)> = Vec::new();
        // Wildcard terms whose first piece occurred.
        let mut candidates: Vec<u32> = Vec::new();
        for m in automaton.find_overlapping_iter(skeleton) {
            let piece = m.pattern().as_u32();
            for &(term, position) in self.owners[piece as usize].iter() {
                if self.pieces[term as usize].len() == 1 {
                    best = Some(best.map_or(term, |b| b.min(term)));
                } else if position == 0 {
                    candidates.push(term);
                }
            }
            if self.in_multi[piece as usize] {
                hits.push((piece, m.start(), m.end()));
            }
            if best == Some(0) {
                break;
            }
        }
        if !candidates.is_empty() {
            hits.sort_unstable();
            candidates.sort_unstable();
            candidates.dedup();
            if let Some(term) = candidates
                .into_iter()
                .take_while(|&t| best.is_none_or(|b| t < b))
                .find(|&t| self.in_order(t, &hits))
            {
                best = Some(term);
            }
        }
        best.map(|t| self.patterns[t as usize].as_str())
    }

    /// Whether the pieces of `term` occur in order, without overlapping, in
    /// `hits` (sorted by piece, then start). Greedy: each piece takes its
    /// earliest occurrence after the previous one, which is optimal because
    /// all occurrences of one piece have the same length.
    fn in_order(&self, term: u32, hits: &[(u32, usize, usize)]) -> bool {
        let mut from = 0;
        for &piece in self.pieces[term as usize].iter() {
            let i = hits.partition_point(|&(p, start, _)| (p, start) < (piece, from));
            match hits.get(i) {
                Some(&(p, _, end)) if p == piece => from = end,
                _ => return false,
            }
        }
        true
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when there are no terms (nothing is ever blocked).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The terms as given, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// Term and piece indices fit in `u32`: the automaton itself refuses more
/// than `u32::MAX` patterns long before.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(list: &[&str]) -> BlockedTerms {
        BlockedTerms::new(list).expect("valid terms")
    }

    fn check(t: &BlockedTerms, text: &str) -> Option<String> {
        t.matches(&skeleton(text)).map(str::to_owned)
    }

    #[test]
    fn plain_term_is_a_substring_match() {
        let t = terms(&["idiot"]);
        assert_eq!(check(&t, "you idiot!").as_deref(), Some("idiot"));
        assert_eq!(check(&t, "IDIOTS"), Some("idiot".into()));
        assert_eq!(check(&t, "you are nice"), None);
        assert_eq!(check(&t, "i do it"), None);
        assert_eq!(check(&t, "idle riot"), None);
    }

    #[test]
    fn evasions_are_undone() {
        let t = terms(&["idiot"]);
        for text in [
            "i d i o t",
            "iiidiot",
            "iiiddddiiiioooottt",
            "ｉｄｉｏｔ",
            "id.i.o.t",
            "i-d-i-o-t",
            "1d10t",
            "i\u{200B}diot",
            "Іdіоt",
            "𝐢𝐝𝐢𝐨𝐭",
            "i💩d💩i💩o💩t",
        ] {
            assert_eq!(check(&t, text).as_deref(), Some("idiot"), "{text:?}");
        }
    }

    #[test]
    fn cjk_terms() {
        let t = terms(&["加微信"]);
        for text in [
            "加微信",
            "加 微 信",
            "加.微.信",
            "快来加微信吧",
            "加\u{200B}微\u{FEFF}信",
            "加！微！信",
        ] {
            assert_eq!(check(&t, text).as_deref(), Some("加微信"), "{text:?}");
        }
        assert_eq!(check(&t, "加油，微信支付可以吗"), None);
        assert_eq!(check(&t, "微信加"), None);
    }

    #[test]
    fn terms_are_skeletonized_like_texts() {
        // Spaces, punctuation, case and doubles in the term itself.
        let t = terms(&["Add  Me!", "加 微信", "good"]);
        assert_eq!(check(&t, "a.d.d m.e"), Some("Add  Me!".into()));
        assert_eq!(check(&t, "加微 信"), Some("加 微信".into()));
        assert_eq!(check(&t, "gooood"), Some("good".into()));
    }

    #[test]
    fn wildcards_match_pieces_in_order() {
        let t = terms(&["傻*逼"]);
        for text in ["傻逼", "傻x逼", "傻 逼", "傻了吧你这个逼", "你傻。。。逼"]
        {
            assert_eq!(check(&t, text).as_deref(), Some("傻*逼"), "{text:?}");
        }
        for text in ["逼傻", "傻瓜", "逼"] {
            assert_eq!(check(&t, text), None, "{text:?}");
        }
        let t = terms(&["buy*now*cheap"]);
        assert!(check(&t, "buy it now, very cheap").is_some());
        assert!(check(&t, "cheap, buy now").is_none());
        assert!(check(&t, "now buy cheap").is_none());
    }

    #[test]
    fn wildcard_pieces_do_not_overlap() {
        // "aba" then "ab" after it: "abab" has them only overlapping.
        let t = terms(&["aba*ab"]);
        assert_eq!(check(&t, "abab"), None);
        assert!(check(&t, "aba ab").is_none()); // skeleton "abaab" → "abab"
        assert!(check(&t, "aba-x-ab").is_some());
        // A repeated piece needs two occurrences.
        let t = terms(&["骗子*骗子"]);
        assert!(check(&t, "骗子").is_none());
        assert!(check(&t, "骗子就是骗子").is_some());
    }

    #[test]
    fn leading_and_trailing_wildcards_are_no_ops() {
        let t = terms(&["*scam*", "**spam"]);
        assert_eq!(check(&t, "this is a scam!"), Some("*scam*".into()));
        assert_eq!(check(&t, "spammer"), Some("**spam".into()));
    }

    #[test]
    fn first_term_in_list_order_wins() {
        let t = terms(&["zzz*yyy", "idiot", "stupid", "傻*逼"]);
        assert_eq!(check(&t, "stupid idiot"), Some("idiot".into()));
        assert_eq!(check(&t, "stupid 傻逼"), Some("stupid".into()));
        assert_eq!(check(&t, "傻逼 zzz yyy idiot"), Some("zzz*yyy".into()));
        assert_eq!(check(&t, "傻逼"), Some("傻*逼".into()));
        assert_eq!(check(&t, "hello"), None);
    }

    #[test]
    fn shared_pieces_and_duplicates() {
        let t = terms(&["spam", "spam*link", "spam"]);
        assert_eq!(t.len(), 3);
        assert_eq!(check(&t, "spam link"), Some("spam".into()));
        let t = terms(&["spam*link", "link"]);
        assert_eq!(check(&t, "spam link"), Some("spam*link".into()));
        assert_eq!(check(&t, "link spam"), Some("link".into()));
    }

    #[test]
    fn empty_terms_are_refused() {
        for bad in ["", "*", "***", "  ", "!!", "* - *", "\u{200B}"] {
            match BlockedTerms::new(&["ok", bad]) {
                Err(TermError::Empty(p)) => assert_eq!(p, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_list_blocks_nothing() {
        let t = BlockedTerms::new::<String>(&[]).expect("empty list");
        assert!(t.is_empty());
        assert_eq!(t.matches("anything"), None);
        assert!(BlockedTerms::default().matches("x").is_none());
    }

    #[test]
    fn clone_and_accessors() {
        let list = vec!["a*b".to_string(), "加微信".to_string()];
        let t = BlockedTerms::new(&list).expect("valid");
        let c = t.clone();
        assert_eq!(c.patterns(), &list[..]);
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
        assert_eq!(c.matches(&skeleton("加微信")), Some("加微信"));
    }

    /// Reference semantics: each term in order (given as its skeletonized
    /// pieces), pieces found left to right.
    fn naive(pieces: &[Vec<String>], skeleton: &str) -> Option<usize> {
        pieces.iter().position(|term| {
            let mut rest = skeleton;
            term.iter().all(|piece| match rest.find(piece.as_str()) {
                Some(at) => {
                    rest = &rest[at + piece.len()..];
                    true
                }
                None => false,
            })
        })
    }

    #[test]
    fn thousand_terms_ten_thousand_texts_agree_with_reference() {
        // A tiny deterministic generator (xorshift) over a small alphabet, so
        // terms actually occur in texts.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let alphabet: Vec<char> = "abcdefgh傻逼加微信骗子".chars().collect();
        let mut word =
            |len: usize| -> String { (0..len).map(|_| alphabet[next(alphabet.len())]).collect() };
        let patterns: Vec<String> = (0..1_000)
            .map(|i| {
                let len = 3 + i % 4;
                if i % 4 == 0 {
                    let first = word(len);
                    format!("{first}*{}", word(2 + i % 3))
                } else {
                    word(len)
                }
            })
            .collect();
        let t = BlockedTerms::new(&patterns).expect("valid terms");
        assert_eq!(t.len(), 1_000);
        let pieces: Vec<Vec<String>> = patterns
            .iter()
            .map(|p| {
                p.split('*')
                    .map(skeleton)
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .collect();
        let mut matched = 0;
        for i in 0..10_000 {
            let mut text = word(5 + i % 40);
            if i % 10 == 0 {
                // Plant a term, spaced out.
                let planted: String = patterns[(i * 7) % patterns.len()]
                    .replace('*', "xx")
                    .chars()
                    .flat_map(|c| [c, ' '])
                    .collect();
                text.push_str(&planted);
            }
            let sk = skeleton(&text);
            let got = t.matches(&sk);
            let want = naive(&pieces, &sk).map(|i| patterns[i].as_str());
            assert_eq!(got, want, "{text:?}");
            if i % 10 == 0 {
                assert!(got.is_some(), "planted term missed in {text:?}");
            }
            matched += usize::from(got.is_some());
        }
        // The generator must exercise both outcomes.
        assert!(matched > 1_000 && matched < 10_000, "{matched}");
    }
}
