//! Phone checks for leads, sans-IO: normalise to E.164, classify, spot fakes.
//!
//! A lead's phone goes through three pure steps:
//!
//! 1. [`to_e164`] turns what a viewer typed (`138 0013 8000`,
//!    `(+86)138-0013-8000`, `0086…`, full-width `８６１３８…`) into
//!    `+<country code><national number>`, or a [`PhoneError`] when it is not
//!    a phone number at all (letters, empty, longer than E.164 allows).
//! 2. [`classify`] says whether a consultant can call it back:
//!    [`PhoneClass::Mobile`] (callable), [`PhoneClass::VirtualOperator`]
//!    (callable, flagged `virtual_operator`, lower score),
//!    [`PhoneClass::Unreachable`] (IoT / data-only ranges: `phone_unreachable`)
//!    or [`PhoneClass::Invalid`] (`phone_invalid`).
//!    [`PhoneClass::reason`] maps a class to its wire reason.
//! 3. [`looks_fake`] spots numbers typed by bots or by people who don't want
//!    a call (`13800000000`, `13812345678`): a score signal, never a reject.
//!
//! For +86 the decisions live in one table, [`CN_RANGES`], each row citing
//! where its range comes from, so an operator can see and change them. Other
//! country codes get length and digit checks only ([`COUNTRIES`]); masking
//! for analysts is [`crate::pii::mask_phone`].

use crate::wire::Reason;

/// Most digits in an E.164 number, country code included (ITU-T E.164 §6).
pub const E164_MAX_DIGITS: usize = 15;

/// Fewest digits accepted by [`to_e164`], country code included. The
/// shortest numbers in service (4-digit national numbers behind a 3-digit
/// country code, e.g. Niue +683) have 7.
pub const E164_MIN_DIGITS: usize = 7;

/// Why a typed phone is not a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing but blanks and separators.
    #[error("empty phone")]
    Empty,
    /// Letters or other characters that are neither digits nor separators,
    /// or a `+` that is not in front.
    #[error("not a phone number")]
    NotANumber,
    /// Fewer than [`E164_MIN_DIGITS`] or more than [`E164_MAX_DIGITS`]
    /// digits once the country code is added.
    #[error("bad phone length")]
    BadLength,
    /// The number (or the configured default) has a country code starting
    /// with 0, or the default country is not 1–3 digits.
    #[error("bad country code")]
    BadCountryCode,
}

/// Whether a consultant can call a number back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneClass {
    /// Callable. For +86 a mobile number in a voice range; for other country
    /// codes any number of a plausible shape (mobile and fixed lines are not
    /// told apart outside +86), so read the name as "callable".
    Mobile,
    /// Callable, but a virtual-operator (MVNO, 移动通信转售) range: accepted,
    /// flagged `virtual_operator`, lower score.
    VirtualOperator,
    /// A range that cannot take a call: IoT / M2M and data-only ranges.
    Unreachable,
    /// Not a number in service: unknown range, wrong length or shape.
    Invalid,
}

impl PhoneClass {
    /// True when a lead with this number is accepted (possibly flagged).
    pub fn is_accepted(self) -> bool {
        matches!(self, PhoneClass::Mobile | PhoneClass::VirtualOperator)
    }

    /// The reason a lead with this number carries: `none`,
    /// `virtual_operator` (a flag), `phone_unreachable` or `phone_invalid`.
    pub fn reason(self) -> Reason {
        match self {
            PhoneClass::Mobile => Reason::None,
            PhoneClass::VirtualOperator => Reason::VirtualOperator,
            PhoneClass::Unreachable => Reason::PhoneUnreachable,
            PhoneClass::Invalid => Reason::PhoneInvalid,
        }
    }
}

/// One row of the +86 numbering table: national numbers of `len` digits
/// starting with `prefix` are `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CnRange {
    /// Leading digits of the national number (after `+86`).
    pub prefix: &'static str,
    /// National number length this row applies to (11, or 13 for IoT).
    pub len: usize,
    /// Class of the numbers in the range.
    pub class: PhoneClass,
    /// Where the range comes from.
    pub source: &'static str,
}

// Sources, cited by short name in the table below.
//
// - PLAN_2017: MIIT (工业和信息化部)《电信网编号计划（2017年版）》, the national
//   numbering plan: 13x–19x mobile network numbers (11 digits); 140–144,
//   146 and 148 planned as 13-digit IoT (物联网) network numbers; 145/147/149
//   data-card (数据上网卡) network numbers.
// - IOT_1064: MIIT allocation of 13-digit M2M / IoT numbers under 1064 by
//   operator digit: 10646 China Unicom, 10648 China Mobile, 10649 China
//   Telecom; kept for IoT by PLAN_2017.
// - IOT_14X: operator allocations inside the PLAN_2017 IoT blocks: 1440 and
//   1441 (China Mobile), 148 (China Mobile), 146 (China Unicom), 1410 (China
//   Telecom); the rest of 140–144 is reserved for IoT. As compiled by
//   zh.wikipedia「中国内地移动终端通讯号码」and the community-maintained
//   VincentSit/ChinaMobilePhoneNumberRegex (rules.json, 2020).
// - MVNO: MIIT allocations for 移动通信转售业务 (virtual operators): 170
//   (1700–1709 by host operator, 2014), 171 (2016), 162 / 165 / 167
//   (2018–2019); same compilations as IOT_14X.
// - DATA_CARD: 145 (Unicom), 147 (Mobile), 149 (Telecom) are data-card
//   ranges in PLAN_2017. MIIT lets operators enable voice on them at their
//   discretion; China Mobile (147) and China Telecom (149) have issued
//   voice-capable cards, no such issue is documented for China Unicom's 145
//   (VincentSit README, note 2). libphonenumber's CN metadata counts 145 and
//   147 as mobile.
//
// Decisions:
// - The base rule is the issue's `1[3-9]` + 11 digits = mobile, deliberately
//   permissive: a new segment (190/192/196/197 were released 2019–2020) must
//   not reject real leads before this table is updated. Bots typing
//   unallocated segments are left to `looks_fake`, rate limits and dedup.
// - 14x is listed digit by digit. The IoT blocks are data-only: a 13-digit
//   number there is `Unreachable`, and so is an 11-digit number typed into
//   them (it is not a voice number either way, and some lists wrongly show
//   146/148 as 11-digit mobile ranges).
// - 147 and 149: `Mobile` (voice-capable cards exist; rejecting them loses
//   real leads). 145: `Unreachable` (the issue says data-only 14x is
//   unreachable and there is no evidence of voice on 145). Flip that row to
//   `Mobile` if China Unicom voice cards on 145 show up in lead data.
// - Satellite / emergency ranges (1349, 1740x, 1749) stay `Mobile`: they take
//   calls.
// - Chinese fixed lines (+86 10…, +86 21…, +86 755…) are `Invalid`: lead
//   forms ask for a 手机号, and consultants call and add WeChat on mobiles.
const PLAN_2017: &str = "《电信网编号计划（2017年版）》 mobile 13x-19x";
const IOT_1064: &str = "MIIT 13-digit M2M/IoT 1064x";
const IOT_14X: &str = "《电信网编号计划（2017年版）》 13-digit IoT 140-144/146/148";
const MVNO: &str = "MIIT 移动通信转售 (MVNO) ranges";
const DATA_CARD: &str = "《电信网编号计划（2017年版）》 data card; voice at operator discretion";

const fn row(prefix: &'static str, len: usize, class: PhoneClass, source: &'static str) -> CnRange {
    CnRange {
        prefix,
        len,
        class,
        source,
    }
}

/// The +86 numbering decisions. A national number takes the class of the
/// row with the longest `prefix` among rows of its length; a number no row
/// matches is [`PhoneClass::Invalid`] (e.g. 12x, 11-digit 10x/11x, 12 digits).
pub const CN_RANGES: &[CnRange] = &[
    // Base rule: 11-digit mobile numbers 13x, 15x–19x (14x is listed below).
    row("13", 11, PhoneClass::Mobile, PLAN_2017),
    row("15", 11, PhoneClass::Mobile, PLAN_2017),
    row("16", 11, PhoneClass::Mobile, PLAN_2017),
    row("17", 11, PhoneClass::Mobile, PLAN_2017),
    row("18", 11, PhoneClass::Mobile, PLAN_2017),
    row("19", 11, PhoneClass::Mobile, PLAN_2017),
    // Virtual operators: callable, lower score.
    row("162", 11, PhoneClass::VirtualOperator, MVNO), // China Telecom MVNOs
    row("165", 11, PhoneClass::VirtualOperator, MVNO), // China Mobile MVNOs
    row("167", 11, PhoneClass::VirtualOperator, MVNO), // China Unicom MVNOs
    row("170", 11, PhoneClass::VirtualOperator, MVNO), // 1700-1709, all hosts
    row("171", 11, PhoneClass::VirtualOperator, MVNO), // China Unicom MVNOs
    // 14x, 11 digits: data cards and IoT blocks (see Decisions above).
    row("140", 11, PhoneClass::Unreachable, IOT_14X),
    row("141", 11, PhoneClass::Unreachable, IOT_14X),
    row("142", 11, PhoneClass::Unreachable, IOT_14X),
    row("143", 11, PhoneClass::Unreachable, IOT_14X),
    row("144", 11, PhoneClass::Unreachable, IOT_14X),
    row("145", 11, PhoneClass::Unreachable, DATA_CARD), // Unicom; no voice issue known
    row("146", 11, PhoneClass::Unreachable, IOT_14X),
    row("147", 11, PhoneClass::Mobile, DATA_CARD), // Mobile; voice cards issued
    row("148", 11, PhoneClass::Unreachable, IOT_14X),
    row("149", 11, PhoneClass::Mobile, DATA_CARD), // Telecom; voice cards issued
    // 13-digit IoT numbers: data only.
    row("10646", 13, PhoneClass::Unreachable, IOT_1064), // China Unicom
    row("10648", 13, PhoneClass::Unreachable, IOT_1064), // China Mobile
    row("10649", 13, PhoneClass::Unreachable, IOT_1064), // China Telecom
    row("140", 13, PhoneClass::Unreachable, IOT_14X),    // reserved for IoT
    row("141", 13, PhoneClass::Unreachable, IOT_14X),    // 1410 China Telecom
    row("142", 13, PhoneClass::Unreachable, IOT_14X),    // reserved for IoT
    row("143", 13, PhoneClass::Unreachable, IOT_14X),    // reserved for IoT
    row("144", 13, PhoneClass::Unreachable, IOT_14X),    // 1440/1441 China Mobile
    row("146", 13, PhoneClass::Unreachable, IOT_14X),    // China Unicom
    row("148", 13, PhoneClass::Unreachable, IOT_14X),    // China Mobile
];

/// A country code with the lengths of its national (significant) numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    /// ITU-T E.164 country code, digits only.
    pub code: &'static str,
    /// Shortest national number, digits.
    pub min_len: usize,
    /// Longest national number, digits.
    pub max_len: usize,
}

const fn cc(code: &'static str, min_len: usize, max_len: usize) -> Country {
    Country {
        code,
        min_len,
        max_len,
    }
}

/// Country codes checked for national number length (mobile and fixed lines
/// together; the national number never starts with a trunk `0` in any of
/// them). Lengths follow each country's numbering plan as summarised in
/// ITU-T E.164 annex notifications and libphonenumber's metadata. +86 is not
/// here: it is [`CN_RANGES`]. A code not listed is accepted when the whole
/// number has 8–15 digits.
pub const COUNTRIES: &[Country] = &[
    cc("1", 10, 10),  // NANP: NPA-NXX-XXXX, NPA and NXX start 2-9
    cc("7", 10, 10),  // Russia, Kazakhstan
    cc("33", 9, 9),   // France
    cc("34", 9, 9),   // Spain
    cc("44", 10, 10), // United Kingdom (mobile 7xxx xxxxxx, geographic)
    cc("49", 10, 11), // Germany (mobile 15x/16x/17x; main fixed lines)
    cc("60", 9, 10),  // Malaysia
    cc("61", 9, 9),   // Australia
    cc("62", 9, 12),  // Indonesia
    cc("64", 8, 10),  // New Zealand
    cc("65", 8, 8),   // Singapore
    cc("66", 8, 9),   // Thailand (mobile 9, fixed 8)
    cc("81", 9, 10),  // Japan (mobile 10, fixed 9)
    cc("82", 9, 10),  // South Korea
    cc("84", 9, 10),  // Vietnam (mobile 9, fixed 10)
    cc("91", 10, 10), // India
    cc("852", 8, 8),  // Hong Kong
    cc("853", 8, 8),  // Macau
    cc("886", 9, 9),  // Taiwan (mobile 9xx xxx xxx)
];

/// Length of the ITU-T E.164 country code at the start of `digits`, by the
/// structure of the code assignments: 1 and 7 are one digit; the two-digit
/// codes are 20, 27, 30–34, 36, 39, 40, 41, 43–49, 51–58, 60–66, 81, 82, 84,
/// 86, 90–95 and 98; every other code has three digits. `None` when `digits`
/// is empty or starts with 0 (no country code does).
fn country_code_len(digits: &[u8]) -> Option<usize> {
    let first = *digits.first()?;
    let second = digits.get(1).copied().unwrap_or(b'x');
    let two = match first {
        b'1' | b'7' => return Some(1),
        b'2' => matches!(second, b'0' | b'7'),
        b'3' => matches!(second, b'0'..=b'4' | b'6' | b'9'),
        b'4' => second != b'2',
        b'5' => matches!(second, b'1'..=b'8'),
        b'6' => matches!(second, b'0'..=b'6'),
        b'8' => matches!(second, b'1' | b'2' | b'4' | b'6'),
        b'9' => matches!(second, b'0'..=b'5' | b'8'),
        _ => return None,
    };
    Some(if two { 2 } else { 3 })
}

fn country(code: &str) -> Option<&'static Country> {
    COUNTRIES.iter().find(|c| c.code == code)
}

/// Bare national numbers shaped like Chinese mobiles / IoT numbers, read as
/// +86 whatever the default country (this is a Chinese platform), except
/// under NANP where an 11-digit `1…` is the national form with the `1`.
fn is_cn_shaped(national: &str) -> bool {
    let b = national.as_bytes();
    match b.len() {
        11 => b[0] == b'1',
        13 => national.starts_with("10") || national.starts_with("14"),
        _ => false,
    }
}

/// Map one typed character: `Some(Some(d))` an ASCII digit, `Some(None)` a
/// separator to skip, `None` anything else. `'+'` is handled by the caller.
fn map_char(c: char) -> Option<Option<u8>> {
    match c {
        '0'..='9' => Some(Some(c as u8)),
        // Full-width digits ０-９ (IME input).
        '\u{FF10}'..='\u{FF19}' => Some(Some(b'0' + (c as u32 - 0xFF10) as u8)),
        // Separators: blanks, dashes, dots, slashes, parentheses (ASCII and
        // full-width), and the invisible marks phones add when a number is
        // copied from contacts (zero-width, bidi embedding / isolates, BOM).
        '-'
        | '.'
        | '/'
        | '('
        | ')'
        | '\u{FF0D}'
        | '\u{FF0E}'
        | '\u{FF0F}'
        | '\u{FF08}'
        | '\u{FF09}'
        | '\u{2010}'..='\u{2015}'
        | '\u{2212}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}' => Some(None),
        c if c.is_whitespace() => Some(None),
        _ => None,
    }
}

/// Normalise a typed phone to E.164 (`+` then 7–15 digits).
///
/// Accepts spaces, dashes, dots, slashes and parentheses (ASCII or
/// full-width), full-width digits, a leading `+` or `＋`, the `00`
/// international prefix (`0086…`), a country code typed without `+`
/// (`86 138…`), and a national trunk `0` for the countries in [`COUNTRIES`]
/// (`020 7946 0958` under `"44"`; a stray `(0)` after the country code is
/// dropped too). Without a `+` or `00`:
/// - an 11-digit number starting with `1`, or a 13-digit one starting with
///   `10`/`14` (IoT), is `+86` (unless `default_country` is `"1"`, NANP), so
///   it is classified by [`CN_RANGES`];
/// - otherwise the number is national to `default_country` (digits, e.g.
///   `"86"`; a leading `+` is tolerated).
///
/// This only checks E.164 syntax: `1380013800` (10 digits) becomes
/// `+861380013800`, which [`classify`] calls [`PhoneClass::Invalid`].
pub fn to_e164(raw: &str, default_country: &str) -> Result<String, PhoneError> {
    let default_country = default_country.trim().trim_start_matches('+');
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for c in raw.chars() {
        if c == '+' || c == '\u{FF0B}' {
            if plus || !digits.is_empty() {
                return Err(PhoneError::NotANumber);
            }
            plus = true;
            continue;
        }
        match map_char(c) {
            Some(Some(d)) => {
                // Stop early on absurd input; 4 spare digits cover `00` and
                // a stray trunk `0`.
                if digits.len() >= E164_MAX_DIGITS + 4 {
                    return Err(PhoneError::BadLength);
                }
                digits.push(char::from(d));
            }
            Some(None) => {}
            None => return Err(PhoneError::NotANumber),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }

    let international = if plus {
        // `+0086…` is seen in the wild: drop the redundant `00`.
        digits.strip_prefix("00").unwrap_or(&digits).to_owned()
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        national_to_international(&digits, default_country)?
    };
    finish(international)
}

/// A number typed without `+`/`00`: country code (if any) plus national part.
fn national_to_international(digits: &str, default_country: &str) -> Result<String, PhoneError> {
    let nanp = default_country == "1";
    if !nanp {
        if is_cn_shaped(digits) {
            return Ok(format!("86{digits}"));
        }
        if let Some(rest) = digits.strip_prefix("86") {
            if is_cn_shaped(rest) {
                return Ok(digits.to_owned());
            }
        }
    }
    let valid_default = (1..=3).contains(&default_country.len())
        && default_country.bytes().all(|b| b.is_ascii_digit())
        && !default_country.starts_with('0');
    if !valid_default {
        return Err(PhoneError::BadCountryCode);
    }
    if let Some(c) = country(default_country) {
        let fits = |n: usize| (c.min_len..=c.max_len).contains(&n);
        // Country code typed without `+` (`1 415…` under NANP, `44 20…`).
        if let Some(rest) = digits.strip_prefix(c.code) {
            if fits(rest.len()) && !fits(digits.len()) && !rest.starts_with('0') {
                return Ok(digits.to_owned());
            }
        }
    }
    // Trunk `0` (`020 7946 0958`): stripped by `finish` for listed countries.
    Ok(format!("{default_country}{digits}"))
}

/// Drop a stray trunk `0` after a known country code, check the length.
fn finish(mut international: String) -> Result<String, PhoneError> {
    let cc_len = country_code_len(international.as_bytes()).ok_or(PhoneError::BadCountryCode)?;
    let cc = international.get(..cc_len).unwrap_or_default();
    let known = cc == "86" || country(cc).is_some();
    if known && international.as_bytes().get(cc_len) == Some(&b'0') {
        international.remove(cc_len);
    }
    if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&international.len()) {
        return Err(PhoneError::BadLength);
    }
    international.insert(0, '+');
    Ok(international)
}

/// The digits of an E.164 string, or `None` if it is not `+` and 7–15 digits.
fn e164_digits(e164: &str) -> Option<&str> {
    let d = e164.strip_prefix('+')?;
    let ok = (E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&d.len())
        && d.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(d)
}

/// Split E.164 digits into country code and national number.
fn split_country(digits: &str) -> Option<(&str, &str)> {
    let n = country_code_len(digits.as_bytes())?;
    Some((digits.get(..n)?, digits.get(n..)?))
}

/// Class of a +86 national number, by [`CN_RANGES`].
pub fn classify_cn(national: &str) -> PhoneClass {
    CN_RANGES
        .iter()
        .filter(|r| r.len == national.len() && national.starts_with(r.prefix))
        .max_by_key(|r| r.prefix.len())
        .map_or(PhoneClass::Invalid, |r| r.class)
}

/// Classify an E.164 number (as produced by [`to_e164`]).
///
/// - `+86`: by [`CN_RANGES`].
/// - a code in [`COUNTRIES`]: [`PhoneClass::Mobile`] ("callable") when the
///   national number has a listed length and does not start with `0`; under
///   NANP the area code and exchange must also start with 2–9.
/// - any other code: [`PhoneClass::Mobile`] when the whole number has 8–15
///   digits.
///
/// Everything else, including strings that are not `+` and 7–15 digits, is
/// [`PhoneClass::Invalid`].
pub fn classify(e164: &str) -> PhoneClass {
    let Some(digits) = e164_digits(e164) else {
        return PhoneClass::Invalid;
    };
    let Some((code, national)) = split_country(digits) else {
        return PhoneClass::Invalid;
    };
    if code == "86" {
        return classify_cn(national);
    }
    let valid = match country(code) {
        Some(c) => {
            let n = national.as_bytes();
            (c.min_len..=c.max_len).contains(&n.len())
                && n.first() != Some(&b'0')
                && (code != "1" || [0, 3].iter().all(|&i| n.get(i) >= Some(&b'2')))
        }
        None => (8..=E164_MAX_DIGITS).contains(&digits.len()),
    };
    if valid {
        PhoneClass::Mobile
    } else {
        PhoneClass::Invalid
    }
}

/// Shortest run that makes a number look made up.
const FAKE_RUN: usize = 8;

/// True when the national number looks made up: a run of at least 8
/// identical digits (`13800000000`, `13888888888`) or of 8 digits counting
/// up or down by one (`13812345678`, `13987654321`). Real numbers like this
/// exist but are rare; use it to lower a lead's score, never to reject.
/// `false` for strings that are not E.164.
pub fn looks_fake(e164: &str) -> bool {
    let Some((_, national)) = e164_digits(e164).and_then(split_country) else {
        return false;
    };
    let n = national.as_bytes();
    let (mut same, mut up, mut down) = (1usize, 1usize, 1usize);
    for w in n.windows(2) {
        let (a, b) = (w[0], w[1]);
        same = if b == a { same + 1 } else { 1 };
        up = if b == a.wrapping_add(1) { up + 1 } else { 1 };
        down = if b.wrapping_add(1) == a { down + 1 } else { 1 };
        if same.max(up).max(down) >= FAKE_RUN {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use PhoneClass::*;

    fn class_of(raw: &str) -> PhoneClass {
        to_e164(raw, "86").map_or(Invalid, |e| classify(&e))
    }

    #[test]
    fn normalises_typical_input() {
        let cases: &[(&str, &str)] = &[
            ("13800138000", "+8613800138000"),
            ("138 0013 8000", "+8613800138000"),
            ("138-0013-8000", "+8613800138000"),
            ("138.0013.8000", "+8613800138000"),
            ("+86 138-0013-8000", "+8613800138000"),
            ("+86 (0) 138 0013 8000", "+8613800138000"),
            ("0086 13800138000", "+8613800138000"),
            ("+0086 13800138000", "+8613800138000"),
            ("86 13800138000", "+8613800138000"),
            ("8613800138000", "+8613800138000"),
            ("(+86)13800138000", "+8613800138000"),
            ("（＋８６）１３８－００１３－８０００", "+8613800138000"),
            ("８６１３８００１３８０００", "+8613800138000"),
            ("＋８６ １３８　００１３　８０００", "+8613800138000"),
            ("\u{202A}+86 138 0013 8000\u{202C}", "+8613800138000"),
            ("  13800138000\t", "+8613800138000"),
            // 13-digit IoT numbers, bare or with 86.
            ("1064812345678", "+861064812345678"),
            ("1440 1234 56789", "+861440123456789"),
            ("86 1064912345678", "+861064912345678"),
            // 10 digits: syntactically fine, classified Invalid below.
            ("1380013800", "+861380013800"),
            // Other countries.
            ("+1 415 555 2671", "+14155552671"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("001 415 555 2671", "+14155552671"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+44 (0)20 7946 0958", "+442079460958"),
            ("+852 9123 4567", "+85291234567"),
            ("+886 912 345 678", "+886912345678"),
        ];
        for (raw, want) in cases {
            assert_eq!(to_e164(raw, "86").as_deref(), Ok(*want), "{raw:?}");
        }
    }

    #[test]
    fn uses_the_default_country_for_national_numbers() {
        let cases: &[(&str, &str, &str)] = &[
            ("415 555 2671", "1", "+14155552671"),
            ("1 415 555 2671", "1", "+14155552671"),
            ("14155552671", "+1", "+14155552671"),
            ("020 7946 0958", "44", "+442079460958"),
            ("44 20 7946 0958", "44", "+442079460958"),
            ("9123 4567", "852", "+85291234567"),
            // A mainland mobile typed in a Hong Kong room is still +86.
            ("13800138000", "852", "+8613800138000"),
            // Fixed line under +86: normalised, then Invalid for leads.
            ("010 1234 5678", "86", "+861012345678"),
        ];
        for (raw, cc, want) in cases {
            assert_eq!(to_e164(raw, cc).as_deref(), Ok(*want), "{raw:?} / {cc}");
        }
        assert_eq!(classify("+861012345678"), Invalid);
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        let cases: &[(&str, PhoneError)] = &[
            ("", PhoneError::Empty),
            ("   ", PhoneError::Empty),
            ("+", PhoneError::Empty),
            ("( - )", PhoneError::Empty),
            ("138abc", PhoneError::NotANumber),
            ("138 0013 800O", PhoneError::NotANumber),
            ("tel:13800138000", PhoneError::NotANumber),
            ("电话13800138000", PhoneError::NotANumber),
            ("13800138000 ext 12", PhoneError::NotANumber),
            ("138+0013", PhoneError::NotANumber),
            ("++8613800138000", PhoneError::NotANumber),
            ("13800138000#", PhoneError::NotANumber),
            ("138", PhoneError::BadLength),
            ("+1 555 12", PhoneError::BadLength),
            ("+86 1380013800012345", PhoneError::BadLength),
            ("1234567890123456789012345", PhoneError::BadLength),
            ("+0 123 4567 8901", PhoneError::BadCountryCode),
            ("0 12 34", PhoneError::BadLength),
        ];
        for (raw, want) in cases {
            assert_eq!(to_e164(raw, "86"), Err(*want), "{raw:?}");
        }
        assert_eq!(to_e164("9123 4567", "0"), Err(PhoneError::BadCountryCode));
        assert_eq!(to_e164("9123 4567", "x"), Err(PhoneError::BadCountryCode));
        assert_eq!(
            to_e164("9123 4567", "8521"),
            Err(PhoneError::BadCountryCode)
        );
    }

    #[test]
    fn cn_mobile() {
        for raw in [
            "13800138000", // China Mobile
            "13412345679", // China Mobile 134x
            "13491234567", // China Telecom satellite 1349
            "15012345679", // China Mobile
            "16612345679", // China Unicom
            "17312345679", // China Telecom
            "17400123456", // China Telecom satellite 1740x
            "18612345679", // China Unicom
            "18912345679", // China Telecom
            "19112345679", // China Telecom
            "19212345679", // China Broadnet (广电)
            "19612345679", // China Unicom 5G
            "19812345679", // China Mobile
            "19912345679", // China Telecom
            "14712345679", // China Mobile data card, voice issued
            "14912345679", // China Telecom data card, voice issued
        ] {
            assert_eq!(class_of(raw), Mobile, "{raw}");
        }
    }

    #[test]
    fn cn_virtual_operator() {
        for raw in [
            "16212345679",
            "16512345679",
            "16712345679",
            "17001234567",
            "17051234567",
            "17091234567",
            "17112345679",
        ] {
            assert_eq!(class_of(raw), VirtualOperator, "{raw}");
        }
    }

    #[test]
    fn cn_unreachable() {
        for raw in [
            // 13-digit 1064x M2M.
            "1064612345678",
            "1064812345678",
            "1064912345678",
            // 13-digit 14x IoT.
            "1440123456789",
            "1441123456789",
            "1410123456789",
            "1461234567890",
            "1481234567890",
            "1401234567890",
            // 11-digit numbers typed into IoT blocks, and the 145 data card.
            "14012345679",
            "14112345679",
            "14412345679",
            "14512345679",
            "14612345679",
            "14812345679",
        ] {
            assert_eq!(class_of(raw), Unreachable, "{raw}");
        }
    }

    #[test]
    fn cn_invalid() {
        for raw in [
            "1380013800",     // 10 digits
            "12012345679",    // 12x
            "10012345679",    // 11-digit 10x
            "11012345679",    // 11-digit 11x
            "138001380001",   // 12 digits
            "1064012345678",  // 1064x not allocated
            "1381234567890",  // 13 digits, not IoT
            "01012345678",    // Beijing fixed line
            "075512345678",   // Shenzhen fixed line
            "+8623456789012", // 11 digits not starting with 1
        ] {
            assert_eq!(class_of(raw), Invalid, "{raw}");
        }
    }

    #[test]
    fn other_countries() {
        let cases: &[(&str, PhoneClass)] = &[
            ("+1 415 555 2671", Mobile),
            ("+1 212 456 7890", Mobile),
            ("+1 115 555 2671", Invalid), // area code starts with 1
            ("+1 415 155 2671", Invalid), // exchange starts with 1
            ("+1 415 555 267", Invalid),  // 9 digits
            ("+44 20 7946 0958", Mobile),
            ("+44 7700 900123", Mobile),
            ("+44 20 7946 095", Invalid),
            ("+852 9123 4567", Mobile),
            ("+852 9123 456", Invalid),
            ("+853 6612 3456", Mobile),
            ("+886 912 345 678", Mobile),
            ("+65 8123 4567", Mobile),
            ("+60 12 345 6789", Mobile),
            ("+81 90 1234 5678", Mobile),
            ("+82 10 1234 5678", Mobile),
            ("+61 412 345 678", Mobile),
            ("+49 151 12345678", Mobile),
            ("+33 6 12 34 56 78", Mobile),
            ("+7 912 345 6789", Mobile),
            ("+7 912 345 678", Invalid),
            // Codes not in the table: 8-15 digits.
            ("+971 50 123 4567", Mobile),
            ("+380 50 123 4567", Mobile),
            ("+356 2123", Invalid), // 7 digits in all
        ];
        for (raw, want) in cases {
            assert_eq!(class_of(raw), *want, "{raw}");
        }
        assert_eq!(classify("+155512"), Invalid);
    }

    #[test]
    fn classify_rejects_non_e164() {
        for s in [
            "",
            "+",
            "13800138000",
            "+86 13800138000",
            "+86138001380001234",
            "+0123456789",
        ] {
            assert_eq!(classify(s), Invalid, "{s:?}");
        }
    }

    #[test]
    fn class_reasons() {
        assert!(Mobile.is_accepted() && VirtualOperator.is_accepted());
        assert!(!Unreachable.is_accepted() && !Invalid.is_accepted());
        assert_eq!(Mobile.reason(), Reason::None);
        assert_eq!(VirtualOperator.reason().as_str(), "virtual_operator");
        assert_eq!(Unreachable.reason().as_str(), "phone_unreachable");
        assert_eq!(Invalid.reason().as_str(), "phone_invalid");
    }

    #[test]
    fn range_table_is_consistent() {
        for (i, r) in CN_RANGES.iter().enumerate() {
            assert!(!r.prefix.is_empty() && r.prefix.bytes().all(|b| b.is_ascii_digit()));
            assert!(r.len == 11 || r.len == 13, "{r:?}");
            assert!(!r.source.is_empty());
            let dup = CN_RANGES[..i]
                .iter()
                .any(|o| o.prefix == r.prefix && o.len == r.len);
            assert!(!dup, "duplicate row {r:?}");
        }
        for c in COUNTRIES {
            assert_eq!(
                country_code_len(c.code.as_bytes()),
                Some(c.code.len()),
                "{c:?}"
            );
            assert!(c.min_len <= c.max_len && c.code.len() + c.max_len <= E164_MAX_DIGITS);
        }
        assert_eq!(country_code_len(b"86"), Some(2));
    }

    #[test]
    fn fake_patterns() {
        let cases: &[(&str, bool)] = &[
            ("+8613800000000", true),
            ("+8613888888888", true),
            ("+8613333333333", true),
            ("+8613812345678", true),
            ("+8613987654321", true),
            ("+8618601234567", true),
            ("+8613800138000", false),
            ("+8613912345670", false), // 7-digit run only
            ("+8613888888812", false), // 7 eights
            ("+8619876543210", true),
            ("+14155552671", false),
            ("+12222222222", true),
            // The country code does not join a run: +7 6543210 …
            ("+76543210987", false),
            ("not a phone", false),
        ];
        for (e164, want) in cases {
            assert_eq!(looks_fake(e164), *want, "{e164}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_and_output_is_e164(raw in "\\PC{0,40}") {
                if let Ok(e) = to_e164(&raw, "86") {
                    prop_assert!(e164_digits(&e).is_some(), "{e}");
                    let _ = classify(&e);
                    let _ = looks_fake(&e);
                }
                let _ = classify(&raw);
                let _ = looks_fake(&raw);
            }

            #[test]
            fn normalising_is_idempotent(raw in "[+＋0-9０-９ ()\\-.]{0,24}") {
                if let Ok(e) = to_e164(&raw, "86") {
                    prop_assert_eq!(to_e164(&e, "86"), Ok(e.clone()));
                    prop_assert_eq!(to_e164(&e, "44"), Ok(e));
                }
            }

            #[test]
            fn cn_mobiles_survive_formatting(
                n in "1[35-9][0-9]{9}",
                sep in prop::sample::select(vec!["", " ", "-", "."]),
                pre in prop::sample::select(vec!["", "+86", "0086", "86", "+86 "]),
            ) {
                let typed = format!("{pre}{}{sep}{}{sep}{}", &n[..3], &n[3..7], &n[7..]);
                let want = format!("+86{n}");
                prop_assert_eq!(to_e164(&typed, "86"), Ok(want.clone()));
                prop_assert!(classify(&want).is_accepted());
            }
        }
    }
}
