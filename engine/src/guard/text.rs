//! Chat text: the normalized form, the evasion-resistant skeleton, and the
//! link, contact and flood detectors.
//!
//! Every function here is pure: a `&str` in, a value out, no state. The
//! forms serve different rules:
//! - [`normalize`] is what "the same message" means for the duplicate and
//!   raid rules: case, width, whitespace and invisible characters do not
//!   make two messages different.
//! - [`skeleton`] is what blocked terms are matched against: only letters and
//!   digits survive, look-alikes are folded and repeated letters collapse,
//!   so `f.u.c.k`, `ｆｕｕｕｃｋ` and `f u c k` are all `fuck`.
//! - [`has_link`], [`contact_kind`] and [`is_flood`] each normalize their
//!   input first; [`normalize`] is idempotent, so callers may pass raw or
//!   already normalized text.
//!
//! The detectors are tuned for Chinese live-stream rooms with mixed Chinese
//! and English chat. They lean towards catching evasions, and each documents
//! the ordinary messages it may wrongly catch.

/// Normalized text is cut at this many chars (not bytes).
pub const MAX_NORMALIZED_CHARS: usize = 500;

/// [`is_flood`]: a run of this many identical chars is a flood.
pub const FLOOD_RUN: usize = 10;
/// [`is_flood`]: texts with at least this many non-space chars are checked
/// for one dominant char.
pub const FLOOD_MIN_CHARS: usize = 20;
/// [`is_flood`]: one char making up at least this percentage of the non-space
/// chars of a long enough text is a flood.
pub const FLOOD_DOMINANT_PERCENT: usize = 60;
/// [`is_flood`]: the longest repeated unit ("ha", "主播好") looked for.
pub const FLOOD_UNIT_MAX: usize = 4;
/// [`is_flood`]: a unit of 2 to [`FLOOD_UNIT_MAX`] chars repeated this many
/// times in a row is a flood. Single-char units are governed by [`FLOOD_RUN`].
pub const FLOOD_UNIT_REPEATS: usize = 8;

/// [`contact_kind`]: digits in one run that make a phone number (a China
/// landline without area code has 7 or 8; a mobile 11).
pub const PHONE_MIN_DIGITS: usize = 7;
/// [`contact_kind`]: digits after a WeChat marker that make an ID.
pub const WECHAT_MIN_DIGITS: usize = 6;
/// [`contact_kind`]: digits after a QQ marker that make a QQ number.
pub const QQ_MIN_DIGITS: usize = 5;
/// [`contact_kind`]: how many chars may sit between a WeChat / QQ marker and
/// the ID after it ("微信号是：abc123").
pub const CONTACT_GAP: usize = 6;

/// Digit strings that are chat idioms, not phone numbers ("5201314": "I love
/// you for a lifetime", everywhere in wedding rooms).
const NUMBER_IDIOMS: &[&str] = &["5201314", "1314520", "7758521"];

/// Top-level domains [`has_link`] knows. The first four are accepted even in
/// loose spellings ("abc dot com", "abc . com"); the others are English words
/// too ("me", "top", "shop") and only count right after a dot.
const TLDS: &[&str] = &[
    "com", "cn", "net", "org", "io", "top", "xyz", "cc", "me", "vip", "shop", "link", "co",
];
/// How many of [`TLDS`] are accepted in loose spellings.
const STRONG_TLDS: usize = 4;
/// Short-link hosts whose suffix is not in [`TLDS`]: (label, suffix).
const SHORT_LINK_HOSTS: &[(&str, &str)] = &[("bit", "ly"), ("b23", "tv")];

/// Common English words that follow "wechat" / "加我" in ordinary chat and
/// are shaped like a WeChat ID ("do you have a wechat account").
const NOT_IDS: &[&str] = &[
    "account", "accounts", "anchor", "brother", "business", "channel", "channels", "contact",
    "contacts", "course", "courses", "customer", "friend", "friends", "groups", "message",
    "messages", "moments", "number", "numbers", "official", "payment", "payments", "people",
    "photos", "please", "program", "public", "service", "sister", "support", "teacher", "thanks",
    "thankyou", "tomorrow", "tonight", "videos", "wedding", "welcome",
];

/// Which kind of contact detail [`contact_kind`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    /// A phone number: a run of digits.
    Phone,
    /// A WeChat marker followed by an ID.
    WeChat,
    /// A QQ marker followed by a number.
    QQ,
}

/// The form used to decide whether two messages are the same.
///
/// In order: strips zero-width and invisible chars (U+200B–U+200F,
/// U+202A–U+202E, U+2060–U+2069, U+FEFF, U+00AD, U+180E, variation
/// selectors, tag chars, Hangul fillers, control chars), folds full-width
/// ASCII (U+FF01–U+FF5E) and U+3000 to half-width and "fancy font" letters
/// and digits (mathematical alphanumerics 𝐀, circled Ⓐ ⓐ ①, parenthesized
/// ⑴ ⒜, dingbat ❶ ➀) to ASCII, lowercases, trims and collapses every
/// whitespace run to one ASCII space, and cuts at [`MAX_NORMALIZED_CHARS`]
/// chars. Idempotent.
pub fn normalize(text: &str) -> String {
    normalize_to(text, MAX_NORMALIZED_CHARS)
}

/// [`normalize`] without the cut: what the contact checks and redaction
/// see, so padding a message past the cut cannot hide a phone number at its
/// end. The wire's chat limit bounds the work.
pub fn normalize_uncut(text: &str) -> String {
    normalize_to(text, usize::MAX)
}

/// A chat message normalized once, for every check of the guard: the
/// whole normalized text (the contact checks and redaction) and its cut at
/// [`MAX_NORMALIZED_CHARS`] (duplicates, raids, floods, terms, links). The
/// cut equals [`normalize`] of the raw text (a property test checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    whole: String,
    /// Byte length of the cut form.
    cut: usize,
}

impl Normalized {
    /// Normalize `text` (one pass over it).
    pub fn new(text: &str) -> Self {
        let whole = normalize_uncut(text);
        let cut = match whole.char_indices().nth(MAX_NORMALIZED_CHARS) {
            // A space is only kept with a char after it (as `normalize`).
            Some((i, _)) => whole[..i].trim_end_matches(' ').len(),
            None => whole.len(),
        };
        Normalized { whole, cut }
    }

    /// [`normalize`] of the text.
    pub fn cut(&self) -> &str {
        &self.whole[..self.cut]
    }

    /// [`normalize_uncut`] of the text.
    pub fn whole(&self) -> &str {
        &self.whole
    }
}

fn normalize_to(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0;
    let mut pending_space = false;
    'chars: for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = fold_compat(c);
        if c.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        for lower in c.to_lowercase() {
            if pending_space {
                // A space is only written with a char after it: no trailing
                // space, even when the cut falls right behind it.
                if count + 2 > max_chars {
                    break 'chars;
                }
                out.push(' ');
                count += 1;
                pending_space = false;
            }
            if count >= max_chars {
                break 'chars;
            }
            out.push(lower);
            count += 1;
        }
    }
    out
}

/// The form blocked terms are matched against.
///
/// [`normalize`], then: leetspeak digits and symbols become the letters they
/// imitate (`0→o 1→i 3→e 4→a 5→s 7→t @→a $→s`) and common Cyrillic
/// look-alikes their Latin twins; everything that is not a letter or digit
/// (spaces, punctuation, symbols, emoji, combining marks) is dropped; runs of
/// one char collapse to one ("fuuuck" → "fuck"). CJK chars are kept as is.
///
/// Trade-offs: words run together ("no way" → "noway"), legitimate double
/// letters collapse ("good" → "god") and the digits above stop being digits,
/// so a term must be skeletonized the same way (as
/// [`BlockedTerms`](super::terms::BlockedTerms) does) and short Latin terms
/// match inside unrelated words. Idempotent.
pub fn skeleton(text: &str) -> String {
    skeleton_of_normalized(&normalize(text))
}

/// [`skeleton`] of text that is already [`normalize`]d.
pub fn skeleton_of_normalized(normalized: &str) -> String {
    let mut out = String::with_capacity(normalized.len());
    let mut last = None;
    for c in normalized.chars() {
        let c = fold_lookalike(c);
        if !c.is_alphanumeric() || is_combining_mark(c) || last == Some(c) {
            continue;
        }
        out.push(c);
        last = Some(c);
    }
    out
}

/// True when `text` contains a URL or a domain-like token.
///
/// Caught: `http://`, `https://`, `www.` and `label.tld` for the TLDs com,
/// cn, net, org, io, top, xyz, cc, me, vip, shop, link and co (this also
/// covers the short-link hosts t.cn, dwz.cn, url.cn and tb.cn), plus bit.ly
/// and b23.tv. Evasions caught: full-width forms, the dots `。` `｡` `·`,
/// spaces or brackets around the dot ("abc . com", "abc(.)com"), and the
/// dot spelled "点" ("abc点com") or "dot" ("abc dot com").
///
/// The label before the dot must end in an ASCII letter or digit, and the
/// TLD must not run on into more letters ("hello.company" is not a link).
/// With a space after the dot, or the dot spelled "dot", only com, cn, net
/// and org count, so "thanks. me too" passes. False positives: a sentence
/// typed without a space after its full stop when the next word is a TLD
/// ("nice.me too", "good.top quality").
pub fn has_link(text: &str) -> bool {
    has_link_normalized(&normalize(text))
}

/// [`has_link`] of text that is already [`normalize`]d.
pub fn has_link_normalized(normalized: &str) -> bool {
    if normalized.contains("http://") || normalized.contains("https://") {
        return true;
    }
    let s: Vec<char> = normalized.chars().collect();
    (0..s.len()).any(|i| www_at(&s, i) || domain_at(&s, i))
}

/// The first kind of contact detail found in `text`, if any: WeChat is
/// checked first, then QQ, then phone numbers.
///
/// Digits: ASCII and full-width digits, Chinese numerals
/// (`〇零一二三四五六七八九幺` and `壹贰貳叁肆伍陆陸柒捌玖`) and circled
/// digits all count. A digit run may have up to three separators (space,
/// `-`, `.`, `·`, `_`, dashes) between two digits: "138 0013 8000",
/// "1 3 8-0013-8000" and "一三八零零一三八零零零" are each one run of 11
/// digits. Not counted: dates shaped like "2024-12-03" or "03.12.2024", a
/// decimal part ("12800.00" is 5 digits), runs where all digits but one are
/// the same ("6666666", "23333333") and number idioms ("5201314").
///
/// - [`ContactKind::WeChat`]: a marker ("微信", "威信", "薇信", "v信", "vx",
///   "wx", "weixin", "wechat", "加v", "+v", "➕v", "加我"; Chinese markers
///   and the short ones may have up to 3 symbols or spaces inside, as in
///   "v❤️信" or "微 信") followed within [`CONTACT_GAP`] chars by an ID: a
///   Latin letter then 5 or more of `a-z 0-9 _ -`, or at least
///   [`WECHAT_MIN_DIGITS`] digits. "我想加我的孩子报名" and "可以用微信支付吗"
///   pass: a marker alone is not a contact. Pure-letter IDs that are common
///   English words ("wechat account") are ignored; other pure-letter words
///   after a marker are flagged ("加我 hellokitty").
/// - [`ContactKind::QQ`]: "qq", "扣扣" or "企鹅" followed within
///   [`CONTACT_GAP`] chars by at least [`QQ_MIN_DIGITS`] digits.
/// - [`ContactKind::Phone`]: a run of at least [`PHONE_MIN_DIGITS`] digits
///   anywhere. Seven, not eleven, so local landlines ("8888 1234") are caught;
///   the price is that any bare number of 7+ digits is flagged, an order
///   number ("订单 20241203") or a big price ("1280000元") included, and
///   numbers separated only by spaces merge ("12800 3999"). Counting aloud
///   in Chinese numerals ("一二三四五六七") is flagged too.
pub fn contact_kind(text: &str) -> Option<ContactKind> {
    contact_kind_normalized(&normalize_uncut(text))
}

/// [`contact_kind`] of text that is already [`normalize_uncut`] (the whole
/// message: [`Normalized::whole`]).
pub fn contact_kind_normalized(whole: &str) -> Option<ContactKind> {
    let s: Vec<char> = whole.chars().collect();
    if has_marked_contact(&s, WECHAT_MARKERS, |s, p, end| {
        id_at(s, p, end) || digits_at(s, p) >= WECHAT_MIN_DIGITS
    }) {
        return Some(ContactKind::WeChat);
    }
    if has_marked_contact(&s, QQ_MARKERS, |s, p, _| digits_at(s, p) >= QQ_MIN_DIGITS) {
        return Some(ContactKind::QQ);
    }
    if (0..s.len()).any(|i| digits_at(&s, i) >= PHONE_MIN_DIGITS) {
        return Some(ContactKind::Phone);
    }
    None
}

/// True when `text` is a repeated-character flood.
///
/// After [`normalize`] (emoji skin-tone modifiers ignored), any of:
/// - a run of [`FLOOD_RUN`] identical chars ("哈" × 10, "!" × 10, "6" × 10);
/// - at least [`FLOOD_MIN_CHARS`] non-space chars of which one char makes up
///   [`FLOOD_DOMINANT_PERCENT`] % or more;
/// - a unit of 2 to [`FLOOD_UNIT_MAX`] chars repeated [`FLOOD_UNIT_REPEATS`]
///   times in a row ("ha" × 8, "主播好" × 8, "6 6 6 6 6 6 6 6").
///
/// "666", "哈哈哈" and "hahaha" pass.
pub fn is_flood(text: &str) -> bool {
    is_flood_normalized(&normalize(text))
}

/// [`is_flood`] of text that is already [`normalize`]d.
pub fn is_flood_normalized(normalized: &str) -> bool {
    let s: Vec<char> = normalized
        .chars()
        .filter(|&c| !('\u{1F3FB}'..='\u{1F3FF}').contains(&c))
        .collect();

    let mut run = 0;
    for (i, &c) in s.iter().enumerate() {
        run = if i > 0 && s[i - 1] == c { run + 1 } else { 1 };
        if run >= FLOOD_RUN {
            return true;
        }
    }

    let mut visible: Vec<char> = s.iter().copied().filter(|c| *c != ' ').collect();
    if visible.len() >= FLOOD_MIN_CHARS {
        visible.sort_unstable();
        let mut most = 0;
        let mut run = 0;
        for (i, &c) in visible.iter().enumerate() {
            run = if i > 0 && visible[i - 1] == c {
                run + 1
            } else {
                1
            };
            most = most.max(run);
        }
        if most * 100 >= FLOOD_DOMINANT_PERCENT * visible.len() {
            return true;
        }
    }

    for unit in 2..=FLOOD_UNIT_MAX {
        // `same` counts consecutive positions j with s[j] == s[j - unit]: a
        // stretch of `same + unit` chars is `unit`-periodic.
        let mut same = 0;
        for j in unit..s.len() {
            if s[j] != s[j - unit] {
                same = 0;
                continue;
            }
            same += 1;
            let stretch = same + unit;
            let period = &s[j + 1 - unit..=j];
            // "ha ha ha": the last repetition lost its space to the trim.
            let trimmed = j + 1 == s.len() && period[0] == ' ';
            if (stretch >= unit * FLOOD_UNIT_REPEATS
                || (trimmed && stretch + 1 >= unit * FLOOD_UNIT_REPEATS))
                && period.iter().any(|&c| c != period[0])
            {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Char classes and folds.

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180B}'..='\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    ) || (c.is_control() && !c.is_whitespace())
}

/// Full-width ASCII and "fancy font" letters and digits to plain ASCII.
fn fold_compat(c: char) -> char {
    let cp = c as u32;
    let shifted = |base: u32, first: char| char::from_u32(first as u32 + (cp - base));
    let folded = match cp {
        0xFF01..=0xFF5E => char::from_u32(cp - 0xFEE0),
        0x3000 => Some(' '),
        // Mathematical alphanumerics: 13 styles of A-Z a-z, then 5 of 0-9.
        0x1D400..=0x1D6A3 => {
            let i = (cp - 0x1D400) % 52;
            char::from_u32(u32::from(b'a') + i % 26)
        }
        0x1D7CE..=0x1D7FF => char::from_u32(u32::from(b'0') + (cp - 0x1D7CE) % 10),
        0x249C..=0x24B5 => shifted(0x249C, 'a'), // ⒜
        0x24B6..=0x24CF => shifted(0x24B6, 'a'), // Ⓐ
        0x24D0..=0x24E9 => shifted(0x24D0, 'a'), // ⓐ
        0x2460..=0x2468 => shifted(0x2460, '1'), // ①
        0x2474..=0x247C => shifted(0x2474, '1'), // ⑴
        0x2488..=0x2490 => shifted(0x2488, '1'), // ⒈
        0x2776..=0x277E => shifted(0x2776, '1'), // ❶
        0x2780..=0x2788 => shifted(0x2780, '1'), // ➀
        0x278A..=0x2792 => shifted(0x278A, '1'), // ➊
        0x24EA | 0x24FF | 0x1F10B | 0x1F10C => Some('0'), // ⓪ ⓿ 🄋 🄌
        _ => None,
    };
    folded.unwrap_or(c)
}

/// Leetspeak and Cyrillic look-alikes to the Latin letter they imitate.
fn fold_lookalike(c: char) -> char {
    match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        'а' => 'a',
        'е' | 'ё' => 'e',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'х' => 'x',
        'у' => 'y',
        'і' => 'i',
        'ј' => 'j',
        'ѕ' => 's',
        'к' => 'k',
        'м' => 'm',
        'т' => 't',
        'в' => 'b',
        'н' => 'h',
        _ => c,
    }
}

fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

// ---------------------------------------------------------------------------
// Links.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dot {
    /// `.` `。` `｡` `·`
    Mark,
    /// "点"
    Hanzi,
    /// "dot"
    Word,
}

/// A dot (or a spelling of one) starting at `i`: its kind and length.
fn dot_at(s: &[char], i: usize) -> Option<(Dot, usize)> {
    match s.get(i)? {
        '.' | '。' | '｡' | '·' => Some((Dot::Mark, 1)),
        '点' => Some((Dot::Hanzi, 1)),
        'd' if starts_with(s, i, "dot")
            && (i == 0 || !s[i - 1].is_ascii_alphanumeric())
            && !s.get(i + 3).is_some_and(char::is_ascii_alphanumeric) =>
        {
            Some((Dot::Word, 3))
        }
        _ => None,
    }
}

/// Spaces and brackets that may surround a dot: "abc (.) com".
fn is_link_gap(c: char) -> bool {
    matches!(
        c,
        ' ' | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '<'
            | '>'
            | '【'
            | '】'
            | '「'
            | '」'
            | '〔'
            | '〕'
    )
}

fn www_at(s: &[char], i: usize) -> bool {
    if !starts_with(s, i, "www") || (i > 0 && s[i - 1].is_ascii_alphabetic()) {
        return false;
    }
    let mut j = i + 3;
    while s.get(j).copied().is_some_and(is_link_gap) {
        j += 1;
    }
    dot_at(s, j).is_some()
}

fn domain_at(s: &[char], i: usize) -> bool {
    let Some((dot, len)) = dot_at(s, i) else {
        return false;
    };
    // The label: the ASCII word before the dot, across gaps.
    let mut k = i;
    while k > 0 && is_link_gap(s[k - 1]) {
        k -= 1;
    }
    let label_end = k;
    while k > 0 && (s[k - 1].is_ascii_alphanumeric() || s[k - 1] == '-') {
        k -= 1;
    }
    let label = &s[k..label_end];
    if !label.last().is_some_and(char::is_ascii_alphanumeric) {
        return false;
    }
    // The suffix, across gaps.
    let mut j = i + len;
    while s.get(j).copied().is_some_and(is_link_gap) {
        j += 1;
    }
    let tight = j == i + len && dot != Dot::Word;
    let ends_at = |end: usize| {
        !s.get(end)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let known = if tight { TLDS } else { &TLDS[..STRONG_TLDS] };
    if known
        .iter()
        .any(|tld| starts_with(s, j, tld) && ends_at(j + tld.chars().count()))
    {
        return true;
    }
    SHORT_LINK_HOSTS.iter().any(|(host, suffix)| {
        label.iter().copied().eq(host.chars())
            && starts_with(s, j, suffix)
            && ends_at(j + suffix.len())
    })
}

fn starts_with(s: &[char], i: usize, word: &str) -> bool {
    (i..).zip(word.chars()).all(|(k, w)| s.get(k) == Some(&w))
}

// ---------------------------------------------------------------------------
// Contacts.

/// A contact marker: its chars, and whether symbols or spaces may sit
/// between them ("v❤️信", "微 信").
struct Marker(&'static str, bool);

const WECHAT_MARKERS: &[Marker] = &[
    Marker("微信", true),
    Marker("威信", true),
    Marker("薇信", true),
    Marker("v信", true),
    Marker("vx", true),
    Marker("wx", true),
    // Spaced out these are English ("we chat tonight").
    Marker("weixin", false),
    Marker("wechat", false),
    Marker("加v", true),
    Marker("+v", true),
    Marker("➕v", true),
    Marker("加我", true),
];

const QQ_MARKERS: &[Marker] = &[
    Marker("qq", true),
    Marker("扣扣", true),
    Marker("企鹅", true),
];

/// Most symbols or spaces allowed between two chars of a loose marker.
const MARKER_MAX_JUNK: usize = 3;

/// The end of `marker` when it occurs at `i`.
fn marker_at(s: &[char], i: usize, marker: &Marker) -> Option<usize> {
    let mut chars = marker.0.chars();
    let first = chars.next()?;
    if s.get(i) != Some(&first) {
        return None;
    }
    // "new xbox" is not "wx", "iwechat" is not "wechat".
    if first.is_ascii_alphanumeric() && i > 0 && s[i - 1].is_ascii_alphanumeric() {
        return None;
    }
    let mut k = i + 1;
    for want in chars {
        if marker.1 {
            let mut junk = 0;
            while junk < MARKER_MAX_JUNK && s.get(k).is_some_and(|c| !c.is_alphanumeric()) {
                k += 1;
                junk += 1;
            }
        }
        if s.get(k) != Some(&want) {
            return None;
        }
        k += 1;
    }
    Some(k)
}

/// True when some marker is followed, within [`CONTACT_GAP`] chars, by a
/// position `p` where `id(s, p, marker_end)` holds.
fn has_marked_contact(
    s: &[char],
    markers: &[Marker],
    id: impl Fn(&[char], usize, usize) -> bool,
) -> bool {
    (0..s.len()).any(|i| {
        markers.iter().any(|marker| {
            marker_at(s, i, marker)
                .is_some_and(|end| (end..s.len().min(end + CONTACT_GAP + 1)).any(|p| id(s, p, end)))
        })
    })
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// A WeChat-ID-shaped token starting at `p`: a letter, then 5+ ID chars.
/// It starts a word, or right at the marker's end ("wxid_abc123").
fn id_at(s: &[char], p: usize, marker_end: usize) -> bool {
    if !s[p].is_ascii_lowercase() || (p > marker_end && is_id_char(s[p - 1])) {
        return false;
    }
    let len = s[p..].iter().take_while(|&&c| is_id_char(c)).count();
    if len < 6 {
        return false;
    }
    let token = &s[p..p + len];
    !(token.iter().all(char::is_ascii_lowercase)
        && NOT_IDS.iter().any(|w| token.iter().copied().eq(w.chars())))
}

fn digit_value(c: char) -> Option<u8> {
    Some(match c {
        '0'..='9' => c as u8 - b'0',
        '〇' | '零' => 0,
        '一' | '壹' | '幺' => 1,
        '二' | '贰' | '貳' => 2,
        '三' | '叁' => 3,
        '四' | '肆' => 4,
        '五' | '伍' => 5,
        '六' | '陆' | '陸' => 6,
        '七' | '柒' => 7,
        '八' | '捌' => 8,
        '九' | '玖' => 9,
        _ => return None,
    })
}

fn is_digit_sep(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '·' | '_' | '–' | '—')
}

/// Most separator chars allowed between two digits of one run.
const MAX_DIGIT_SEP: usize = 3;

/// The contact-like digit count of the digit run starting at `p` (0 when `p`
/// does not start a run, or the run is a date, a flood or an idiom).
fn digits_at(s: &[char], p: usize) -> usize {
    let end = digit_run_end(s, p);
    if end == p {
        return 0;
    }
    let mut digits: Vec<u8> = Vec::new();
    // Length of each digit group, and the separators before the last group.
    let mut groups: Vec<usize> = vec![0];
    let mut last_sep: &[char] = &[];
    let mut k = p;
    while k < end {
        match digit_value(s[k]) {
            Some(d) => {
                digits.push(d);
                if let Some(g) = groups.last_mut() {
                    *g += 1;
                }
                k += 1;
            }
            None => {
                let seps = s[k..end].iter().take_while(|&&c| is_digit_sep(c)).count();
                last_sep = &s[k..k + seps];
                groups.push(0);
                k += seps;
            }
        }
    }

    let mut count = digits.len();
    // "12800.00": the decimal part is not part of the number.
    if let [.., last] = groups[..] {
        if groups.len() > 1 && last_sep == ['.'] && last <= 2 {
            count -= last;
            digits.truncate(count);
        }
    }
    // "2024-12-03", "03.12.2024".
    let starts_like_year = matches!(digits[..], [1, 9, ..] | [2, 0, ..]);
    let is_date = match groups[..] {
        [4, m, d] => starts_like_year && (1..=2).contains(&m) && (1..=2).contains(&d),
        [d, m, 4] => (1..=2).contains(&d) && (1..=2).contains(&m),
        _ => false,
    };
    // "6666666", "23333333".
    let mut freq = [0usize; 10];
    for &d in &digits {
        freq[usize::from(d)] += 1;
    }
    let flood = freq.iter().any(|&f| f + 1 >= count);
    let idiom = NUMBER_IDIOMS
        .iter()
        .any(|idiom| idiom.bytes().map(|b| b - b'0').eq(digits.iter().copied()));
    if is_date || flood || idiom {
        0
    } else {
        count
    }
}

// ---------------------------------------------------------------------------
// Redaction.

/// Fewest digits in a run that [`redact_contacts`] masks: shorter than any
/// contact the checks look for (QQ numbers have 5), so nothing a check
/// would call a contact survives redaction.
pub const REDACT_MIN_DIGITS: usize = QQ_MIN_DIGITS;

/// `text` with every contact-like part masked, for storing a message that
/// may carry one (a rejected or dry-run chat message).
///
/// Works on the [`normalize`]d text (so full-width, circled and Chinese
/// numerals and invisible padding are seen through), and returns the
/// original text untouched when nothing needs masking:
/// - every digit run with at least [`REDACT_MIN_DIGITS`] digits (the same
///   runs as [`contact_kind`]: separators between digits, Chinese numerals;
///   dates and number idioms included) becomes `[number]`;
/// - every ID-shaped token (a letter or digit, then 4+ of `a-z 0-9 _ -`)
///   within [`CONTACT_GAP`] chars after a WeChat or QQ marker becomes
///   `[id]`, unless it is a common English word.
///
/// Names cannot be told from other words and are not masked.
pub fn redact_contacts(text: &str) -> std::borrow::Cow<'_, str> {
    let std::borrow::Cow::Owned(mut out) = redact_once(text) else {
        return std::borrow::Cow::Borrowed(text);
    };
    // Masking can make a new word start next to a marker; mask again until
    // nothing is left (in practice one more pass), else drop the text.
    for _ in 0..3 {
        if contact_kind(&out).is_none() {
            return std::borrow::Cow::Owned(out);
        }
        out = redact_once(&out).into_owned();
    }
    if contact_kind(&out).is_none() {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Owned("[redacted]".to_owned())
    }
}

fn redact_once(text: &str) -> std::borrow::Cow<'_, str> {
    let s: Vec<char> = normalize_uncut(text).chars().collect();
    // 0 = keep, 1 = number, 2 = id.
    let mut mask = vec![0u8; s.len()];
    let mut p = 0;
    while p < s.len() {
        let end = digit_run_end(&s, p);
        if end > p {
            let digits = s[p..end]
                .iter()
                .filter(|&&c| digit_value(c).is_some())
                .count();
            if digits >= REDACT_MIN_DIGITS {
                mask[p..end].fill(1);
            }
            p = end;
        } else {
            p += 1;
        }
    }
    for i in 0..s.len() {
        for marker in WECHAT_MARKERS.iter().chain(QQ_MARKERS) {
            let Some(end) = marker_at(&s, i, marker) else {
                continue;
            };
            let mut p = end;
            while p < s.len().min(end + CONTACT_GAP + 1) {
                let starts = is_id_char(s[p]) && (p == end || !is_id_char(s[p - 1]));
                let len = s[p..].iter().take_while(|&&c| is_id_char(c)).count();
                let token = &s[p..p + len];
                let word = token.iter().all(char::is_ascii_lowercase)
                    && NOT_IDS.iter().any(|w| token.iter().copied().eq(w.chars()));
                if starts && len >= 5 && !word {
                    for m in mask[p..p + len].iter_mut().filter(|m| **m == 0) {
                        *m = 2;
                    }
                }
                p += len.max(1);
            }
        }
    }
    if mask.iter().all(|&m| m == 0) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut last = 0u8;
    for (c, m) in s.iter().zip(&mask) {
        match m {
            0 => out.push(*c),
            m if *m != last => out.push_str(if *m == 1 { "[number]" } else { "[id]" }),
            _ => {}
        }
        last = *m;
    }
    std::borrow::Cow::Owned(out)
}

/// The end of the digit run starting at `p` (digits with up to
/// [`MAX_DIGIT_SEP`] separators between two of them), or `p` when `p` does
/// not start one.
fn digit_run_end(s: &[char], p: usize) -> usize {
    if digit_value(s[p]).is_none() || (p > 0 && digit_value(s[p - 1]).is_some()) {
        return p;
    }
    let mut k = p;
    loop {
        while s.get(k).copied().and_then(digit_value).is_some() {
            k += 1;
        }
        let seps = s[k..]
            .iter()
            .take(MAX_DIGIT_SEP + 1)
            .take_while(|&&c| is_digit_sep(c))
            .count();
        if seps == 0
            || seps > MAX_DIGIT_SEP
            || s.get(k + seps).and_then(|&c| digit_value(c)).is_none()
        {
            return k;
        }
        k += seps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordinary live-stream chat: must pass every check.
    const ORDINARY: &[&str] = &[
        "主播好！",
        "这个课程多少钱？",
        "how much is the course",
        "666",
        "6666",
        "哈哈哈",
        "哈哈哈哈哈",
        "hahaha",
        "价格3999元",
        "价格是 12800",
        "原价12800，现价3999",
        "12800.00元",
        "2024年开班吗",
        "2024年12月开课吗",
        "开课时间是 2024-12-03 吗",
        "2024.12.03 有空",
        "老师讲得真好👍",
        "👍👍👍👍👍",
        "❤️❤️❤️",
        "wedding photos in 杭州?",
        "我想加我的孩子报名",
        "可以用微信支付吗",
        "微信支付可以吗？3999元",
        "do you have a wechat account",
        "we chat every day",
        "我们加个微信群吧",
        "new xbox today",
        "thanks. me too",
        "well...me too",
        "e.g. come here",
        "5201314",
        "1314520 永远爱你",
        "23333333",
        "88888888",
        "装修一平米多少钱",
        "医美项目有哪些？",
        "一二三，开始",
        "三三两两",
        "九九八十一",
        "点赞点赞",
        "给我一点me time",
        "这个套餐送3次",
        "明天下午3点直播吗",
        "qq音乐",
        "企鹅好可爱",
        "v我50",
        "3.14",
        "version 1.2.3",
        "I like the company",
        "老师，what time is the class?",
        "ok",
        "",
        "   ",
    ];

    #[test]
    fn ordinary_chat_passes_every_check() {
        for text in ORDINARY {
            assert!(!has_link(text), "link: {text:?}");
            assert_eq!(contact_kind(text), None, "contact: {text:?}");
            assert!(!is_flood(text), "flood: {text:?}");
        }
    }

    #[test]
    fn normalize_trims_collapses_and_folds() {
        assert_eq!(normalize("  Hello \t\n  World  "), "hello world");
        assert_eq!(normalize("ｈｅｌｌｏ\u{3000}ＷＯＲＬＤ！"), "hello world!");
        assert_eq!(normalize("主播\u{3000}\u{3000}好"), "主播 好");
        assert_eq!(normalize("𝐁𝐔𝐘 𝒏𝒐𝒘 ⓐⓑⓒ ①②③"), "buy now abc 123");
        assert_eq!(normalize("ÀÉÎ"), "àéî");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{200B} "), "");
    }

    #[test]
    fn normalize_strips_invisible_chars() {
        let hidden =
            "f\u{200B}u\u{200C}c\u{200D}k\u{FEFF}!\u{00AD}\u{2060}\u{202E}\u{FE0F}\u{180E}";
        assert_eq!(normalize(hidden), "fuck!");
        // An invisible char between spaces does not leave two spaces.
        assert_eq!(normalize("a \u{200B} b"), "a b");
        assert_eq!(normalize("❤️"), "❤");
    }

    #[test]
    fn normalize_cuts_at_500_chars_without_trailing_space() {
        let long = "哈".repeat(600);
        assert_eq!(normalize(&long).chars().count(), MAX_NORMALIZED_CHARS);
        let spaced = format!("{} {}", "a".repeat(499), "b".repeat(10));
        let cut = normalize(&spaced);
        assert_eq!(cut, "a".repeat(499));
        let spaced = format!("{} {}", "a".repeat(498), "b".repeat(10));
        assert_eq!(normalize(&spaced).chars().count(), 500);
        // Same first 500 chars: same message.
        assert_eq!(
            normalize(&format!("{}x", "a".repeat(500))),
            normalize(&format!("{}y", "a".repeat(500)))
        );
    }

    #[test]
    fn same_message_variants_normalize_equal() {
        let a = normalize("主播好 Hello");
        for b in [
            "  主播好   hello ",
            "主播好\u{200B} ＨＥＬＬＯ",
            "主播好\u{3000}HELLO\n",
        ] {
            assert_eq!(normalize(b), a, "{b:?}");
        }
    }

    #[test]
    fn skeleton_defeats_spacing_punctuation_repeats_and_leet() {
        for text in [
            "fuck",
            "f.u.c.k",
            "f u c k",
            "f-u-c-k",
            "fuuuuck",
            "FUCK",
            "ｆｕｃｋ",
            "f*u*c*k",
            "f\u{200B}uck",
            "f_u_c_k",
            "f🔥u🔥c🔥k",
            "f̸u̸c̸k̸",
            "𝐟𝐮𝐜𝐤",
        ] {
            assert_eq!(skeleton(text), "fuck", "{text:?}");
        }
        assert_eq!(skeleton("sh1t"), "shit");
        assert_eq!(skeleton("@$$h0le"), "ashole");
        assert_eq!(skeleton("3v1l 5h17"), "evilshit");
        assert_eq!(skeleton("Іdіоt"), "idiot"); // Cyrillic І і о
        assert_eq!(skeleton("加 微 信"), "加微信");
        assert_eq!(skeleton("加.微.信!!"), "加微信");
        assert_eq!(skeleton("傻  逼"), "傻逼");
        assert_eq!(skeleton("👍👍 !!"), "");
        // Digits without a look-alike stay digits.
        assert_eq!(skeleton("2 6 8 9"), "2689");
    }

    #[test]
    fn forms_are_idempotent() {
        for text in ORDINARY
            .iter()
            .chain(&["Ｆ.Ｕ.Ｃ.Ｋ", "a\u{200B} b", "İstanbul ǅ ß"])
        {
            let n = normalize(text);
            assert_eq!(normalize(&n), n, "{text:?}");
            let k = skeleton(text);
            assert_eq!(skeleton(&k), k, "{text:?}");
        }
    }

    #[test]
    fn links_are_caught() {
        for text in [
            "http://example.com",
            "看这里 https://x.y/z",
            "HTTPS://EXAMPLE",
            "ｈｔｔｐｓ：／／ａ",
            "www.abc.com",
            "www点abc点com",
            "ｗｗｗ．ｘｘ．ｃｏｍ",
            "w\u{200B}ww.xx",
            "abc.com",
            "abc.cn看看",
            "ABC.NET",
            "abc.org/x",
            "abc.io",
            "abc.top",
            "abc.xyz",
            "abc.cc",
            "abc.me",
            "abc.vip",
            "abc.shop",
            "abc.link",
            "abc.co",
            "abc。com",
            "abc｡com",
            "abc·com",
            "abc . com",
            "abc .cn",
            "abc (.) com",
            "abc【.】com",
            "abc点com",
            "abc 点 cn",
            "abc点vip",
            "abc dot com",
            "abc dot net",
            "加我 abc123.cn",
            "t.cn/A6xyz",
            "dwz.cn/abc",
            "url.cn/abc",
            "tb.cn/abc",
            "bit.ly/3abc",
            "b23.tv/abc",
            "x-y.com",
            "9.cn",
            "see abc.com.",
        ] {
            assert!(has_link(text), "{text:?}");
        }
    }

    #[test]
    fn link_look_alikes_that_are_not_links() {
        for text in [
            "thanks. me too",
            "it. co-founder",
            "nice. top quality",
            "hello.company",
            "hello.comet",
            "我看了一点com",
            "polka dot pattern",
            "dotcom",
            "3.14",
            "node.js",
            "bit.lyrics",
            "www",
            "wwwhat",
        ] {
            assert!(!has_link(text), "{text:?}");
        }
    }

    #[test]
    fn phones_are_caught() {
        for text in [
            "13800138000",
            "电话13800138000",
            "138 0013 8000",
            "138-0013-8000",
            "1 3 8-0013-8000",
            "138.0013.8000",
            "138·0013·8000",
            "138 - 0013 - 8000",
            "１３８００１３８０００",
            "一三八零零一三八零零零",
            "幺三八〇〇幺三八〇〇〇",
            "壹叁捌零零壹叁捌零零零",
            "1三8 0013 八000",
            "①③⑧⓪⓪①③⑧⓪⓪⓪",
            "1\u{200B}3\u{200B}8\u{200B}0013 8000",
            "8888 1234",
            "0571-88881234",
            "+86 138 0013 8000",
            "订单 20241203",
            "13888888888",
        ] {
            assert_eq!(contact_kind(text), Some(ContactKind::Phone), "{text:?}");
        }
    }

    #[test]
    fn numbers_that_are_not_phones() {
        for text in [
            "123456",
            "2024-12-03",
            "03/12/2024 见",
            "12-03-2024",
            "2024.12.3",
            "12800.00",
            "6666666666",
            "233333333",
            "5201314",
            "7758521",
            "13800 和 1380",
            "138____0013____8000",
            "1 2 3",
        ] {
            assert_eq!(contact_kind(text), None, "{text:?}");
        }
    }

    #[test]
    fn wechat_ids_are_caught() {
        for text in [
            "加微信 abc123",
            "微信：abc_123",
            "微信号是：zhangsan88",
            "vx: hello_kitty",
            "VX abc123",
            "wx abc-123",
            "wxid_abc123xyz",
            "weixin abc123",
            "WeChat: zhangsan99",
            "v❤️信 abc123",
            "v信 abc123",
            "威信 abc123",
            "薇 信 abc123",
            "微\u{200B}信 abc123",
            "加v abc123",
            "+v abc123",
            "➕v abc123",
            "加我 hellokitty",
            "加我vx：abc123",
            "ｖｘ：ａｂｃ１２３",
            "微信 13800138000",
            "微信 一三八零零一三八",
            "微信同号 138001",
        ] {
            assert_eq!(contact_kind(text), Some(ContactKind::WeChat), "{text:?}");
        }
    }

    #[test]
    fn wechat_markers_without_ids_pass() {
        for text in [
            "我想加我的孩子报名",
            "可以用微信支付吗",
            "微信群里说了",
            "do you have a wechat account",
            "wechat please",
            "wechat group",
            "加我好友 thanks",
            "new xbox series",
            "we chat tonight",
            "微信 abc12",
            "微信 12345",
            "微信支付，一二三",
        ] {
            assert_eq!(contact_kind(text), None, "{text:?}");
        }
    }

    #[test]
    fn qq_numbers_are_caught() {
        for text in [
            "qq 12345",
            "QQ：123456",
            "扣扣 98765",
            "企鹅号 三四五六七",
            "q q 12345",
        ] {
            assert_eq!(contact_kind(text), Some(ContactKind::QQ), "{text:?}");
        }
        assert_eq!(contact_kind("qq 1234"), None);
        assert_eq!(contact_kind("qq音乐 3999元"), None);
        assert_eq!(contact_kind("faqq 12345"), None);
    }

    #[test]
    fn floods_are_caught() {
        for text in [
            "哈".repeat(10),
            "!".repeat(10),
            "6".repeat(10),
            "。".repeat(12),
            "hahahahahahahahahaha".into(),
            "ha".repeat(8),
            "主播好".repeat(8),
            "ha ".repeat(8),
            "6 ".repeat(8),
            "abcd".repeat(8),
            format!("{}好好笑{}", "哈".repeat(9), "哈".repeat(9)),
            "a b a a c a a d a a e a a f a a g a a h a a i a".into(),
            "👏🏻".repeat(10),
            "ＡＡＡＡＡａａａａａ".into(),
        ] {
            assert!(is_flood(&text), "{text:?}");
        }
    }

    #[test]
    fn near_floods_pass() {
        for text in [
            "哈".repeat(9),
            "ha".repeat(7),
            "主播好".repeat(7),
            "666".into(),
            "👏🏻".repeat(9),
            "这个课程真的很好，老师讲得很清楚，推荐大家报名".into(),
            "the quick brown fox jumps over the lazy dog".into(),
        ] {
            assert!(!is_flood(&text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalize_and_skeleton_are_idempotent(text in "\\PC{0,80}") {
            let n = normalize(&text);
            proptest::prop_assert_eq!(normalize(&n), n.clone());
            proptest::prop_assert!(n.chars().count() <= MAX_NORMALIZED_CHARS);
            let k = skeleton(&text);
            proptest::prop_assert_eq!(skeleton(&k), k);
        }

        /// Normalizing once gives what each check computed on its own.
        #[test]
        fn normalized_once_equals_each_normalization(
            text in "(\\PC|[ \u{3000}\u{200B}ＡＢａｂ])*",
            pad in 0usize..3,
        ) {
            // Around the cut: texts a little longer than MAX_NORMALIZED_CHARS
            // with spaces where the cut falls.
            let long = format!("{}{}{text}", "ab ".repeat(MAX_NORMALIZED_CHARS / 3), " ".repeat(pad));
            for t in [text.as_str(), long.as_str()] {
                let n = Normalized::new(t);
                proptest::prop_assert_eq!(n.cut(), normalize(t));
                proptest::prop_assert_eq!(n.whole(), normalize_uncut(t));
                proptest::prop_assert_eq!(skeleton_of_normalized(n.cut()), skeleton(t));
                proptest::prop_assert_eq!(has_link_normalized(n.cut()), has_link(t));
                proptest::prop_assert_eq!(is_flood_normalized(n.cut()), is_flood(t));
                proptest::prop_assert_eq!(contact_kind_normalized(n.whole()), contact_kind(t));
            }
        }

        #[test]
        fn detectors_never_panic(text in "(\\PC|[0-9.点 微信vxqq-])*") {
            let _ = has_link(&text);
            let _ = contact_kind(&text);
            let _ = is_flood(&text);
        }
    }

    #[test]
    fn redaction_masks_every_contact_the_checks_find() {
        for (text, want) in [
            ("电话 184 0198 0579", "电话 [number]"),
            ("找我：一三三九五六二九九一八", "找我:[number]"),
            ("加v❤️信 abc_123 谢谢", "加v\u{2764}信 [id] 谢谢"),
            ("qq 12345 来", "qq [number] 来"),
            ("wx: wxid_a1b2c3", "wx: [id]"),
            ("１３８００１３８０００", "[number]"),
            ("①③⑧〇〇①③⑧〇〇〇", "[number]"),
            ("加我 hellokitty", "加我 [id]"),
        ] {
            assert_eq!(redact_contacts(text), want, "{text}");
            assert_eq!(contact_kind(&redact_contacts(text)), None, "{text}");
        }
        // Found by the `phone` fuzz target: masking once left a contact.
        let fuzzed = "\u{1}vn+v,\u{1}vvv\0\0\0\0\u{3}xtvvvvvvvvvvvvtvvv`vvvvvvv52\0\0\0\0\0\0\0\0.\u{c}.4\0\0\0\0\0\0\0\0\0\0\0\0\0\0vvvvvvvvvv+";
        assert_eq!(contact_kind(&redact_contacts(fuzzed)), None);
        // Padding past the normalization cut hides nothing.
        let padded = format!("{}13800138000", "İ".repeat(250));
        assert_eq!(contact_kind(&padded), Some(ContactKind::Phone));
        assert!(redact_contacts(&padded).ends_with("[number]"));
        // Nothing to mask: the original text, not its normalized form.
        for text in [
            "主播好！",
            "价格3999元",
            "do you have a wechat account",
            "Hello  World",
        ] {
            assert!(
                matches!(redact_contacts(text), std::borrow::Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the text, the redacted form holds no contact the checks
        /// would find.
        #[test]
        fn redacted_text_has_no_contact(text in "[0-9 一二三四五六七八九〇wxqv微信加我a-z_.-]{0,40}") {
            let r = redact_contacts(&text);
            proptest::prop_assert_eq!(contact_kind(&r), None, "{} -> {}", text, r);
        }
    }
}
