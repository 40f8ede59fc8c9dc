//! What simulated viewers say: chat lines and lead forms that look like a real
//! Chinese lead-generation live stream (education, photography, renovation).
//!
//! Pure: every value comes from the caller's seeded RNG. Client ids are not
//! chosen here; the viewer assigns them when it sends.

use rand::{seq::SliceRandom, Rng};
use roomgate::wire::Lead;

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
/// traffic.
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

/// An 11-digit mainland mobile number, written the way people type it:
/// mostly bare, sometimes with `+86` or spaces.
pub fn phone<R: Rng>(rng: &mut R) -> String {
    let prefix = MOBILE_PREFIXES.choose(rng).copied().unwrap_or(138);
    let rest: u32 = rng.gen_range(0..100_000_000);
    let digits = format!("{prefix}{rest:08}");
    match rng.gen_range(0..10) {
        0..=5 => digits,
        6..=8 => format!("+86{digits}"),
        _ => format!("+86 {} {} {}", &digits[..3], &digits[3..7], &digits[7..]),
    }
}

/// A lead a genuine viewer would file: consent given, honeypot empty, a form
/// filled in 8–90 s. `client_lead_id` is left 0 for the viewer to assign.
pub fn lead<R: Rng>(rng: &mut R) -> Lead {
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
    Lead {
        client_lead_id: 0,
        phone: phone(rng),
        wechat,
        name,
        fields,
        consent: true,
        honeypot: String::new(),
        fill_ms: rng.gen_range(8_000..=90_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

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
            assert!(digits.chars().all(|c| c.is_ascii_digit()), "{p}");
            let prefix: u16 = digits[..3].parse().unwrap();
            assert!(MOBILE_PREFIXES.contains(&prefix), "{p}");
        }
    }

    #[test]
    fn leads_look_genuine_and_fit_the_wire_limits() {
        let limits = roomgate::wire::Limits::default();
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..500 {
            let l = lead(&mut rng);
            assert!(l.consent && l.honeypot.is_empty());
            assert!((8_000..=90_000).contains(&l.fill_ms));
            assert_eq!(l.fields[0].0, "city");
            assert!(l.phone.len() <= limits.max_field_bytes);
        }
    }

    #[test]
    fn chat_lines_vary_and_fit_the_limit() {
        let mut rng = StdRng::seed_from_u64(3);
        let texts: std::collections::HashSet<String> =
            (0..1000).map(|i| chat_text(&mut rng, i)).collect();
        assert_eq!(texts.len(), 1000, "unique per sequence number");
        assert!(texts.iter().any(|t| !t.is_ascii()));
        assert!(texts.iter().any(|t| t.is_ascii()));
        assert!(texts.iter().all(|t| t.chars().count() <= 100));
    }
}
