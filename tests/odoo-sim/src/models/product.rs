//! `product.product`: products found by barcode, and whether they are storable.
//!
//! Mirrors `addons/product/models/product_product.py` (`_check_duplicated_product_barcodes`,
//! `_compute_display_name` "[default_code] name") and `addons/stock/models/product.py`
//! (`detailed_type = 'product'` in 17, `is_storable` in 18+).

use serde_json::{Map, Value};

use crate::db::Db;
use crate::rpc::errors::OdooError;

/// True when stock is tracked for the product (quants allowed).
pub fn is_storable(db: &Db, id: i64) -> bool {
    if db.version.has_is_storable() {
        db.bool("product.product", id, "is_storable")
    } else {
        db.str("product.product", id, "detailed_type") == "product"
    }
}

/// Client values making a product storable, for the running version.
pub fn storable_vals(db: &Db, storable: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if db.version.has_is_storable() {
        m.insert("type".into(), "consu".into());
        m.insert("is_storable".into(), storable.into());
    } else {
        m.insert(
            "detailed_type".into(),
            if storable { "product" } else { "consu" }.into(),
        );
    }
    m
}

/// `_check_duplicated_product_barcodes`: a barcode belongs to one product (archived included).
pub fn check_barcode_uniqueness(db: &Db, id: i64) -> Result<(), OdooError> {
    let model = "product.product";
    let barcode = db.str(model, id, "barcode");
    if barcode.is_empty() {
        return Ok(());
    }
    let others: Vec<String> = db
        .all_ids(model)
        .into_iter()
        .filter(|o| *o != id && db.str(model, *o, "barcode") == barcode)
        .map(|o| db.display_name(model, o))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(OdooError::validation_error(format!(
        "Barcode(s) already assigned:\n\n- Barcode \"{barcode}\" already assigned to product(s): {}",
        others.join(", ")
    )))
}

/// Find a product by exact barcode (active or not).
pub fn by_barcode(db: &Db, barcode: &str) -> Option<i64> {
    db.all_ids("product.product")
        .into_iter()
        .find(|p| db.str("product.product", *p, "barcode") == barcode)
}
