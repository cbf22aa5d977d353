//! `stock.lot`: lot and serial numbers, unique per product (and company; one company here).
//!
//! Mirrors `addons/stock/models/stock_lot.py` `_check_unique_lot` (a ValidationError listing the
//! duplicated product / number pairs) and `product.packaging` / `product.uom` barcode rules of
//! `addons/product/models/product_packaging.py` (17/18) and `product_uom.py` (19).

use crate::db::Db;
use crate::rpc::errors::OdooError;

/// Model name.
pub const L: &str = "stock.lot";

/// The lot named `name` of `product`.
pub fn find(db: &Db, product: i64, name: &str) -> Option<i64> {
    db.all_ids(L)
        .into_iter()
        .find(|l| db.m2o(L, *l, "product_id") == Some(product) && db.str(L, *l, "name") == name)
}

/// `_check_unique_lot`.
pub fn check_unique(db: &Db, id: i64) -> Result<(), OdooError> {
    let product = db.m2o(L, id, "product_id");
    let name = db.str(L, id, "name");
    let dup = db
        .all_ids(L)
        .into_iter()
        .any(|o| o != id && db.m2o(L, o, "product_id") == product && db.str(L, o, "name") == name);
    if !dup {
        return Ok(());
    }
    let product_name = product
        .map(|p| db.display_name("product.product", p))
        .unwrap_or_default();
    Err(OdooError::validation_error(format!(
        "The combination of serial number and product must be unique across a company.\nFollowing combination contains duplicates:\n - Product: {product_name}, Serial Number: {name}"
    )))
}

/// Packaging barcodes are unique among packagings (`_check_barcode_uniqueness`) and may not be a
/// product barcode (`product.product._check_duplicated_packaging_barcodes`).
pub fn check_packaging_barcode(db: &Db, model: &str, id: i64) -> Result<(), OdooError> {
    let barcode = db.str(model, id, "barcode");
    if barcode.is_empty() {
        return Ok(());
    }
    let clash = db
        .all_ids(model)
        .into_iter()
        .any(|o| o != id && db.str(model, o, "barcode") == barcode);
    if clash {
        return Err(OdooError::validation_error(if model == "product.uom" {
            format!("The barcode {barcode} is already used for another product unit.")
        } else {
            "A barcode can only be assigned to one packaging.".to_owned()
        }));
    }
    if let Some(p) = crate::models::product::by_barcode(db, &barcode) {
        return Err(OdooError::validation_error(format!(
            "A packaging already uses the barcode\n\n- Barcode \"{barcode}\" already assigned to product(s): {}",
            db.display_name("product.product", p)
        )));
    }
    Ok(())
}
