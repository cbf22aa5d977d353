//! `--demo-data`: a small realistic warehouse — three dozen products with valid EAN-13 barcodes
//! and a dozen shelf locations `WH-STOCK-A01`..`WH-STOCK-A12` under WH/Stock.

use crate::control::{Seed, SeedLocation, SeedProduct};

const PRODUCTS: &[(&str, &str)] = &[
    ("Cable tie 200 mm (100 pcs)", "CT-200"),
    ("Cable tie 300 mm (100 pcs)", "CT-300"),
    ("Hex bolt M8x40 (50 pcs)", "HB-M8-40"),
    ("Hex bolt M10x60 (25 pcs)", "HB-M10-60"),
    ("Hex nut M8 (100 pcs)", "HN-M8"),
    ("Hex nut M10 (100 pcs)", "HN-M10"),
    ("Washer M8 (200 pcs)", "WS-M8"),
    ("Wood screw 4x40 (200 pcs)", "WS-4-40"),
    ("Wall plug 8 mm (100 pcs)", "WP-8"),
    ("Packing tape 50 mm x 66 m", "PT-50"),
    ("Stretch film 500 mm", "SF-500"),
    ("Cardboard box 400x300x300", "BX-433"),
    ("Cardboard box 600x400x400", "BX-644"),
    ("Bubble wrap roll 1 m x 50 m", "BW-150"),
    ("Pallet label roll A6", "LB-A6"),
    ("Thermal label 100x150 (500)", "LB-100150"),
    ("Safety gloves size 9", "GL-9"),
    ("Safety gloves size 10", "GL-10"),
    ("Safety glasses clear", "SG-CL"),
    ("Ear plugs (200 pairs)", "EP-200"),
    ("Hi-vis vest yellow L", "HV-L"),
    ("Hi-vis vest yellow XL", "HV-XL"),
    ("Utility knife", "UK-18"),
    ("Utility knife blades (10)", "UKB-10"),
    ("Marker pen black", "MP-BK"),
    ("Marker pen red", "MP-RD"),
    ("AA battery (4 pack)", "BAT-AA4"),
    ("AAA battery (4 pack)", "BAT-AAA4"),
    ("LED work light 20 W", "WL-20"),
    ("Extension cord 10 m", "EC-10"),
    ("Drill bit set HSS 19 pcs", "DB-19"),
    ("Spirit level 600 mm", "SL-600"),
    ("Measuring tape 5 m", "MT-5"),
    ("Pallet wrap dispenser", "PWD-1"),
    ("Floor marking tape yellow", "FMT-Y"),
    ("Corner protector (50 pcs)", "CP-50"),
];

/// The EAN-13 check digit of 12 digits.
pub fn ean13_check_digit(first12: &str) -> Option<u32> {
    if first12.len() != 12 {
        return None;
    }
    let mut sum = 0;
    for (i, c) in first12.chars().enumerate() {
        let d = c.to_digit(10)?;
        sum += if i % 2 == 0 { d } else { d * 3 };
    }
    Some((10 - sum % 10) % 10)
}

/// The demo warehouse.
pub fn demo_seed() -> Seed {
    let products = PRODUCTS
        .iter()
        .enumerate()
        .map(|(i, (name, code))| {
            let first12 = format!("400638{:06}", 133393 + i * 7);
            let check = ean13_check_digit(&first12).unwrap_or(0);
            SeedProduct {
                barcode: format!("{first12}{check}"),
                name: (*name).to_owned(),
                default_code: Some((*code).to_owned()),
                tracking: None,
                storable: Some(true),
                weight: None,
                packagings: Vec::new(),
            }
        })
        .collect();
    let locations = (1..=12)
        .map(|i| SeedLocation {
            barcode: format!("WH-STOCK-A{i:02}"),
            name: format!("A{i:02}"),
        })
        .collect();
    Seed {
        products,
        locations,
        ..Seed::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_ean13_gets_its_published_check_digit() {
        assert_eq!(ean13_check_digit("400638133393"), Some(1));
    }

    #[test]
    fn demo_barcodes_are_valid_and_unique_ean13() {
        let seed = demo_seed();
        assert!(seed.products.len() >= 30);
        let mut seen = std::collections::HashSet::new();
        for p in &seed.products {
            assert_eq!(p.barcode.len(), 13);
            let check = ean13_check_digit(&p.barcode[..12]).and_then(|d| char::from_digit(d, 10));
            assert_eq!(Some(p.barcode.as_bytes()[12] as char), check);
            assert!(seen.insert(p.barcode.clone()));
        }
        assert_eq!(seed.locations.len(), 12);
        assert_eq!(seed.locations[0].barcode, "WH-STOCK-A01");
    }
}
