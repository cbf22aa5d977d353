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
use crate::models::{ir_model_data, location, lot, move_, move_line, orm, picking, product, quant};
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
    /// Weight per unit (kg), used by the pickings' `weight` / `shipping_weight`.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Packaging barcodes (`product.packaging` in 17/18, `product.uom` in 19).
    #[serde(default)]
    pub packagings: Vec<SeedPackaging>,
}

/// A packaging barcode of a product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPackaging {
    /// Barcode (e.g. a GTIN-14).
    pub barcode: String,
    /// Units per package.
    pub qty: f64,
    /// Name (default `Pack of <qty>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// An operation type to create or update (by `sequence_code`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPickingType {
    /// `IN`, `OUT`, `INT` or a new prefix.
    pub sequence_code: String,
    /// `incoming` / `outgoing` / `internal` (required for a new type).
    #[serde(default)]
    pub code: Option<String>,
    /// Name (default: the sequence code).
    #[serde(default)]
    pub name: Option<String>,
    /// `ask` / `always` / `never`.
    #[serde(default)]
    pub create_backorder: Option<String>,
    /// Create lots from `lot_name` at validation.
    #[serde(default)]
    pub use_create_lots: Option<bool>,
    /// Pick existing lots.
    #[serde(default)]
    pub use_existing_lots: Option<bool>,
    /// Default source location barcode.
    #[serde(default)]
    pub default_location_src: Option<String>,
    /// Default destination location barcode.
    #[serde(default)]
    pub default_location_dest: Option<String>,
    /// `at_confirm` / `manual` / `by_date`.
    #[serde(default)]
    pub reservation_method: Option<String>,
}

/// A lot of a product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedLot {
    /// Product barcode.
    pub product: String,
    /// Lot / serial number.
    pub name: String,
}

/// Stock on hand to add.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedQuant {
    /// Product barcode.
    pub product: String,
    /// Location barcode.
    pub location: String,
    /// Quantity added.
    pub quantity: f64,
    /// Lot name (created when missing).
    #[serde(default)]
    pub lot: Option<String>,
}

/// One move of a seeded picking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMove {
    /// Product barcode.
    pub product: String,
    /// Demand.
    pub qty: f64,
}

/// A transfer to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPicking {
    /// Name (default: the type's sequence).
    #[serde(default)]
    pub name: Option<String>,
    /// `incoming` / `outgoing` / `internal` or a sequence code.
    #[serde(rename = "type")]
    pub kind: String,
    /// `draft` (default), `confirmed` or `assigned`.
    #[serde(default)]
    pub state: Option<String>,
    /// Partner name.
    #[serde(default)]
    pub partner: Option<String>,
    /// Source document.
    #[serde(default)]
    pub origin: Option<String>,
    /// Source location barcode.
    #[serde(default)]
    pub location: Option<String>,
    /// Destination location barcode.
    #[serde(default)]
    pub location_dest: Option<String>,
    /// Moves.
    #[serde(default)]
    pub moves: Vec<SeedMove>,
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
    /// Operation types.
    #[serde(default)]
    pub picking_types: Vec<SeedPickingType>,
    /// Lots.
    #[serde(default)]
    pub lots: Vec<SeedLot>,
    /// Stock on hand.
    #[serde(default)]
    pub quants: Vec<SeedQuant>,
    /// Transfers.
    #[serde(default)]
    pub pickings: Vec<SeedPicking>,
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
        if let Some(w) = p.weight {
            vals.insert("weight".into(), w.into());
        }
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
    let packagings = seed_packagings(db, seed)?;
    let picking_types = seed_picking_types(db, seed)?;
    let mut lots = Map::new();
    for l in &seed.lots {
        let pid = product_id(db, &l.product)?;
        let id = ensure_lot(db, pid, &l.name)?;
        lots.insert(format!("{}/{}", l.product, l.name), id.into());
    }
    let mut quants = Vec::new();
    for q in &seed.quants {
        let pid = product_id(db, &q.product)?;
        let loc = location_id(db, &q.location)?;
        let lot = match &q.lot {
            Some(name) => Some(ensure_lot(db, pid, name)?),
            None => None,
        };
        quant::update_available_quantity(db, pid, loc, lot, q.quantity)?;
        if let Some(id) = quant::gather(db, pid, loc, lot).first() {
            quants.push(Value::from(*id));
        }
    }
    let mut pickings = Map::new();
    let mut moves = Map::new();
    for p in &seed.pickings {
        let (id, move_ids) = seed_picking(db, p)?;
        let name = db.str(picking::P, id, "name");
        pickings.insert(name.clone(), id.into());
        moves.insert(name, json!(move_ids));
    }
    picking::sync(db)?;
    Ok(json!({
        "products": products,
        "locations": locations,
        "picking_types": picking_types,
        "packagings": packagings,
        "lots": lots,
        "quants": quants,
        "pickings": pickings,
        "moves": moves,
    }))
}

fn refused(message: String) -> OdooError {
    OdooError::value_error(message)
}

fn product_id(db: &Db, barcode: &str) -> Result<i64, OdooError> {
    product::by_barcode(db, barcode).ok_or_else(|| {
        refused(format!(
            "no product with barcode {barcode:?} (seed it first)"
        ))
    })
}

/// A location by barcode; `VENDORS`, `CUSTOMERS` and `WHSTOCK` name the standard ones.
fn location_id(db: &Db, barcode: &str) -> Result<i64, OdooError> {
    let xid = match barcode {
        "VENDORS" => Some("stock_location_suppliers"),
        "CUSTOMERS" => Some("stock_location_customers"),
        "WHSTOCK" => Some("stock_location_stock"),
        _ => None,
    };
    if let Some(x) = xid {
        if let Some(found) = ir_model_data::lookup(db, "stock", x) {
            return Ok(found.res_id);
        }
    }
    location::by_barcode(db, barcode).ok_or_else(|| {
        refused(format!(
            "no location with barcode {barcode:?} (seed it first)"
        ))
    })
}

fn ensure_lot(db: &mut Db, product: i64, name: &str) -> Result<i64, OdooError> {
    if let Some(l) = lot::find(db, product, name) {
        return Ok(l);
    }
    orm::base_create(
        db,
        lot::L,
        &obj(json!({"name": name, "product_id": product})),
    )
}

fn seed_packagings(db: &mut Db, seed: &Seed) -> Result<Map<String, Value>, OdooError> {
    let mut out = Map::new();
    let v19 = db.version.major() >= 19;
    let model = if v19 {
        "product.uom"
    } else {
        "product.packaging"
    };
    for p in &seed.products {
        let pid = product_id(db, &p.barcode)?;
        for pk in &p.packagings {
            let existing = db
                .all_ids(model)
                .into_iter()
                .find(|i| db.str(model, *i, "barcode") == pk.barcode);
            let name = pk
                .name
                .clone()
                .unwrap_or_else(|| format!("Pack of {}", pk.qty));
            let vals = if v19 {
                let uom = match db
                    .all_ids("uom.uom")
                    .into_iter()
                    .find(|u| db.str("uom.uom", *u, "name") == name)
                {
                    Some(u) => u,
                    None => orm::base_create(
                        db,
                        "uom.uom",
                        &obj(json!({"name": name, "relative_factor": pk.qty})),
                    )?,
                };
                obj(json!({"product_id": pid, "uom_id": uom, "barcode": pk.barcode}))
            } else {
                obj(json!({"name": name, "product_id": pid, "qty": pk.qty, "barcode": pk.barcode}))
            };
            let id = match existing {
                Some(id) => {
                    orm::base_write(db, model, &[id], &vals, 2)?;
                    id
                }
                None => orm::base_create(db, model, &vals)?,
            };
            out.insert(pk.barcode.clone(), id.into());
        }
    }
    Ok(out)
}

fn seed_picking_types(db: &mut Db, seed: &Seed) -> Result<Map<String, Value>, OdooError> {
    let mut out = Map::new();
    for t in &seed.picking_types {
        let mut vals = Map::new();
        if let Some(c) = &t.code {
            vals.insert("code".into(), c.clone().into());
        }
        if let Some(n) = &t.name {
            vals.insert("name".into(), n.clone().into());
        }
        if let Some(c) = &t.create_backorder {
            vals.insert("create_backorder".into(), c.clone().into());
        }
        if let Some(b) = t.use_create_lots {
            vals.insert("use_create_lots".into(), b.into());
        }
        if let Some(b) = t.use_existing_lots {
            vals.insert("use_existing_lots".into(), b.into());
        }
        if let Some(r) = &t.reservation_method {
            vals.insert("reservation_method".into(), r.clone().into());
        }
        if let Some(l) = &t.default_location_src {
            vals.insert("default_location_src_id".into(), location_id(db, l)?.into());
        }
        if let Some(l) = &t.default_location_dest {
            vals.insert(
                "default_location_dest_id".into(),
                location_id(db, l)?.into(),
            );
        }
        let existing = db
            .all_ids(picking::T)
            .into_iter()
            .find(|i| db.str(picking::T, *i, "sequence_code") == t.sequence_code);
        let id = match existing {
            Some(id) => {
                orm::base_write(db, picking::T, &[id], &vals, 2)?;
                id
            }
            None => {
                let code = t.code.clone().ok_or_else(|| {
                    refused(format!(
                        "picking type {:?} is new: give its code (incoming/outgoing/internal)",
                        t.sequence_code
                    ))
                })?;
                let std = |x: &str| {
                    ir_model_data::lookup(db, "stock", x)
                        .map(|r| Value::from(r.res_id))
                        .unwrap_or(Value::Null)
                };
                let (src, dest) = match code.as_str() {
                    "incoming" => (std("stock_location_suppliers"), std("stock_location_stock")),
                    "outgoing" => (std("stock_location_stock"), std("stock_location_customers")),
                    _ => (std("stock_location_stock"), std("stock_location_stock")),
                };
                vals.entry("default_location_src_id").or_insert(src);
                vals.entry("default_location_dest_id").or_insert(dest);
                vals.entry("name")
                    .or_insert(Value::from(t.sequence_code.clone()));
                vals.insert("sequence_code".into(), t.sequence_code.clone().into());
                if code != "incoming" {
                    vals.entry("use_create_lots").or_insert(Value::Bool(false));
                } else {
                    vals.entry("use_existing_lots")
                        .or_insert(Value::Bool(false));
                }
                orm::base_create(db, picking::T, &vals)?
            }
        };
        out.insert(t.sequence_code.clone(), id.into());
    }
    for t in db.all_ids(picking::T) {
        let code = db.str(picking::T, t, "sequence_code");
        out.entry(code).or_insert(Value::from(t));
    }
    Ok(out)
}

fn seed_picking(db: &mut Db, p: &SeedPicking) -> Result<(i64, Vec<i64>), OdooError> {
    let ptype = db
        .all_ids(picking::T)
        .into_iter()
        .find(|t| db.str(picking::T, *t, "sequence_code") == p.kind)
        .or_else(|| {
            db.all_ids(picking::T)
                .into_iter()
                .find(|t| db.str(picking::T, *t, "code") == p.kind)
        })
        .ok_or_else(|| refused(format!("no picking type {:?}", p.kind)))?;
    let mut vals = Map::new();
    vals.insert("picking_type_id".into(), ptype.into());
    if let Some(n) = &p.name {
        vals.insert("name".into(), n.clone().into());
    }
    if let Some(o) = &p.origin {
        vals.insert("origin".into(), o.clone().into());
    }
    if let Some(partner) = &p.partner {
        let existing = db
            .all_ids("res.partner")
            .into_iter()
            .find(|r| db.str("res.partner", *r, "name") == *partner);
        let id = match existing {
            Some(id) => id,
            None => orm::base_create(db, "res.partner", &obj(json!({"name": partner})))?,
        };
        vals.insert("partner_id".into(), id.into());
    }
    if let Some(l) = &p.location {
        vals.insert("location_id".into(), location_id(db, l)?.into());
    }
    if let Some(l) = &p.location_dest {
        vals.insert("location_dest_id".into(), location_id(db, l)?.into());
    }
    let mut cmds = Vec::new();
    for m in &p.moves {
        let pid = product_id(db, &m.product)?;
        cmds.push(json!([0, 0, {"product_id": pid, "product_uom_qty": m.qty}]));
    }
    vals.insert("move_ids".into(), Value::Array(cmds));
    let ids = picking::create(db, &[vals], 2, &Map::new())?;
    let id = ids
        .first()
        .copied()
        .ok_or_else(|| refused("picking not created".to_owned()))?;
    match p.state.as_deref().unwrap_or("draft") {
        "draft" => {}
        "confirmed" => picking::action_confirm(db, &[id])?,
        "assigned" => picking::action_assign(db, &[id])?,
        other => {
            return Err(refused(format!(
                "picking state {other:?}: seed draft, confirmed or assigned"
            )))
        }
    }
    Ok((id, db.one2many_ids("stock.move", "picking_id", id)))
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

/// One member of the `/__sim/state` object: a small value, or a list of rows built one at a
/// time (a million moves are never held as one JSON tree).
enum Part<'a> {
    Value(Value),
    Rows(Vec<i64>, Box<dyn Fn(i64) -> Value + 'a>),
}

/// The members of `/__sim/state`, sorted by name (the order `serde_json` writes an object in).
fn state_parts<'a>(sim: &Sim, db: &'a Db) -> Vec<(&'static str, Part<'a>)> {
    let stats = sim.stats();
    let faults = sim.faults();
    let (products, locations) = master_data(db);
    let pk_model = if db.version.major() >= 19 {
        "product.uom"
    } else {
        "product.packaging"
    };
    let packaging = move |i: i64| {
        let qty = if pk_model == "product.uom" {
            db.m2o(pk_model, i, "uom_id")
                .map(|u| db.float("uom.uom", u, "relative_factor"))
                .unwrap_or(1.0)
        } else {
            db.float(pk_model, i, "qty")
        };
        json!({"id": i, "barcode": db.str(pk_model, i, "barcode"), "qty": qty,
               "product_id": db.m2o(pk_model, i, "product_id")})
    };
    let lot = move |l: i64| {
        json!({"id": l, "name": db.str(lot::L, l, "name"),
               "product_id": db.m2o(lot::L, l, "product_id")})
    };
    let mut parts: Vec<(&'static str, Part<'a>)> = vec![
        (
            "pickings",
            Part::Rows(
                db.all_ids(picking::P),
                Box::new(move |p| picking::dump(db, p)),
            ),
        ),
        (
            "move_lines",
            Part::Rows(
                db.all_ids(move_line::ML),
                Box::new(move |l| move_line::dump(db, l)),
            ),
        ),
        ("lots", Part::Rows(db.all_ids(lot::L), Box::new(lot))),
        (
            "picking_types",
            Part::Rows(
                db.all_ids(picking::T),
                Box::new(move |t| picking::dump_type(db, t)),
            ),
        ),
        (
            "packagings",
            Part::Rows(db.all_ids(pk_model), Box::new(packaging)),
        ),
        ("version", Part::Value(sim.config.version.major().into())),
        (
            "quants",
            Part::Rows(
                db.all_ids("stock.quant"),
                Box::new(move |q| quant::dump(db, q)),
            ),
        ),
        (
            "moves",
            Part::Rows(
                db.all_ids("stock.move"),
                Box::new(move |m| move_::dump(db, m)),
            ),
        ),
        (
            "xmlids",
            Part::Rows(
                db.all_ids(ir_model_data::M),
                Box::new(move |i| ir_model_data::dump_one(db, i)),
            ),
        ),
        ("calls", Part::Value(json!(stats.calls))),
        ("rpc_total", Part::Value(stats.rpc_total.into())),
        ("json2_total", Part::Value(stats.json2_total.into())),
        ("products", Part::Value(Value::Array(products))),
        ("locations", Part::Value(Value::Array(locations))),
        ("faults", Part::Value(json!(faults))),
    ];
    parts.sort_by_key(|(k, _)| *k);
    parts
}

/// `GET /__sim/state` as one JSON value (for tests; the server streams [`state_json`]).
pub fn state(sim: &Sim) -> Value {
    sim.read(|db| {
        let map: Map<String, Value> = state_parts(sim, db)
            .into_iter()
            .map(|(k, part)| {
                let v = match part {
                    Part::Value(v) => v,
                    Part::Rows(ids, row) => Value::Array(ids.into_iter().map(row).collect()),
                };
                (k.to_owned(), v)
            })
            .collect();
        Value::Object(map)
    })
}

/// `GET /__sim/state` serialised, byte for byte what `state(sim).to_string()` gives, written
/// row by row: the transient memory of a dump is its text, not a JSON tree of every record
/// (which, with a million moves, cost gigabytes per poll and fragmented the heap).
pub fn state_json(sim: &Sim) -> Result<Vec<u8>, serde_json::Error> {
    sim.read(|db| {
        let mut out: Vec<u8> = Vec::new();
        out.push(b'{');
        for (n, (key, part)) in state_parts(sim, db).into_iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key)?;
            out.push(b':');
            match part {
                Part::Value(v) => serde_json::to_writer(&mut out, &v)?,
                Part::Rows(ids, row) => {
                    out.push(b'[');
                    for (i, id) in ids.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        serde_json::to_writer(&mut out, &row(id))?;
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
        Ok(out)
    })
}

/// `POST /__sim/faults`.
pub fn faults(sim: &Sim, body: &[u8]) -> Result<Value, ControlError> {
    let update: crate::faults::FaultsUpdate = serde_json::from_slice(body)?;
    let f = sim.update_faults(update);
    tracing::info!(?f, "fault injection updated");
    Ok(serde_json::to_value(f)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;
    use crate::version::OdooVersion;

    fn kwargs(v: Value) -> Map<String, Value> {
        obj(v)
    }

    #[test]
    fn the_streamed_state_is_byte_for_byte_the_state_value() {
        for version in [OdooVersion::V17, OdooVersion::V19] {
            let sim = Sim::new(SimConfig {
                version,
                db_name: "scanbridge".into(),
                login: "scanbridge".into(),
                api_key: "k".into(),
                user_name: "Administrator".into(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let body = json!({
                "products": [
                    {"barcode": "4006381333931", "name": "Widget", "default_code": "W1",
                     "weight": 0.5,
                     "packagings": [{"barcode": "14006381333938", "qty": 12}]},
                    {"barcode": "4006381334006", "name": "Gadget", "tracking": "lot"}
                ],
                "locations": [{"barcode": "WH-STOCK-A01", "name": "A01"}],
                "lots": [{"product": "4006381334006", "name": "LOT-1"}],
                "quants": [{"product": "4006381333931", "location": "WH-STOCK-A01",
                            "quantity": 4}],
                "pickings": [{"name": "WH/IN/00012", "type": "incoming", "state": "confirmed",
                              "partner": "Azure Interior",
                              "moves": [{"product": "4006381333931", "qty": 5}]}]
            });
            let seeded = seed(&sim, body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let widget = seeded["products"]["4006381333931"]
                .as_i64()
                .unwrap_or_default();
            let a01 = seeded["locations"]["WH-STOCK-A01"]
                .as_i64()
                .unwrap_or_default();
            let loaded = sim
                .execute_kw(
                    2,
                    "stock.quant",
                    "load",
                    vec![
                        json!([
                            "id",
                            "product_id/.id",
                            "location_id/.id",
                            "inventory_quantity"
                        ]),
                        json!([["scanbridge.SC-01_1", widget, a01, 7.0]]),
                    ],
                    kwargs(json!({"context": {"inventory_mode": true}})),
                )
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_default();
            sim.execute_kw(
                2,
                "stock.quant",
                "action_apply_inventory",
                vec![loaded["ids"].clone()],
                kwargs(json!({"context": {"inventory_mode": true,
                                          "inventory_name": "scanbridge:SC-01:1-1"}})),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            sim.count_call("stock.quant", "load");

            let value = state(&sim);
            for list in [
                "moves",
                "move_lines",
                "pickings",
                "xmlids",
                "quants",
                "lots",
            ] {
                assert!(
                    value[list].as_array().is_some_and(|a| !a.is_empty()),
                    "{list} empty in {value}"
                );
            }
            let streamed = state_json(&sim).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&streamed), value.to_string());
        }
    }
}
