//! The test-control API under `/__sim/` (not Odoo): seed master data, dump the state, set
//! faults. Shapes are fixed by CONTRACTS.md.
//!
//! - `POST /__sim/seed` `{"products":[{"barcode","name",("default_code","tracking","storable")}],
//!   "locations":[{"barcode","name"}]}` → `{"products":{barcode:id},"locations":{barcode:id}}`.
//!   Seeding an existing barcode renames that record and returns its id (seeding is idempotent).
//!   Locations are internal children of WH/Stock.
//! - `GET /__sim/state` → quants, moves (id order), xmlids, calls, rpc_total, plus products and
//!   locations (id, barcode, name) and the current faults. Quants include the negative quants
//!   Odoo keeps in the virtual "Inventory adjustment" location: filter by location.
//! - `POST /__sim/faults` → the fault settings after the update.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::db::Db;
use crate::models::{ir_model_data, location, move_, orm, product, quant};
use crate::rpc::errors::OdooError;
use crate::sim::Sim;

/// A product to seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProduct {
    /// Barcode (EAN-13 usually).
    pub barcode: String,
    /// Name.
    pub name: String,
    /// Internal reference.
    #[serde(default)]
    pub default_code: Option<String>,
    /// `none` (default), `lot` or `serial`.
    #[serde(default)]
    pub tracking: Option<String>,
    /// Storable (default true).
    #[serde(default)]
    pub storable: Option<bool>,
}

/// A location to seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedLocation {
    /// Barcode, e.g. `WH-STOCK-A01`.
    pub barcode: String,
    /// Name, e.g. `A01`.
    pub name: String,
}

/// `/__sim/seed` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Products.
    #[serde(default)]
    pub products: Vec<SeedProduct>,
    /// Locations.
    #[serde(default)]
    pub locations: Vec<SeedLocation>,
}

/// Why a control request was refused (HTTP 400 with `{"error": ...}`).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The body is not the documented JSON shape.
    #[error("invalid request body: {0}")]
    BadBody(#[from] serde_json::Error),
    /// The data broke an Odoo rule (duplicate barcode, bad tracking value...).
    #[error("Odoo refused the seed data: {0}")]
    Refused(#[from] OdooError),
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Seed products and locations into `db` (one transaction). Returns barcode → id maps.
pub fn seed_db(db: &mut Db, seed: &Seed) -> Result<Value, OdooError> {
    let mut products = Map::new();
    for p in &seed.products {
        let mut vals = obj(json!({"name": p.name, "barcode": p.barcode}));
        if let Some(code) = &p.default_code {
            vals.insert("default_code".into(), code.clone().into());
        }
        if let Some(t) = &p.tracking {
            vals.insert("tracking".into(), t.clone().into());
        }
        vals.extend(product::storable_vals(db, p.storable.unwrap_or(true)));
        let id = match product::by_barcode(db, &p.barcode) {
            Some(id) => {
                orm::base_write(db, "product.product", &[id], &vals, 2)?;
                id
            }
            None => orm::base_create(db, "product.product", &vals)?,
        };
        products.insert(p.barcode.clone(), id.into());
    }
    let mut locations = Map::new();
    let stock = location::standard(db)?.stock;
    for l in &seed.locations {
        let vals = obj(
            json!({"name": l.name, "barcode": l.barcode, "usage": "internal", "location_id": stock}),
        );
        let id = match location::by_barcode(db, &l.barcode) {
            Some(id) => {
                orm::base_write(db, "stock.location", &[id], &vals, 2)?;
                id
            }
            None => orm::base_create(db, "stock.location", &vals)?,
        };
        locations.insert(l.barcode.clone(), id.into());
    }
    Ok(json!({"products": products, "locations": locations}))
}

/// `POST /__sim/seed`.
pub fn seed(sim: &Sim, body: &[u8]) -> Result<Value, ControlError> {
    let seed: Seed = serde_json::from_slice(body)?;
    Ok(sim.transaction(|db| seed_db(db, &seed))?)
}

/// Products and locations with a barcode, for demos.
pub fn master_data(db: &Db) -> (Vec<Value>, Vec<Value>) {
    let products = db
        .all_ids("product.product")
        .into_iter()
        .filter(|p| !db.str("product.product", *p, "barcode").is_empty())
        .map(|p| {
            json!({
                "id": p,
                "barcode": db.str("product.product", p, "barcode"),
                "name": db.str("product.product", p, "name"),
                "default_code": db.value("product.product", p, "default_code").as_str().map(Value::from).unwrap_or(Value::Bool(false)),
            })
        })
        .collect();
    let locations = db
        .all_ids("stock.location")
        .into_iter()
        .filter(|l| !db.str("stock.location", *l, "barcode").is_empty())
        .map(|l| {
            json!({
                "id": l,
                "barcode": db.str("stock.location", l, "barcode"),
                "name": db.str("stock.location", l, "name"),
                "complete_name": db.str("stock.location", l, "complete_name"),
                "usage": db.str("stock.location", l, "usage"),
            })
        })
        .collect();
    (products, locations)
}

/// `GET /__sim/state`.
pub fn state(sim: &Sim) -> Value {
    let stats = sim.stats();
    let faults = sim.faults();
    sim.read(|db| {
        let quants: Vec<Value> = db
            .all_ids("stock.quant")
            .into_iter()
            .map(|q| quant::dump(db, q))
            .collect();
        let moves: Vec<Value> = db
            .all_ids("stock.move")
            .into_iter()
            .map(|m| move_::dump(db, m))
            .collect();
        let (products, locations) = master_data(db);
        json!({
            "version": sim.config.version.major(),
            "quants": quants,
            "moves": moves,
            "xmlids": ir_model_data::dump(db),
            "calls": stats.calls,
            "rpc_total": stats.rpc_total,
            "products": products,
            "locations": locations,
            "faults": faults,
        })
    })
}

/// `POST /__sim/faults`.
pub fn faults(sim: &Sim, body: &[u8]) -> Result<Value, ControlError> {
    let update: crate::faults::FaultsUpdate = serde_json::from_slice(body)?;
    let f = sim.update_faults(update);
    tracing::info!(?f, "fault injection updated");
    Ok(serde_json::to_value(f)?)
}
