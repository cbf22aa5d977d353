//! `stock.location`: the location tree, seeded with Odoo's standard locations.
//!
//! Mirrors `addons/stock/models/stock_location.py` (`_compute_complete_name`, the
//! `barcode_company_uniq` SQL constraint) and `addons/stock/data/stock_data.xml` (Physical
//! Locations, Partners, Virtual Locations, Inventory adjustment) plus the `WH` warehouse view
//! and its `WH/Stock` lot_stock_id.

use serde_json::{json, Map, Value};

use crate::db::Db;
use crate::models::ir_model_data;
use crate::models::orm;
use crate::rpc::errors::OdooError;

/// Ids of the standard locations created by [`seed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandardLocations {
    /// `WH/Stock` (internal), the warehouse's lot_stock_id.
    pub stock: i64,
    /// `Virtual Locations/Inventory adjustment` (usage inventory), property_stock_inventory.
    pub inventory_adjustment: i64,
}

fn vals(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Create the standard locations and their external ids.
pub fn seed(db: &mut Db) -> Result<StandardLocations, OdooError> {
    let m = "stock.location";
    let physical = orm::base_create(
        db,
        m,
        &vals(json!({"name": "Physical Locations", "usage": "view"})),
    )?;
    let partners = orm::base_create(db, m, &vals(json!({"name": "Partners", "usage": "view"})))?;
    let virt = orm::base_create(
        db,
        m,
        &vals(json!({"name": "Virtual Locations", "usage": "view"})),
    )?;
    let vendors = orm::base_create(
        db,
        m,
        &vals(json!({"name": "Vendors", "usage": "supplier", "location_id": partners})),
    )?;
    let customers = orm::base_create(
        db,
        m,
        &vals(json!({"name": "Customers", "usage": "customer", "location_id": partners})),
    )?;
    let inventory_adjustment = orm::base_create(
        db,
        m,
        &vals(json!({"name": "Inventory adjustment", "usage": "inventory", "location_id": virt})),
    )?;
    let wh = orm::base_create(
        db,
        m,
        &vals(json!({"name": "WH", "usage": "view", "location_id": physical})),
    )?;
    let stock = orm::base_create(
        db,
        m,
        &vals(
            json!({"name": "Stock", "usage": "internal", "location_id": wh, "barcode": "WHSTOCK"}),
        ),
    )?;
    for (name, id) in [
        ("stock_location_locations", physical),
        ("stock_location_locations_partner", partners),
        ("stock_location_locations_virtual", virt),
        ("stock_location_suppliers", vendors),
        ("stock_location_customers", customers),
        ("stock_location_inventory", inventory_adjustment),
        ("stock_location_stock", stock),
    ] {
        ir_model_data::register(db, "stock", name, m, id)?;
    }
    Ok(StandardLocations {
        stock,
        inventory_adjustment,
    })
}

/// The standard locations of a seeded database (by their external ids).
pub fn standard(db: &Db) -> Result<StandardLocations, OdooError> {
    let find = |name: &str| {
        ir_model_data::lookup(db, "stock", name)
            .map(|x| x.res_id)
            .ok_or_else(|| {
                OdooError::value_error(format!("External ID not found in the system: stock.{name}"))
            })
    };
    Ok(StandardLocations {
        stock: find("stock_location_stock")?,
        inventory_adjustment: find("stock_location_inventory")?,
    })
}

/// `barcode_company_uniq`: unique (barcode, company_id), surfaced as a ValidationError.
pub fn check_barcode_unique(db: &Db, id: i64) -> Result<(), OdooError> {
    let m = "stock.location";
    let barcode = db.str(m, id, "barcode");
    if barcode.is_empty() {
        return Ok(());
    }
    if db
        .all_ids(m)
        .into_iter()
        .any(|o| o != id && db.str(m, o, "barcode") == barcode)
    {
        return Err(OdooError::validation_error(
            "The operation cannot be completed: The barcode for a location must be unique per company!",
        ));
    }
    Ok(())
}

/// Find a location by exact barcode.
pub fn by_barcode(db: &Db, barcode: &str) -> Option<i64> {
    db.all_ids("stock.location")
        .into_iter()
        .find(|l| db.str("stock.location", *l, "barcode") == barcode)
}
