//! What simulated viewers say: chat lines and lead forms that look like a real
//! Chinese lead-generation live stream (education, photography, renovation),
//! and what abusive viewers say instead.
//!
//! Pure: every value comes from the caller's seeded RNG. Client ids are not
//! chosen here; the viewer assigns them when it sends.
//!
//! Legitimate content must never trip the guard, so [`Content::is_clean`]
//! checks every legitimate line with the engine's own detectors
//! (`roomgate::guard::text`, blocked terms from the scenario) and a line
//! that would be caught is drawn again. Abusive content is written to be
//! caught by exactly the rules its class is meant to test; the tests below
//! check both directions with the same detectors.

use std::collections::HashSet;

use rand::{seq::SliceRandom, Rng};
use roomgate::guard::{phone, terms::BlockedTerms, text};
use roomgate::wire::Lead;

/// The blocked terms `loadgen/engine-loadtest.toml` gives the engine
/// (`[guard.chat] blocked_terms`); a test keeps the two lists equal.
pub const DEFAULT_BLOCKED_TERMS: &[&str] = &[
    "傻逼",
    "傻*逼",
    "脑残",
    "智障",
    "废物主播",
    "垃圾主播",
    "骗子主播",
    "滚出直播间",
    "死全家",
    "草泥马",
    "尼玛",
    "裸聊",
    "约炮",
    "代开发票",
    "刷单兼职",
    "网赌",
    "fuck",
    "idiot",
    "scammer",
];

const CHAT_LINES: &[&str] = &[
    "主播好",
    "主播好！",
    "来了来了",
    "666",
    "已关注",
    "老师讲得好清楚",
    "这个课程多少钱？",
    "怎么报名",
    "上海有校区吗",
    "能试听吗？",
    "求链接",
    "价格能再优惠点吗",
    "婚纱照套餐包含几套衣服？",
    "装修半包大概多少钱",
    "我家90平能做吗",
    "已下单",
    "哈哈哈",
    "👍👍",
    "晚上还有直播吗",
    "hello from Shenzhen",
    "how much is the course?",
    "can I get a discount?",
    "what time is the next class?",
    "is there an online version?",
    "great stream, thanks",
    "IELTS 7 possible in 3 months?",
];

const NAMES: &[&str] = &[
    "张三", "李四", "王芳", "张伟", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴霞",
    "徐丽", "孙浩", "马超", "朱婷", "胡军", "郭晶", "林峰", "何雪",
];

const CITIES: &[&str] = &[
    "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆", "苏州", "天津",
    "长沙", "郑州", "青岛",
];

const INTERESTS: &[&str] = &[
    "雅思课程",
    "考研辅导",
    "婚纱摄影",
    "全屋装修",
    "皮肤管理",
    "少儿编程",
];

/// Mobile prefixes in use: 13x, 15x (no 154) and 18x.
const MOBILE_PREFIXES: &[u16] = &[
    130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159,
    180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
];

/// Prefixes for the phones bots share across rooms: 19x, never drawn for
/// anyone else, so a shared phone never collides with a legitimate one.
const SHARED_PREFIXES: &[u16] = &[191, 193, 195, 198, 199];

/// `seq` spelled in lowercase letters (0 → "a", 26 → "ba"): a tag that makes
/// lines unique without adding digit runs, which the engine's contact filter
/// would rightly read as phone or QQ numbers ("666 1035").
fn letter_tag(mut seq: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (seq % 26) as u8);
        seq /= 26;
        if seq == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A short chat line; a letter tag from `seq` makes it unique-ish (as a real
/// room's messages are), so the engine's copy-paste filters see ordinary
/// traffic. Not checked: use [`Content::legit_chat`].
pub fn chat_text<R: Rng>(rng: &mut R, seq: u64) -> String {
    let line = CHAT_LINES.choose(rng).copied().unwrap_or("主播好");
    let seq = letter_tag(seq);
    match rng.gen_range(0..4) {
        0 => format!("{line} {seq}"),
        1 => format!("{line} #{seq}"),
        2 => format!("[{seq}] {line}"),
        _ => format!("{line}（{seq}）"),
    }
}

/// `prefix` plus 8 random digits.
fn number<R: Rng>(rng: &mut R, prefix: u16) -> String {
    format!("{prefix}{:08}", rng.gen_range(0..100_000_000u32))
}

/// Write an 11-digit number the way people type it: mostly bare, sometimes
/// with `+86` or spaces.
fn typed<R: Rng>(rng: &mut R, digits: &str) -> String {
    match rng.gen_range(0..10) {
        0..=5 => digits.to_owned(),
        6..=8 => format!("+86{digits}"),
        _ => format!("+86 {} {} {}", &digits[..3], &digits[3..7], &digits[7..]),
    }
}

/// An 11-digit mainland mobile number, written the way people type it.
/// Not checked for uniqueness or fake patterns: use [`mobile`].
#[cfg(test)]
pub fn phone<R: Rng>(rng: &mut R) -> String {
    let prefix = MOBILE_PREFIXES.choose(rng).copied().unwrap_or(138);
    let digits = number(rng, prefix);
    typed(rng, &digits)
}

/// A callable mobile number the engine accepts without a flag (a plain
/// mobile range, no made-up pattern) and that `used` has not seen (the
/// engine would call a second lead with it a `duplicate_lead`). `used`
/// holds E.164 forms.
pub fn mobile<R: Rng>(rng: &mut R, used: &mut HashSet<String>) -> String {
    loop {
        let prefix = MOBILE_PREFIXES.choose(rng).copied().unwrap_or(138);
        let digits = number(rng, prefix);
        let e164 = format!("+86{digits}");
        if phone::classify(&e164) == phone::PhoneClass::Mobile
            && !phone::looks_fake(&e164)
            && used.insert(e164)
        {
            return typed(rng, &digits);
        }
    }
}

/// The phones the `shared_phone` tactic uses: the same for a seed in every
/// room, from ranges no one else draws from.
pub fn shared_phones<R: Rng>(rng: &mut R, n: u32) -> Vec<String> {
    let mut used = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n as usize {
        let prefix = SHARED_PREFIXES.choose(rng).copied().unwrap_or(199);
        let digits = number(rng, prefix);
        let e164 = format!("+86{digits}");
        if phone::classify(&e164) == phone::PhoneClass::Mobile
            && !phone::looks_fake(&e164)
            && used.insert(e164)
        {
            out.push(digits);
        }
    }
    out
}

/// Name, optional WeChat id and form fields of a lead.
fn form<R: Rng>(rng: &mut R) -> (String, String, Vec<(String, String)>) {
    let name = NAMES.choose(rng).copied().unwrap_or("张三").to_owned();
    let wechat = if rng.gen_bool(0.4) {
        format!("wxid_{:010x}", rng.gen::<u64>() & 0xff_ffff_ffff)
    } else {
        String::new()
    };
    let mut fields = vec![(
        "city".to_owned(),
        CITIES.choose(rng).copied().unwrap_or("上海").to_owned(),
    )];
    if rng.gen_bool(0.5) {
        fields.push((
            "interest".to_owned(),
            INTERESTS
                .choose(rng)
                .copied()
                .unwrap_or("雅思课程")
                .to_owned(),
        ));
    }
    (name, wechat, fields)
}

/// The consent text version the simulated app shows with its lead form
/// (sent in every lead; `verify` checks it is stored).
pub const CONSENT_VERSION: &str = "2026-12-consent-v3";

/// A lead a genuine viewer would file: consent given, honeypot empty, the
/// given phone and fill time. `client_lead_id` is left 0 for the viewer.
pub fn legit_lead<R: Rng>(rng: &mut R, phone: String, fill_ms: u32) -> Lead {
    let (name, wechat, fields) = form(rng);
    Lead {
        client_lead_id: 0,
        phone,
        wechat,
        name,
        fields,
        consent: true,
        consent_version: CONSENT_VERSION.to_owned(),
        honeypot: String::new(),
        fill_ms,
    }
}

/// A form fill time log-uniform in `[lo, hi]` seconds (most people are
/// quick, a few take their time), in ms.
pub fn fill_ms<R: Rng>(rng: &mut R, secs: [f64; 2]) -> u32 {
    let (lo, hi) = (secs[0].max(0.001), secs[1].max(secs[0]).max(0.001));
    let x = (lo.ln() + rng.gen::<f64>() * (hi.ln() - lo.ln())).exp();
    (x * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// How a fake-lead bot tries its luck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tactic {
    /// IoT number (13-digit 1064x, or 11-digit 14x IoT): `phone_unreachable`.
    Iot,
    /// 145 data card: `phone_unreachable`.
    DataCard,
    /// Honeypot filled: `bot_honeypot`.
    Honeypot,
    /// Submitted within 2.5 s of the form showing: `too_fast`.
    TooFast,
    /// One phone in many rooms: `duplicate_lead`, then `velocity_phone`.
    SharedPhone,
    /// One viewer, many leads: `velocity_viewer` after the third.
    ManyLeads,
    /// Made-up number: `fake_pattern`, scored `suspect`.
    FakePattern,
    /// Consent not ticked: `no_consent`.
    NoConsent,
}

impl Tactic {
    /// Every tactic, in `[classes.fake_lead_bot.tactics]` order.
    pub const ALL: [Tactic; 8] = [
        Tactic::Iot,
        Tactic::DataCard,
        Tactic::Honeypot,
        Tactic::TooFast,
        Tactic::SharedPhone,
        Tactic::ManyLeads,
        Tactic::FakePattern,
        Tactic::NoConsent,
    ];
}

/// A bot's lead for `tactic`. `phone` is used by the tactics that need a
/// valid-looking number (shared, many leads, honeypot, too fast, no
/// consent); the others make up their own.
pub fn bot_lead<R: Rng>(rng: &mut R, tactic: Tactic, valid_phone: String) -> Lead {
    let (name, wechat, fields) = form(rng);
    let mut lead = Lead {
        client_lead_id: 0,
        phone: valid_phone,
        wechat,
        name,
        fields,
        consent: true,
        consent_version: CONSENT_VERSION.to_owned(),
        honeypot: String::new(),
        // Bots hurry, but most stay above the engine's 3 s minimum.
        fill_ms: rng.gen_range(3_200..=8_000),
    };
    match tactic {
        Tactic::Iot => {
            lead.phone = if rng.gen_bool(0.5) {
                let op = [10646u32, 10648, 10649]
                    .choose(rng)
                    .copied()
                    .unwrap_or(10648);
                format!("{op}{:08}", rng.gen_range(0..100_000_000u32))
            } else {
                let prefix = [140u16, 141, 142, 143, 144, 146, 148]
                    .choose(rng)
                    .copied()
                    .unwrap_or(146);
                number(rng, prefix)
            };
        }
        Tactic::DataCard => lead.phone = number(rng, 145),
        Tactic::Honeypot => {
            lead.honeypot = ["1", "on", "http://x.cn", "张三"]
                .choose(rng)
                .copied()
                .unwrap_or("1")
                .to_owned();
        }
        Tactic::TooFast => lead.fill_ms = rng.gen_range(100..=2_500),
        Tactic::SharedPhone | Tactic::ManyLeads => {}
        Tactic::FakePattern => {
            let prefix = MOBILE_PREFIXES.choose(rng).copied().unwrap_or(138);
            let d: u8 = rng.gen_range(0..=9);
            let tail: String = match rng.gen_range(0..3) {
                0 => std::iter::repeat_n(char::from(b'0' + d), 8).collect(),
                1 => (0..8).map(|i| char::from(b'0' + (d.min(2) + i))).collect(),
                _ => (0..8).map(|i| char::from(b'0' + (d.max(7) - i))).collect(),
            };
            lead.phone = format!("{prefix}{tail}");
        }
        Tactic::NoConsent => lead.consent = false,
    }
    lead
}

/// The long texts raiders copy-paste. Clean on their own (no term, link or
/// contact): only the raid rule can catch them.
const RAID_TEXTS: &[&str] = &[
    "关注主播主页，私信领取全套雅思真题资料，名额有限先到先得",
    "家人们点点关注，今晚八点准时开播抽大奖，人人有份不要错过",
    "这家机构退费太难了大家谨慎报名，我已经等了三个月还没退",
    "全网最低价的婚纱照套餐，看我主页置顶视频了解详情哦",
    "想要免费装修设计方案的朋友，评论区留言我来一对一安排",
    "Follow my page for free IELTS materials, limited spots today only",
    "this stream is fake, the teacher is not certified, do not pay them",
    "主播的课我上过，完全没用，千万别交钱，大家去看看别家吧",
];

/// Repeated-character floods (each a `flood` for the engine).
const FLOODS: &[&str] = &[
    "哈哈哈哈哈哈哈哈哈哈哈哈",
    "啊啊啊啊啊啊啊啊啊啊啊啊啊啊",
    "666666666666666",
    "！！！！！！！！！！！！",
    "主播好主播好主播好主播好主播好主播好主播好主播好",
    "hahahahahahahahahahaha",
    "🔥🔥🔥🔥🔥🔥🔥🔥🔥🔥🔥🔥",
    "刷起来刷起来刷起来刷起来刷起来刷起来刷起来刷起来",
];

const HARASS_OPENERS: &[&str] = &["", "主播", "你就是个", "大家别信，", "这个", "笑死，"];
const HARASS_CLOSERS: &[&str] = &["", "！", "吧", "，滚", "??", " lol"];
const LINK_LEADS: &[&str] = &[
    "加群领资料",
    "戳这里",
    "低价代购",
    "看福利",
    "more info",
    "免费领课",
];
const TLD: &[&str] = &["com", "cn", "net", "top", "xyz", "vip"];

/// Random lowercase letters.
fn letters<R: Rng>(rng: &mut R, n: std::ops::RangeInclusive<usize>) -> String {
    let n = rng.gen_range(n);
    (0..n)
        .map(|_| char::from(rng.gen_range(b'a'..=b'z')))
        .collect()
}

/// Chinese numerals for a digit string ("138" → "一三八").
fn chinese_digits(d: &str) -> String {
    const N: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];
    d.bytes()
        .map(|b| N[usize::from(b.saturating_sub(b'0')).min(9)])
        .collect()
}

/// A full-width form of ASCII letters and digits (U+FF01..).
fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() {
                char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// Leetspeak the engine's skeleton undoes (a→4 e→3 i→1 o→0 s→5 t→7).
fn leet(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a' => '4',
            'e' => '3',
            'i' => '1',
            'o' => '0',
            's' => '5',
            't' => '7',
            c => c,
        })
        .collect()
}

/// Disguise a blocked term the way harassers do; every form here is undone
/// by the engine's skeleton.
fn evade<R: Rng>(rng: &mut R, term: &str) -> String {
    let term = term.replace('*', ["", "了个", "x"].choose(rng).copied().unwrap_or(""));
    let chars: Vec<char> = term.chars().collect();
    let join = |sep: &str| {
        chars
            .iter()
            .map(char::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let ascii = term.is_ascii();
    match rng.gen_range(0..if ascii { 9 } else { 6 }) {
        0 => term.clone(),
        1 => join(" "),
        2 => join("."),
        3 => join("\u{200B}"),
        4 => join("💩"),
        5 => join("！"),
        6 => full_width(&term),
        7 => leet(&term),
        _ => {
            // Stretch one letter ("fuuuuck") and shout.
            let i = rng.gen_range(0..chars.len().max(1));
            let n = rng.gen_range(2..5);
            chars
                .iter()
                .enumerate()
                .flat_map(|(j, c)| std::iter::repeat_n(*c, if j == i { n } else { 1 }))
                .collect::<String>()
                .to_uppercase()
        }
    }
}

/// Shared content state: the blocked terms the engine uses, compiled once.
#[derive(Debug)]
pub struct Content {
    terms: Vec<String>,
    matcher: BlockedTerms,
}

/// What a harasser's message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harassment {
    /// A blocked term, disguised.
    Term,
    /// A link.
    Link,
    /// Contact details.
    Contact,
}

impl Content {
    /// Compile `terms` (the engine's `guard.chat.blocked_terms`).
    pub fn new(terms: &[String]) -> anyhow::Result<Self> {
        Ok(Content {
            terms: terms.to_vec(),
            matcher: BlockedTerms::new(terms).map_err(|e| anyhow::anyhow!("blocked terms: {e}"))?,
        })
    }

    /// True when no content rule of the engine would reject `text`: no
    /// blocked term, link, contact details or flood, no run of 5 digits,
    /// and short enough. (Rate, duplicate and raid rules depend on timing
    /// and are kept clear by the schedule and unique tags.)
    pub fn is_clean(&self, text: &str) -> bool {
        let mut run = 0;
        for c in text.chars() {
            run = if c.is_ascii_digit() { run + 1 } else { 0 };
            if run >= 5 {
                return false;
            }
        }
        text.chars().count() <= 100
            && self.matcher.matches(&text::skeleton(text)).is_none()
            && !text::has_link(text)
            && text::contact_kind(text).is_none()
            && !text::is_flood(text)
    }

    /// A legitimate chat line, unique for `seq`, that no content rule
    /// catches. `seq` advances past any tag that had to be skipped.
    pub fn legit_chat<R: Rng>(&self, rng: &mut R, seq: &mut u64) -> String {
        loop {
            *seq += 1;
            let t = chat_text(rng, *seq);
            if self.is_clean(&t) {
                return t;
            }
        }
    }

    /// A harasser's message of the given kind.
    pub fn harass<R: Rng>(&self, rng: &mut R, kind: Harassment) -> String {
        match kind {
            Harassment::Term if !self.terms.is_empty() => {
                let term = self.terms.choose(rng).map_or("", String::as_str);
                let open = HARASS_OPENERS.choose(rng).copied().unwrap_or("");
                let close = HARASS_CLOSERS.choose(rng).copied().unwrap_or("");
                format!("{open}{}{close}", evade(rng, term))
            }
            Harassment::Term | Harassment::Link => {
                let label = letters(rng, 4..=8);
                let tld = TLD.choose(rng).copied().unwrap_or("com");
                let lead = LINK_LEADS.choose(rng).copied().unwrap_or("");
                let path = letters(rng, 3..=6);
                match rng.gen_range(0..8) {
                    0 => format!("{lead} www.{label}.{tld}"),
                    1 => format!("{lead} http://{label}.cn/{path}"),
                    2 => format!("{label}.{tld} {lead}"),
                    3 => format!("{lead} {label} dot com"),
                    4 => format!("{lead} {label}。com"),
                    5 => format!("{label}点com {lead}"),
                    6 => format!("{lead} t.cn/{path}"),
                    _ => format!("{lead} https://bit.ly/{path}"),
                }
            }
            Harassment::Contact => {
                let id = format!(
                    "{}{}",
                    letters(rng, 1..=1),
                    (0..rng.gen_range(5..=9))
                        .map(|_| {
                            let c = rng.gen_range(0..36u8);
                            char::from(if c < 26 { b'a' + c } else { b'0' + c - 26 })
                        })
                        .collect::<String>()
                );
                let mut used = HashSet::new();
                let digits = mobile(rng, &mut used)
                    .trim_start_matches("+86")
                    .replace(' ', "");
                let qq = rng.gen_range(10_000u32..999_999_999);
                match rng.gen_range(0..8) {
                    0 => format!("想要资料的加我微信 {id}"),
                    1 => format!("vx：{id} 私聊优惠"),
                    2 => format!("V信 {id}"),
                    3 => format!("有事加我 {id}"),
                    4 => format!("qq {qq} 进群"),
                    5 => format!("电话 {} {} {}", &digits[..3], &digits[3..7], &digits[7..]),
                    6 => format!("找我：{}", chinese_digits(&digits)),
                    _ => format!("➕v {id} 便宜"),
                }
            }
        }
    }

    /// The copy-paste text of wave `n`.
    pub fn raid_text(n: u32) -> &'static str {
        RAID_TEXTS[n as usize % RAID_TEXTS.len()]
    }

    /// One raider's copy of `text`: as is, or disguised with invisible
    /// characters, full-width letters, case and spacing (all undone by the
    /// engine's normalizer, so every copy counts as the same text).
    pub fn raid_copy<R: Rng>(rng: &mut R, text: &str, evasion_share: f64) -> String {
        if evasion_share <= 0.0 || !rng.gen_bool(evasion_share.min(1.0)) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() * 2);
        for c in text.chars() {
            match rng.gen_range(0..10) {
                0 => {
                    out.push('\u{200B}');
                    out.push(c);
                }
                1 if c.is_ascii_alphabetic() => out.push_str(&full_width(&c.to_string())),
                2 if c.is_ascii_lowercase() => out.push(c.to_ascii_uppercase()),
                3 if c == ' ' => out.push_str("  "),
                _ => out.push(c),
            }
        }
        if rng.gen_bool(0.3) {
            out.push(' ');
        }
        out
    }

    /// A repeated-character flood.
    pub fn flood<R: Rng>(rng: &mut R) -> &'static str {
        FLOODS.choose(rng).copied().unwrap_or(FLOODS[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn content() -> Content {
        let terms: Vec<String> = DEFAULT_BLOCKED_TERMS
            .iter()
            .map(|s| s.to_string())
            .collect();
        Content::new(&terms).unwrap()
    }

    fn e164(p: &str) -> String {
        phone::to_e164(p, "86").unwrap()
    }

    #[test]
    fn default_terms_are_the_engine_loadtest_terms() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("engine-loadtest.toml");
        let cfg = roomgate::config::Config::from_file(&path).expect("engine-loadtest.toml parses");
        assert_eq!(cfg.guard.chat.blocked_terms, DEFAULT_BLOCKED_TERMS);
        assert_eq!(cfg.guard.dry_run, ["velocity_ip"]);
    }

    #[test]
    fn mobiles_are_unique_plain_and_unflagged() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut used = HashSet::new();
        for _ in 0..5000 {
            let p = mobile(&mut rng, &mut used);
            let e = e164(&p);
            assert_eq!(phone::classify(&e), phone::PhoneClass::Mobile, "{p}");
            assert!(!phone::looks_fake(&e), "{p}");
        }
        assert_eq!(used.len(), 5000);
        let shared = shared_phones(&mut rng, 4);
        assert_eq!(shared.len(), 4);
        for p in &shared {
            assert!(!used.contains(&e164(p)));
            assert_eq!(phone::classify(&e164(p)), phone::PhoneClass::Mobile);
        }
    }

    #[test]
    fn phones_are_valid_mainland_mobiles() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let p = phone(&mut rng);
            let digits: String = p
                .trim_start_matches("+86")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            assert_eq!(digits.len(), 11, "{p}");
            let prefix: u16 = digits[..3].parse().unwrap();
            assert!(MOBILE_PREFIXES.contains(&prefix), "{p}");
        }
    }

    #[test]
    fn bot_tactics_carry_what_the_engine_looks_for() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut used = HashSet::new();
        for _ in 0..300 {
            for t in Tactic::ALL {
                let p = mobile(&mut rng, &mut used);
                let l = bot_lead(&mut rng, t, p);
                let class = phone::to_e164(&l.phone, "86")
                    .map_or(phone::PhoneClass::Invalid, |e| phone::classify(&e));
                match t {
                    Tactic::Iot | Tactic::DataCard => {
                        assert_eq!(class, phone::PhoneClass::Unreachable, "{}", l.phone)
                    }
                    Tactic::FakePattern => {
                        assert!(phone::looks_fake(&e164(&l.phone)), "{}", l.phone);
                        assert!(class.is_accepted());
                    }
                    _ => assert_eq!(class, phone::PhoneClass::Mobile, "{t:?}"),
                }
                assert_eq!(t == Tactic::Honeypot, !l.honeypot.is_empty());
                assert_eq!(t == Tactic::TooFast, l.fill_ms < 3_000, "{t:?}");
                assert_eq!(t == Tactic::NoConsent, !l.consent);
            }
        }
    }

    #[test]
    fn legit_leads_look_genuine_and_fit_the_wire_limits() {
        let limits = roomgate::wire::Limits::default();
        let mut rng = StdRng::seed_from_u64(2);
        let mut used = HashSet::new();
        for _ in 0..500 {
            let fill = fill_ms(&mut rng, [8.0, 90.0]);
            assert!((8_000..=90_000).contains(&fill), "{fill}");
            let p = mobile(&mut rng, &mut used);
            let l = legit_lead(&mut rng, p, fill);
            assert!(l.consent && l.honeypot.is_empty());
            assert_eq!(l.fields[0].0, "city");
            assert!(l.phone.len() <= limits.max_field_bytes);
        }
    }

    #[test]
    fn legit_chat_is_unique_and_never_caught() {
        let c = content();
        let mut rng = StdRng::seed_from_u64(3);
        let mut seq = 0;
        let texts: Vec<String> = (0..20_000)
            .map(|_| c.legit_chat(&mut rng, &mut seq))
            .collect();
        let unique: HashSet<String> = texts.iter().map(|t| text::normalize(t)).collect();
        assert_eq!(unique.len(), texts.len(), "unique after normalization");
        assert!(texts.iter().all(|t| c.is_clean(t)));
        assert!(texts.iter().any(|t| !t.is_ascii()));
        // The tags that spell a term are skipped, not sent.
        assert!(!c.is_clean("主播好 fuck"));
        assert!(!c.is_clean("order 12345"));
    }

    #[test]
    fn harassment_is_always_caught_by_the_rule_it_targets() {
        let c = content();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..3000 {
            let t = c.harass(&mut rng, Harassment::Term);
            assert!(
                c.matcher.matches(&text::skeleton(&t)).is_some(),
                "term missed: {t:?}"
            );
            let l = c.harass(&mut rng, Harassment::Link);
            assert!(text::has_link(&l), "link missed: {l:?}");
            let k = c.harass(&mut rng, Harassment::Contact);
            assert!(text::contact_kind(&k).is_some(), "contact missed: {k:?}");
            for t in [t, l, k] {
                assert!(!c.is_clean(&t));
                assert!(t.chars().count() <= 100);
            }
        }
    }

    #[test]
    fn raid_copies_are_clean_long_and_the_same_text_to_the_engine() {
        let c = content();
        let mut rng = StdRng::seed_from_u64(6);
        for n in 0..RAID_TEXTS.len() as u32 {
            let text = Content::raid_text(n);
            assert!(c.is_clean(text), "{text}");
            let norm = text::normalize(text);
            assert!(norm.chars().count() >= 8);
            for _ in 0..50 {
                let copy = Content::raid_copy(&mut rng, text, 1.0);
                assert_eq!(text::normalize(&copy), norm, "{copy:?}");
            }
        }
    }

    #[test]
    fn floods_are_floods() {
        for f in FLOODS {
            assert!(text::is_flood(f), "{f}");
        }
    }
}
