//! AIM symbology identifiers (ISO/IEC 15424): `]` + a code character naming the symbology +
//! a modifier character. Scanners configured to "transmit AIM ID" put one in front of every scan;
//! for the GS1 symbologies it also stands for the leading FNC1 (`]C1` GS1-128, `]d2` GS1
//! DataMatrix, `]Q3` GS1 QR, `]e0` GS1 DataBar, `]J1` GS1 DotCode).

use scanbridge_protocol::Symbology;

/// A parsed AIM symbology identifier such as `]C1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AimId {
    /// The symbology code character (`C` Code 128, `E` EAN/UPC, `d` Data Matrix, `Q` QR, ...).
    pub code: char,
    /// The modifier character (options such as "FNC1 in first position").
    pub modifier: char,
}

/// Splits a leading AIM symbology identifier (`]` + code char + modifier char) off a scan.
/// Returns the identifier (if any) and the rest.
/// `"]C1010..."` → `(Some(AimId { code: 'C', modifier: '1' }), "010...")`.
///
/// The code character must be an ASCII letter and the modifier an ASCII letter or digit;
/// anything else is not an AIM identifier and the input comes back unchanged.
pub fn split(input: &str) -> (Option<AimId>, &str) {
    let b = input.as_bytes();
    if b.len() >= 3 && b[0] == b']' && b[1].is_ascii_alphabetic() && b[2].is_ascii_alphanumeric() {
        let id = AimId {
            code: char::from(b[1]),
            modifier: char::from(b[2]),
        };
        // The three bytes are ASCII, so index 3 is a char boundary.
        (Some(id), input.get(3..).unwrap_or(""))
    } else {
        (None, input)
    }
}

impl AimId {
    /// Parses a whole identifier such as `"]C1"` (exactly three characters).
    pub fn parse(s: &str) -> Option<AimId> {
        match split(s) {
            (Some(id), "") => Some(id),
            _ => None,
        }
    }

    /// The symbology this identifier names; unnamed ones come back as `Symbology::Aim("]X9")`.
    pub fn symbology(&self) -> Symbology {
        match (self.code, self.modifier) {
            ('E', '0') | ('E', '3') => Symbology::Ean13,
            ('E', '4') => Symbology::Ean8,
            ('C', '0') => Symbology::Code128,
            ('C', '1') => Symbology::Gs1_128,
            ('A', '0'..='7') => Symbology::Code39,
            ('I', '0' | '1' | '3') => Symbology::Itf,
            ('d', '1') => Symbology::DataMatrix,
            ('d', '2') => Symbology::Gs1DataMatrix,
            ('Q', '0' | '1') => Symbology::Qr,
            ('Q', '3') => Symbology::Gs1Qr,
            _ => Symbology::Aim(self.to_string()),
        }
    }

    /// Whether the identifier says the data is a GS1 element string (FNC1 in first position):
    /// `]C1` GS1-128, `]d2` GS1 DataMatrix, `]Q3` GS1 QR, `]e0` GS1 DataBar, `]J1` GS1 DotCode.
    pub fn is_gs1(&self) -> bool {
        matches!(
            (self.code, self.modifier),
            ('C', '1') | ('d', '2') | ('Q', '3') | ('e', '0') | ('J', '1')
        )
    }
}

impl std::fmt::Display for AimId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "]{}{}", self.code, self.modifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gs1_128_prefix_is_split_off() {
        let (id, rest) = split("]C10109501101530003");
        assert_eq!(
            id,
            Some(AimId {
                code: 'C',
                modifier: '1'
            })
        );
        assert_eq!(rest, "0109501101530003");
    }

    #[test]
    fn input_without_a_prefix_comes_back_unchanged() {
        assert_eq!(split("4006381333931"), (None, "4006381333931"));
        assert_eq!(split("]C"), (None, "]C"));
        assert_eq!(split("]1C0"), (None, "]1C0"));
        assert_eq!(split("]C\u{e9}x"), (None, "]C\u{e9}x"));
        assert_eq!(split(""), (None, ""));
    }

    #[test]
    fn a_prefix_alone_leaves_an_empty_rest() {
        assert_eq!(split("]E0").1, "");
        assert_eq!(
            AimId::parse("]E0").map(|a| a.to_string()),
            Some("]E0".into())
        );
        assert_eq!(AimId::parse("]E0x"), None);
    }

    #[test]
    fn known_identifiers_name_their_symbology() {
        let sym = |s: &str| AimId::parse(s).map(|a| a.symbology());
        assert_eq!(sym("]E0"), Some(Symbology::Ean13));
        assert_eq!(sym("]E4"), Some(Symbology::Ean8));
        assert_eq!(sym("]C0"), Some(Symbology::Code128));
        assert_eq!(sym("]C1"), Some(Symbology::Gs1_128));
        assert_eq!(sym("]A0"), Some(Symbology::Code39));
        assert_eq!(sym("]I1"), Some(Symbology::Itf));
        assert_eq!(sym("]d1"), Some(Symbology::DataMatrix));
        assert_eq!(sym("]d2"), Some(Symbology::Gs1DataMatrix));
        assert_eq!(sym("]Q1"), Some(Symbology::Qr));
        assert_eq!(sym("]Q3"), Some(Symbology::Gs1Qr));
        assert_eq!(sym("]e0"), Some(Symbology::Aim("]e0".into())));
        assert_eq!(sym("]X9"), Some(Symbology::Aim("]X9".into())));
    }

    #[test]
    fn only_the_gs1_identifiers_signal_gs1() {
        for s in ["]C1", "]d2", "]Q3", "]e0", "]J1"] {
            assert!(AimId::parse(s).is_some_and(|a| a.is_gs1()), "{s}");
        }
        for s in ["]C0", "]E0", "]d1", "]Q1", "]A0", "]J0"] {
            assert!(AimId::parse(s).is_some_and(|a| !a.is_gs1()), "{s}");
        }
    }
}
