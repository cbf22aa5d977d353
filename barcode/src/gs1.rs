//! GS1 element strings: the data carried by GS1-128, GS1 DataMatrix, GS1 QR, GS1 DataBar and
//! GS1 DotCode, as a sequence of application identifiers (AIs) and their values, e.g.
//! `(01)09501101530003(17)140704(10)AB-123`.
//!
//! On the wire a scanner sends the digits without parentheses. Fields whose AI starts with one of
//! the two-digit prefixes of the GS1 *predefined-length table* (00-04, 11-20, 31-36, 41) have a
//! fixed length and need no separator; every other field ends at FNC1, transmitted by scanners as
//! ASCII 29 (GS), or at the end of the data. A leading FNC1 (GS) or a GS1 AIM identifier (`]C1`,
//! `]d2`, `]Q3`, `]e0`, `]J1`) in front is accepted and skipped.
//!
//! Validation: the AI must be known (the table below covers the GS1 General Specifications'
//! AIs used in logistics, including 00, 01, 02, 10, 11, 13, 15, 17, 21, 30, 37 and 310n-369n);
//! lengths and character sets per AI; the mod-10 check digit on GTIN (01, 02, 03), SSCC (00),
//! GLN (410-417), GSIN (402) and GSRN (8017, 8018); dates as YYMMDD (DD = 00 allowed: "end of
//! month"); the decimal-point digit of measures (310n: n = 0-5); one AI twice with different
//! values is refused. Parsing is lenient where the standard allows it: a GS after a fixed-length
//! field is skipped, a trailing GS is ignored.

use scanbridge_protocol::Gs1;

/// FNC1 as scanners transmit it: ASCII 29, "group separator".
pub const GS: char = '\u{1d}';
const GS_BYTE: u8 = 0x1d;

/// Why a GS1 element string was refused, in words a technician can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("the GS1 element string is empty: a GS1 barcode starts with an application identifier such as (01)")]
    Empty,
    #[error("character {ch:?} at position {at} is not allowed in a GS1 barcode (only ASCII letters, digits, !\"%&'()*+,-./:;<=>?_ and GS as separator); check the scanner's keyboard/code-page settings")]
    NotGs1Character { at: usize, ch: char },
    #[error("no GS1 application identifier starts with {found:?} at position {at}; the code is not a GS1 element string, or the scanner does not send FNC1 as GS (ASCII 29) after a variable-length field")]
    UnknownAi { at: usize, found: String },
    #[error("AI ({ai}) {title} expects {expected}, got {got:?}: the field is cut short")]
    Truncated {
        ai: String,
        title: &'static str,
        expected: String,
        got: String,
    },
    #[error("AI ({ai}) {title} expects {expected}, got {got:?}")]
    NotDigits {
        ai: String,
        title: &'static str,
        expected: String,
        got: String,
    },
    #[error("AI ({ai}) {title} takes at most {max} characters, got {len} ({got:?}); a GS (FNC1) separator after it is probably missing")]
    TooLong {
        ai: String,
        title: &'static str,
        max: usize,
        len: usize,
        got: String,
    },
    #[error("AI ({ai}) {title} has no data")]
    EmptyValue { ai: String, title: &'static str },
    #[error("AI ({ai}) {title} contains {ch:?}, which GS1 barcodes may not carry (allowed: A-Z a-z 0-9 !\"%&'()*+,-./:;<=>?_)")]
    BadCharacter {
        ai: String,
        title: &'static str,
        ch: char,
    },
    #[error("AI ({ai}) {title} expects 6 digits YYMMDD, got {got:?}: {why}")]
    BadDate {
        ai: String,
        title: &'static str,
        got: String,
        why: String,
    },
    #[error("AI ({ai}) {title} {got} has a wrong check digit (the last digit should be {expected}); the label is misprinted or was misread, rescan it")]
    CheckDigit {
        ai: String,
        title: &'static str,
        got: String,
        expected: u8,
    },
    #[error("AI ({ai}) appears twice with different values ({first:?} and {second:?})")]
    Conflicting {
        ai: String,
        first: String,
        second: String,
    },
}

/// A parsed GS1 element string: its elements in the order they appear.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementString {
    pub elements: Vec<Element>,
}

/// One application identifier and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The AI digits, e.g. `"01"`, `"3103"`.
    pub ai: String,
    /// What the AI means, e.g. `"GTIN"`, `"net weight"`.
    pub title: &'static str,
    /// The value exactly as encoded (for measures: the six digits without decimal point).
    pub value: String,
    /// For 31nn-36nn: the value with its decimal point applied, and its unit.
    pub measure: Option<Measure>,
}

/// A trade or logistic measure (AIs 310n-369n): `n` is the number of decimal places.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// What is measured, e.g. `"net weight"`, `"gross weight"`, `"length"`.
    pub quantity: &'static str,
    /// The unit, e.g. `"kg"`, `"lb"`, `"m3"`.
    pub unit: &'static str,
    /// Whether the measure is of the logistic unit (33nn, 34nn, ...) rather than the trade item.
    pub logistic: bool,
    /// Decimal places (the AI's last digit).
    pub decimals: u8,
    /// The value with the decimal point applied.
    pub value: f64,
}

impl ElementString {
    /// The value of the first element with this AI.
    pub fn get(&self, ai: &str) -> Option<&str> {
        self.elements
            .iter()
            .find(|e| e.ai == ai)
            .map(|e| e.value.as_str())
    }

    /// Human-readable interpretation: `(01)09501101530003(17)140704(10)AB-123`.
    pub fn to_hri(&self) -> String {
        self.elements
            .iter()
            .map(|e| format!("({}){}", e.ai, e.value))
            .collect()
    }

    /// The element string as a scanner transmits it: a GS after every field that is not of
    /// predefined length, except the last.
    pub fn to_transmitted(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.elements.iter().enumerate() {
            out.push_str(&e.ai);
            out.push_str(&e.value);
            if i + 1 < self.elements.len() && predefined_length(&e.ai).is_none() {
                out.push(GS);
            }
        }
        out
    }
}

/// The GS1 predefined-length table: for an AI whose first two digits are listed, the total
/// length of AI plus data (such fields never need an FNC1 separator). `None` for other AIs.
pub fn predefined_length(ai: &str) -> Option<usize> {
    Some(match ai.get(..2)? {
        "00" => 20,
        "01" | "02" | "03" => 16,
        "04" => 18,
        "11" | "12" | "13" | "14" | "15" | "16" | "17" | "18" | "19" => 8,
        "20" => 4,
        "31" | "32" | "33" | "34" | "35" | "36" => 10,
        "41" => 16,
        _ => return None,
    })
}

/// Whether the last digit of an all-digit GS1 key is its mod-10 check digit. Accepts the
/// lengths of GTIN-8, GTIN-12, GTIN-13, GTIN-14, GSIN (17) and SSCC (18).
pub fn gtin_check_digit_ok(digits: &str) -> bool {
    if !matches!(digits.len(), 8 | 12 | 13 | 14 | 17 | 18) {
        return false;
    }
    match (check_digit(digits), digits.as_bytes().last()) {
        (Some(expected), Some(last)) => expected == last.wrapping_sub(b'0'),
        _ => false,
    }
}

/// The GS1 mod-10 check digit that the last digit of `digits` should be (weights 3,1,3,...
/// from the right of the body). `None` unless `digits` is at least 2 ASCII digits.
pub fn check_digit(digits: &str) -> Option<u8> {
    let b = digits.as_bytes();
    if b.len() < 2 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let body = &b[..b.len() - 1];
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    u8::try_from((10 - sum % 10) % 10).ok()
}

/// Maps the parsed elements onto the protocol's [`Gs1`]: GTIN from 01 (else 02), lot 10,
/// expiry 17, serial 21, SSCC 00, and quantity from 30, else 37, else the first 31nn-36nn measure.
pub fn to_protocol(es: &ElementString) -> Gs1 {
    let s = |ai: &str| es.get(ai).map(str::to_string);
    let count = |ai: &str| es.get(ai).and_then(|v| v.parse::<f64>().ok());
    Gs1 {
        gtin: s("01").or_else(|| s("02")),
        lot: s("10"),
        expiry: s("17"),
        serial: s("21"),
        sscc: s("00"),
        qty: count("30")
            .or_else(|| count("37"))
            .or_else(|| es.elements.iter().find_map(|e| e.measure.map(|m| m.value))),
    }
}

/// Parses an element string as transmitted by a scanner (FNC1 = ASCII 29 GS).
pub fn parse(element_string: &str) -> Result<ElementString, Gs1Error> {
    let mut input = element_string;
    if let (Some(aim), rest) = crate::aim::split(input) {
        if aim.is_gs1() {
            input = rest;
        }
    }
    let offset = element_string.len() - input.len();
    if let Some((at, ch)) = input
        .char_indices()
        .find(|&(_, c)| c != GS && !is_cset82(c))
    {
        return Err(Gs1Error::NotGs1Character {
            at: at + offset,
            ch,
        });
    }
    // From here on the input is ASCII: byte slicing is safe.
    let b = input.as_bytes();
    let mut pos = 0;
    let mut elements: Vec<Element> = Vec::new();
    loop {
        while pos < b.len() && b[pos] == GS_BYTE {
            pos += 1;
        }
        if pos >= b.len() {
            break;
        }
        let rest = &input[pos..];
        let Some((ai, spec)) = lookup(rest) else {
            return Err(Gs1Error::UnknownAi {
                at: pos + offset,
                found: rest.chars().take(4).collect(),
            });
        };
        let after = &rest[ai.len()..];
        let value = match spec.tail {
            Tail::None => {
                let end = after.find(GS).unwrap_or(after.len());
                if end < spec.lead {
                    return Err(Gs1Error::Truncated {
                        ai,
                        title: spec.title,
                        expected: spec.expected(),
                        got: after[..end].to_string(),
                    });
                }
                &after[..spec.lead]
            }
            Tail::N(max) | Tail::X(max) => {
                let end = after.find(GS).unwrap_or(after.len());
                let v = &after[..end];
                if v.len() > spec.lead + max {
                    return Err(Gs1Error::TooLong {
                        ai,
                        title: spec.title,
                        max: spec.lead + max,
                        len: v.len(),
                        got: v.to_string(),
                    });
                }
                v
            }
        };
        pos += ai.len() + value.len();
        let element = validate(ai, spec, value)?;
        if let Some(prev) = elements.iter().find(|e| e.ai == element.ai) {
            if prev.value != element.value {
                return Err(Gs1Error::Conflicting {
                    ai: element.ai,
                    first: prev.value.clone(),
                    second: element.value,
                });
            }
            continue;
        }
        elements.push(element);
    }
    if elements.is_empty() {
        return Err(Gs1Error::Empty);
    }
    Ok(ElementString { elements })
}

/// GS1 AI encodable character set 82.
fn is_cset82(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!\"%&'()*+,-./:;<=>?_".contains(c)
}

/// What may follow the fixed leading part of a value.
#[derive(Debug, Clone, Copy)]
enum Tail {
    /// Nothing: the value is exactly `lead` digits.
    None,
    /// Up to n digits, ended by GS or the end of data.
    N(usize),
    /// Up to n characters of set 82, ended by GS or the end of data.
    X(usize),
}

/// Extra validation on the leading digits.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Plain,
    /// A GS1 key: the leading digits end with a mod-10 check digit.
    Key,
    /// The leading 6 digits are a YYMMDD date.
    Date,
    /// 31nn-36nn: six digits with `decimals` decimal places.
    Measure {
        quantity: &'static str,
        unit: &'static str,
        logistic: bool,
        decimals: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    title: &'static str,
    /// Leading digits that are always present (the whole value when `tail` is `None`).
    lead: usize,
    tail: Tail,
    kind: Kind,
}

impl Spec {
    fn expected(&self) -> String {
        match (self.kind, self.tail) {
            (Kind::Date, Tail::None) => "6 digits YYMMDD".to_string(),
            (_, Tail::None) => format!("{} digits", self.lead),
            (_, Tail::N(m)) if self.lead == 0 => format!("1 to {m} digits"),
            (_, Tail::N(m)) => format!("{} digits and up to {m} more", self.lead),
            (_, Tail::X(m)) if self.lead == 0 => format!("1 to {m} characters"),
            (_, Tail::X(m)) => format!("{} digits and up to {m} characters", self.lead),
        }
    }
}

const fn spec(title: &'static str, lead: usize, tail: Tail, kind: Kind) -> Spec {
    Spec {
        title,
        lead,
        tail,
        kind,
    }
}

/// AIs with a fixed set of digits, from the GS1 General Specifications section 3.
const TABLE: &[(&str, Spec)] = &[
    ("00", spec("SSCC", 18, Tail::None, Kind::Key)),
    ("01", spec("GTIN", 14, Tail::None, Kind::Key)),
    (
        "02",
        spec("GTIN of contained trade items", 14, Tail::None, Kind::Key),
    ),
    (
        "03",
        spec("GTIN of made-to-order item", 14, Tail::None, Kind::Key),
    ),
    (
        "10",
        spec("batch or lot number", 0, Tail::X(20), Kind::Plain),
    ),
    ("11", spec("production date", 6, Tail::None, Kind::Date)),
    ("12", spec("due date", 6, Tail::None, Kind::Date)),
    ("13", spec("packaging date", 6, Tail::None, Kind::Date)),
    ("15", spec("best before date", 6, Tail::None, Kind::Date)),
    ("16", spec("sell by date", 6, Tail::None, Kind::Date)),
    ("17", spec("expiry date", 6, Tail::None, Kind::Date)),
    (
        "20",
        spec("internal product variant", 2, Tail::None, Kind::Plain),
    ),
    ("21", spec("serial number", 0, Tail::X(20), Kind::Plain)),
    (
        "22",
        spec("consumer product variant", 0, Tail::X(20), Kind::Plain),
    ),
    (
        "235",
        spec(
            "third-party GTIN extension (TPX)",
            0,
            Tail::X(28),
            Kind::Plain,
        ),
    ),
    (
        "240",
        spec(
            "additional product identification",
            0,
            Tail::X(30),
            Kind::Plain,
        ),
    ),
    (
        "241",
        spec("customer part number", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "242",
        spec("made-to-order variation number", 0, Tail::N(6), Kind::Plain),
    ),
    (
        "243",
        spec("packaging component number", 0, Tail::X(20), Kind::Plain),
    ),
    (
        "250",
        spec("secondary serial number", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "251",
        spec("reference to source entity", 0, Tail::X(30), Kind::Plain),
    ),
    ("253", spec("GDTI", 13, Tail::X(17), Kind::Key)),
    (
        "254",
        spec("GLN extension component", 0, Tail::X(20), Kind::Plain),
    ),
    ("255", spec("GCN", 13, Tail::N(12), Kind::Key)),
    (
        "30",
        spec("variable count of items", 0, Tail::N(8), Kind::Plain),
    ),
    (
        "37",
        spec("count of trade items", 0, Tail::N(8), Kind::Plain),
    ),
    (
        "400",
        spec(
            "customer purchase order number",
            0,
            Tail::X(30),
            Kind::Plain,
        ),
    ),
    (
        "401",
        spec("GINC consignment number", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "402",
        spec("GSIN shipment number", 17, Tail::None, Kind::Key),
    ),
    ("403", spec("routing code", 0, Tail::X(30), Kind::Plain)),
    ("410", spec("ship-to GLN", 13, Tail::None, Kind::Key)),
    ("411", spec("bill-to GLN", 13, Tail::None, Kind::Key)),
    ("412", spec("purchased-from GLN", 13, Tail::None, Kind::Key)),
    ("413", spec("ship-for GLN", 13, Tail::None, Kind::Key)),
    (
        "414",
        spec("physical location GLN", 13, Tail::None, Kind::Key),
    ),
    (
        "415",
        spec("invoicing party GLN", 13, Tail::None, Kind::Key),
    ),
    (
        "416",
        spec(
            "production or service location GLN",
            13,
            Tail::None,
            Kind::Key,
        ),
    ),
    ("417", spec("party GLN", 13, Tail::None, Kind::Key)),
    (
        "420",
        spec("ship-to postal code", 0, Tail::X(20), Kind::Plain),
    ),
    (
        "421",
        spec(
            "ship-to postal code with country",
            3,
            Tail::X(9),
            Kind::Plain,
        ),
    ),
    ("422", spec("country of origin", 3, Tail::None, Kind::Plain)),
    (
        "423",
        spec("country of initial processing", 3, Tail::N(12), Kind::Plain),
    ),
    (
        "424",
        spec("country of processing", 3, Tail::None, Kind::Plain),
    ),
    (
        "425",
        spec("country of disassembly", 3, Tail::N(12), Kind::Plain),
    ),
    (
        "426",
        spec("country of full process chain", 3, Tail::None, Kind::Plain),
    ),
    (
        "427",
        spec("country subdivision of origin", 0, Tail::X(3), Kind::Plain),
    ),
    (
        "7001",
        spec("NATO stock number", 13, Tail::None, Kind::Plain),
    ),
    (
        "7002",
        spec("meat carcass classification", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "7003",
        spec("expiry date and time", 10, Tail::None, Kind::Plain),
    ),
    ("7004", spec("active potency", 0, Tail::N(4), Kind::Plain)),
    ("7005", spec("catch area", 0, Tail::X(12), Kind::Plain)),
    ("7006", spec("first freeze date", 6, Tail::None, Kind::Date)),
    ("7007", spec("harvest date", 6, Tail::N(6), Kind::Date)),
    (
        "7008",
        spec("species for fishery purposes", 0, Tail::X(3), Kind::Plain),
    ),
    (
        "7009",
        spec("fishing gear type", 0, Tail::X(10), Kind::Plain),
    ),
    (
        "7010",
        spec("production method", 0, Tail::X(2), Kind::Plain),
    ),
    (
        "710",
        spec(
            "national healthcare reimbursement number (DE)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "711",
        spec(
            "national healthcare reimbursement number (FR)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "712",
        spec(
            "national healthcare reimbursement number (ES)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "713",
        spec(
            "national healthcare reimbursement number (BR)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "714",
        spec(
            "national healthcare reimbursement number (PT)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "715",
        spec(
            "national healthcare reimbursement number (US)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "716",
        spec(
            "national healthcare reimbursement number (IT)",
            0,
            Tail::X(20),
            Kind::Plain,
        ),
    ),
    (
        "8001",
        spec("roll product dimensions", 14, Tail::None, Kind::Plain),
    ),
    (
        "8002",
        spec("mobile telephone identifier", 0, Tail::X(20), Kind::Plain),
    ),
    ("8003", spec("GRAI", 14, Tail::X(16), Kind::Plain)),
    ("8004", spec("GIAI", 0, Tail::X(30), Kind::Plain)),
    (
        "8005",
        spec("price per unit of measure", 6, Tail::None, Kind::Plain),
    ),
    ("8006", spec("ITIP", 18, Tail::None, Kind::Plain)),
    ("8007", spec("IBAN", 0, Tail::X(34), Kind::Plain)),
    (
        "8008",
        spec("production date and time", 8, Tail::N(4), Kind::Plain),
    ),
    (
        "8010",
        spec("component/part identifier", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "8011",
        spec("component/part serial number", 0, Tail::N(12), Kind::Plain),
    ),
    (
        "8012",
        spec("software version", 0, Tail::X(20), Kind::Plain),
    ),
    (
        "8013",
        spec("global model number", 0, Tail::X(25), Kind::Plain),
    ),
    (
        "8017",
        spec("GSRN of the provider", 18, Tail::None, Kind::Key),
    ),
    (
        "8018",
        spec("GSRN of the recipient", 18, Tail::None, Kind::Key),
    ),
    (
        "8019",
        spec(
            "service relation instance number",
            0,
            Tail::N(10),
            Kind::Plain,
        ),
    ),
    (
        "8020",
        spec("payment slip reference number", 0, Tail::X(25), Kind::Plain),
    ),
    (
        "8026",
        spec("ITIP of contained items", 18, Tail::None, Kind::Plain),
    ),
    (
        "8200",
        spec("extended packaging URL", 0, Tail::X(70), Kind::Plain),
    ),
    (
        "90",
        spec("mutually agreed information", 0, Tail::X(30), Kind::Plain),
    ),
    (
        "91",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "92",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "93",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "94",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "95",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "96",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "97",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "98",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
    (
        "99",
        spec("company internal information", 0, Tail::X(90), Kind::Plain),
    ),
];

/// 31nn-36nn measure families: the first three AI digits → (quantity, unit, logistic).
/// The fourth digit is the number of decimal places, 0 to 5.
const MEASURES: &[(&str, &str, &str, bool)] = &[
    ("310", "net weight", "kg", false),
    ("311", "length or first dimension", "m", false),
    ("312", "width, diameter or second dimension", "m", false),
    (
        "313",
        "depth, thickness, height or third dimension",
        "m",
        false,
    ),
    ("314", "area", "m2", false),
    ("315", "net volume", "l", false),
    ("316", "net volume", "m3", false),
    ("320", "net weight", "lb", false),
    ("321", "length or first dimension", "in", false),
    ("322", "length or first dimension", "ft", false),
    ("323", "length or first dimension", "yd", false),
    ("324", "width, diameter or second dimension", "in", false),
    ("325", "width, diameter or second dimension", "ft", false),
    ("326", "width, diameter or second dimension", "yd", false),
    (
        "327",
        "depth, thickness, height or third dimension",
        "in",
        false,
    ),
    (
        "328",
        "depth, thickness, height or third dimension",
        "ft",
        false,
    ),
    (
        "329",
        "depth, thickness, height or third dimension",
        "yd",
        false,
    ),
    ("330", "gross weight", "kg", true),
    ("331", "length or first dimension", "m", true),
    ("332", "width, diameter or second dimension", "m", true),
    (
        "333",
        "depth, thickness, height or third dimension",
        "m",
        true,
    ),
    ("334", "area", "m2", true),
    ("335", "gross volume", "l", true),
    ("336", "gross volume", "m3", true),
    ("337", "weight per area", "kg/m2", false),
    ("340", "gross weight", "lb", true),
    ("341", "length or first dimension", "in", true),
    ("342", "length or first dimension", "ft", true),
    ("343", "length or first dimension", "yd", true),
    ("344", "width, diameter or second dimension", "in", true),
    ("345", "width, diameter or second dimension", "ft", true),
    ("346", "width, diameter or second dimension", "yd", true),
    (
        "347",
        "depth, thickness, height or third dimension",
        "in",
        true,
    ),
    (
        "348",
        "depth, thickness, height or third dimension",
        "ft",
        true,
    ),
    (
        "349",
        "depth, thickness, height or third dimension",
        "yd",
        true,
    ),
    ("350", "area", "in2", false),
    ("351", "area", "ft2", false),
    ("352", "area", "yd2", false),
    ("353", "area", "in2", true),
    ("354", "area", "ft2", true),
    ("355", "area", "yd2", true),
    ("356", "net weight", "troy oz", false),
    ("357", "net volume", "oz (US)", false),
    ("360", "net volume", "qt", false),
    ("361", "net volume", "gal (US)", false),
    ("362", "gross volume", "qt", true),
    ("363", "gross volume", "gal (US)", true),
    ("364", "net volume", "in3", false),
    ("365", "net volume", "ft3", false),
    ("366", "net volume", "yd3", false),
    ("367", "gross volume", "in3", true),
    ("368", "gross volume", "ft3", true),
    ("369", "gross volume", "yd3", true),
];

/// 390n-395n amounts: the first three AI digits → (title, leading digits, variable tail).
const AMOUNTS: &[(&str, &str, usize, Tail)] = &[
    ("390", "amount payable, local currency", 0, Tail::N(15)),
    (
        "391",
        "amount payable with ISO currency code",
        3,
        Tail::N(15),
    ),
    (
        "392",
        "amount payable for a variable measure trade item",
        0,
        Tail::N(15),
    ),
    (
        "393",
        "amount payable for a variable measure trade item, ISO currency",
        3,
        Tail::N(15),
    ),
    ("394", "percentage discount of a coupon", 4, Tail::None),
    ("395", "amount payable per unit of measure", 6, Tail::None),
];

/// Finds the AI at the start of `rest`: its digits and its specification.
fn lookup(rest: &str) -> Option<(String, Spec)> {
    if let Some((ai, spec)) = TABLE.iter().find(|(ai, _)| rest.starts_with(ai)) {
        return Some((ai.to_string(), *spec));
    }
    let ai = rest.get(..4)?;
    let d = *ai.as_bytes().get(3)?;
    if !d.is_ascii_digit() {
        return None;
    }
    let decimals = d - b'0';
    let family = &ai[..3];
    if let Some((_, quantity, unit, logistic)) = MEASURES.iter().find(|m| m.0 == family) {
        if decimals > 5 {
            return None;
        }
        let kind = Kind::Measure {
            quantity,
            unit,
            logistic: *logistic,
            decimals,
        };
        return Some((ai.to_string(), spec(quantity, 6, Tail::None, kind)));
    }
    AMOUNTS
        .iter()
        .find(|a| a.0 == family)
        .map(|(_, title, lead, tail)| (ai.to_string(), spec(title, *lead, *tail, Kind::Plain)))
}

/// Checks one value against its AI's specification and builds the element.
fn validate(ai: String, spec: Spec, value: &str) -> Result<Element, Gs1Error> {
    let title = spec.title;
    if value.is_empty() {
        return Err(Gs1Error::EmptyValue { ai, title });
    }
    if value.len() < spec.lead {
        return Err(Gs1Error::Truncated {
            ai,
            title,
            expected: spec.expected(),
            got: value.to_string(),
        });
    }
    let (lead, tail) = value.split_at(spec.lead);
    let tail_numeric = matches!(spec.tail, Tail::N(_));
    if !lead.bytes().all(|b| b.is_ascii_digit())
        || (tail_numeric && !tail.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Gs1Error::NotDigits {
            ai,
            title,
            expected: spec.expected(),
            got: value.to_string(),
        });
    }
    if let Some(ch) = tail.chars().find(|&c| !is_cset82(c)) {
        return Err(Gs1Error::BadCharacter { ai, title, ch });
    }
    let mut measure = None;
    match spec.kind {
        Kind::Plain => {}
        Kind::Key => {
            if let (Some(expected), Some(last)) = (check_digit(lead), lead.as_bytes().last()) {
                if expected != last - b'0' {
                    return Err(Gs1Error::CheckDigit {
                        ai,
                        title,
                        got: lead.to_string(),
                        expected,
                    });
                }
            }
        }
        Kind::Date => {
            if let Err(why) = check_yymmdd(&lead[..6]) {
                return Err(Gs1Error::BadDate {
                    ai,
                    title,
                    got: value.to_string(),
                    why,
                });
            }
        }
        Kind::Measure {
            quantity,
            unit,
            logistic,
            decimals,
        } => {
            let raw: u32 = lead.parse().unwrap_or(0);
            measure = Some(Measure {
                quantity,
                unit,
                logistic,
                decimals,
                value: f64::from(raw) / 10f64.powi(i32::from(decimals)),
            });
        }
    }
    Ok(Element {
        ai,
        title,
        value: value.to_string(),
        measure,
    })
}

/// Validates six digits as YYMMDD; DD = 00 means "end of month" and is allowed.
fn check_yymmdd(d: &str) -> Result<(), String> {
    let n = |r: std::ops::Range<usize>| d.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(yy), Some(mm), Some(dd)) = (n(0..2), n(2..4), n(4..6)) else {
        return Err("not six digits".into());
    };
    if !(1..=12).contains(&mm) {
        return Err(format!("month {mm:02} does not exist"));
    }
    // Two-digit years map to 1951-2050 around today; every year divisible by 4 in that
    // window (2000 included) is a leap year.
    let days = match mm {
        2 if yy % 4 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if dd > days {
        return Err(format!("day {dd:02} does not exist in month {mm:02}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
