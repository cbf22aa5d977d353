//! The simulator's database: a schema per Odoo version (models, fields with their real names,
//! types and labels) and an in-memory table per model. Pure data and plain functions; the model
//! behaviour (`models/`) and the transaction boundary (`rpc/service.rs`) build on it.
//!
//! Storage convention: a record holds one JSON value per field of its model, in schema order
//! ([`Row`]); many2one values are stored as the bare id (or `null`), unset values as `null`.
//! `read` converts to the wire form (`[id, "display name"]`, `false`) in [`Db::read_value`].
//! Every change is journaled: a call that fails is rolled back to where it started
//! ([`Db::savepoint`], [`Db::rollback_to`]), one transaction per call like Odoo's one cursor per
//! RPC, without copying the database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Number, Value};

use crate::rpc::errors::OdooError;
use crate::version::OdooVersion;

/// One stored row: field name → stored value.
pub type Record = Map<String, Value>;

/// Field types the simulator models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// `fields.Integer` (also `id`).
    Integer,
    /// `fields.Float`.
    Float,
    /// `fields.Char` / `fields.Text`.
    Char,
    /// `fields.Boolean`.
    Boolean,
    /// `fields.Selection` with its allowed keys.
    Selection(&'static [&'static str]),
    /// `fields.Many2one(comodel)`.
    Many2one(&'static str),
    /// `fields.Datetime` as Odoo's `YYYY-MM-DD HH:MM:SS` string.
    Datetime,
    /// `fields.One2many(comodel, inverse)`: not stored; read as the ids of the comodel records
    /// whose `inverse` points here; written with commands (`[0, 0, vals]`, `[1, id, vals]`, ...).
    One2many(&'static str, &'static str),
    /// `fields.Many2many(comodel)`: stored as an array of ids; written with commands or ids.
    Many2many(&'static str),
}

/// One field of a model.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// Technical name, as on the wire.
    pub name: &'static str,
    /// Label (`string=`), used in import and constraint messages.
    pub string: &'static str,
    /// Type.
    pub ty: FieldType,
    /// `required=True` (a NOT NULL column).
    pub required: bool,
}

/// One model (`_name`, `_description`, fields, `_order`).
#[derive(Debug, Clone)]
pub struct ModelDef {
    /// `_name`.
    pub name: &'static str,
    /// `_description`, used in constraint messages.
    pub description: &'static str,
    /// Fields, `id` first.
    pub fields: Vec<FieldDef>,
    /// `_order`.
    pub order: &'static str,
}

impl ModelDef {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// True when the model has an `active` field (archived records hidden by default).
    pub fn has_active(&self) -> bool {
        self.field("active").is_some()
    }
}

fn f(name: &'static str, string: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        string,
        ty,
        required: false,
    }
}

fn req(name: &'static str, string: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        string,
        ty,
        required: true,
    }
}

use FieldType::{
    Boolean, Char, Datetime, Float, Integer, Many2many, Many2one, One2many, Selection,
};

/// Product types: 17 has `detailed_type` (product = storable) mirrored in `type`; 18+ has `type`
/// (goods are `consu`) and `is_storable`.
const TYPES_17: &[&str] = &["consu", "service", "product"];
const TYPES_18: &[&str] = &["consu", "service", "combo"];
const TRACKING: &[&str] = &["serial", "lot", "none"];
const USAGES: &[&str] = &[
    "supplier",
    "view",
    "internal",
    "customer",
    "inventory",
    "production",
    "transit",
];
const MOVE_STATES: &[&str] = &[
    "draft",
    "waiting",
    "confirmed",
    "partially_available",
    "assigned",
    "done",
    "cancel",
];

const PICKING_STATES: &[&str] = &[
    "draft",
    "waiting",
    "confirmed",
    "assigned",
    "done",
    "cancel",
];
const PICKING_CODES: &[&str] = &["incoming", "outgoing", "internal"];
const CREATE_BACKORDER: &[&str] = &["ask", "always", "never"];
const MOVE_TYPES: &[&str] = &["direct", "one"];
const RESERVATION_METHODS: &[&str] = &["at_confirm", "manual", "by_date"];
const PRIORITIES: &[&str] = &["0", "1"];

/// `product.packaging` (17/18, `addons/product/models/product_packaging.py`) or its 19
/// replacement `product.uom` (`addons/product/models/product_uom.py`: a barcode per product and
/// unit, the unit carrying the quantity).
fn packaging_def(_version: OdooVersion, model: &'static str) -> ModelDef {
    if model == "product.uom" {
        ModelDef {
            name: "product.uom",
            description: "Link between products and their UoMs",
            fields: vec![
                f("id", "ID", Integer),
                f("display_name", "Display Name", Char),
                req("product_id", "Product", Many2one("product.product")),
                req("uom_id", "Unit", Many2one("uom.uom")),
                req("barcode", "Barcode", Char),
            ],
            order: "id",
        }
    } else {
        ModelDef {
            name: "product.packaging",
            description: "Product Packaging",
            fields: vec![
                f("id", "ID", Integer),
                req("name", "Product Packaging", Char),
                f("display_name", "Display Name", Char),
                f("product_id", "Product", Many2one("product.product")),
                f("qty", "Contained Quantity", Float),
                f("barcode", "Barcode", Char),
                f("sequence", "Sequence", Integer),
            ],
            order: "product_id, sequence, id",
        }
    }
}

/// All models of one Odoo version.
#[derive(Debug)]
pub struct Schema {
    models: BTreeMap<&'static str, ModelDef>,
}

impl Schema {
    /// The models and fields of `version`.
    pub fn for_version(version: OdooVersion) -> Self {
        let mut product = vec![
            f("id", "ID", Integer),
            req("name", "Name", Char),
            f("display_name", "Display Name", Char),
            f("barcode", "Barcode", Char),
            f("default_code", "Internal Reference", Char),
            f("active", "Active", Boolean),
            f("tracking", "Tracking", Selection(TRACKING)),
            f("uom_id", "Unit", Many2one("uom.uom")),
            f("weight", "Weight", Float),
        ];
        // 19 replaces product.packaging by product.uom (addons/product/models/product_uom.py).
        let packaging_model = if version.major() >= 19 {
            product.push(f(
                "product_uom_ids",
                "Packaging Barcodes",
                One2many("product.uom", "product_id"),
            ));
            "product.uom"
        } else {
            product.push(f(
                "packaging_ids",
                "Product Packages",
                One2many("product.packaging", "product_id"),
            ));
            "product.packaging"
        };
        // 19 renames stock.quant.package to stock.package.
        let package_model: &'static str = if version.major() >= 19 {
            "stock.package"
        } else {
            "stock.quant.package"
        };
        if version.has_is_storable() {
            product.push(f("type", "Product Type", Selection(TYPES_18)));
            product.push(f("is_storable", "Track Inventory", Boolean));
        } else {
            product.push(f("type", "Type", Selection(TYPES_17)));
            product.push(f("detailed_type", "Product Type", Selection(TYPES_17)));
        }
        let defs = vec![
            ModelDef {
                name: "res.users",
                description: "User",
                fields: vec![
                    f("id", "ID", Integer),
                    req("login", "Login", Char),
                    req("name", "Name", Char),
                    f("display_name", "Display Name", Char),
                    f("active", "Active", Boolean),
                ],
                order: "name, login",
            },
            ModelDef {
                name: "product.product",
                description: "Product Variant",
                fields: product,
                order: "default_code, name, id",
            },
            ModelDef {
                name: "stock.location",
                description: "Inventory Locations",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Location Name", Char),
                    f("display_name", "Display Name", Char),
                    f("complete_name", "Full Location Name", Char),
                    f("barcode", "Barcode", Char),
                    req("usage", "Location Type", Selection(USAGES)),
                    f("location_id", "Parent Location", Many2one("stock.location")),
                    f("active", "Active", Boolean),
                ],
                order: "complete_name, id",
            },
            ModelDef {
                name: "stock.lot",
                description: "Lot/Serial",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Lot/Serial Number", Char),
                    f("display_name", "Display Name", Char),
                    req("product_id", "Product", Many2one("product.product")),
                    f("ref", "Internal Reference", Char),
                    f("product_qty", "On Hand Quantity", Float),
                    f("active", "Active", Boolean),
                ],
                order: "name, id",
            },
            ModelDef {
                name: "stock.quant",
                description: "Quants",
                fields: vec![
                    f("id", "ID", Integer),
                    f("display_name", "Display Name", Char),
                    req("product_id", "Product", Many2one("product.product")),
                    req("location_id", "Location", Many2one("stock.location")),
                    f("lot_id", "Lot/Serial Number", Many2one("stock.lot")),
                    f("package_id", "Package", Many2one(package_model)),
                    f("quantity", "Quantity", Float),
                    f("reserved_quantity", "Reserved Quantity", Float),
                    f("inventory_quantity", "Counted Quantity", Float),
                    f("inventory_diff_quantity", "Difference", Float),
                    f("inventory_quantity_set", "Inventory Quantity Set", Boolean),
                    f("user_id", "Assigned To", Many2one("res.users")),
                    f("in_date", "Incoming Date", Datetime),
                ],
                order: "id",
            },
            ModelDef {
                name: "stock.move",
                description: "Stock Move",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Description", Char),
                    f("display_name", "Display Name", Char),
                    f("reference", "Reference", Char),
                    req("product_id", "Product", Many2one("product.product")),
                    req("product_uom_qty", "Demand", Float),
                    f("quantity", "Quantity", Float),
                    req("location_id", "Source Location", Many2one("stock.location")),
                    req(
                        "location_dest_id",
                        "Destination Location",
                        Many2one("stock.location"),
                    ),
                    f("state", "Status", Selection(MOVE_STATES)),
                    f("is_inventory", "Inventory", Boolean),
                    f("picked", "Picked", Boolean),
                    f("date", "Date Scheduled", Datetime),
                    f("picking_id", "Transfer", Many2one("stock.picking")),
                    f(
                        "picking_type_id",
                        "Operation Type",
                        Many2one("stock.picking.type"),
                    ),
                    f("picking_code", "Picking Code", Selection(PICKING_CODES)),
                    f(
                        "partner_id",
                        "Destination Address ",
                        Many2one("res.partner"),
                    ),
                    f("origin", "Source Document", Char),
                    f("product_uom", "UoM", Many2one("uom.uom")),
                    f("product_qty", "Real Quantity", Float),
                    f(
                        "move_line_ids",
                        "Move Lines",
                        One2many("stock.move.line", "move_id"),
                    ),
                    f("priority", "Priority", Selection(PRIORITIES)),
                ],
                order: "id",
            },
            ModelDef {
                name: "res.partner",
                description: "Contact",
                fields: vec![
                    f("id", "ID", Integer),
                    f("name", "Name", Char),
                    f("display_name", "Display Name", Char),
                    f("active", "Active", Boolean),
                ],
                order: "name, id",
            },
            ModelDef {
                name: "uom.uom",
                description: "Product Unit of Measure",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Unit Name", Char),
                    f("display_name", "Display Name", Char),
                    f(
                        if version.major() >= 19 {
                            "relative_factor"
                        } else {
                            "factor"
                        },
                        "Ratio",
                        Float,
                    ),
                    f("active", "Active", Boolean),
                ],
                order: "name",
            },
            packaging_def(version, packaging_model),
            ModelDef {
                name: package_model,
                description: "Packages",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Package Reference", Char),
                    f("display_name", "Display Name", Char),
                    f("location_id", "Location", Many2one("stock.location")),
                    f("shipping_weight", "Shipping Weight", Float),
                ],
                order: "name",
            },
            ModelDef {
                name: "stock.picking.type",
                description: "Picking Type",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "Operation Type", Char),
                    f("display_name", "Display Name", Char),
                    req("code", "Type of Operation", Selection(PICKING_CODES)),
                    f("sequence", "Sequence", Integer),
                    f("sequence_code", "Sequence Prefix", Char),
                    f("barcode", "Barcode", Char),
                    req(
                        "default_location_src_id",
                        "Default Source Location",
                        Many2one("stock.location"),
                    ),
                    req(
                        "default_location_dest_id",
                        "Default Destination Location",
                        Many2one("stock.location"),
                    ),
                    req(
                        "create_backorder",
                        "Create Backorder",
                        Selection(CREATE_BACKORDER),
                    ),
                    f("use_create_lots", "Create New Lots/Serial Numbers", Boolean),
                    f(
                        "use_existing_lots",
                        "Use Existing Lots/Serial Numbers",
                        Boolean,
                    ),
                    req(
                        "reservation_method",
                        "Reservation Method",
                        Selection(RESERVATION_METHODS),
                    ),
                    f("active", "Active", Boolean),
                ],
                order: "sequence, id",
            },
            ModelDef {
                name: "stock.picking",
                description: "Transfer",
                fields: vec![
                    f("id", "ID", Integer),
                    f("name", "Reference", Char),
                    f("display_name", "Display Name", Char),
                    f("origin", "Source Document", Char),
                    f("partner_id", "Contact", Many2one("res.partner")),
                    req(
                        "picking_type_id",
                        "Operation Type",
                        Many2one("stock.picking.type"),
                    ),
                    f(
                        "picking_type_code",
                        "Picking Type Code",
                        Selection(PICKING_CODES),
                    ),
                    req("location_id", "Source Location", Many2one("stock.location")),
                    req(
                        "location_dest_id",
                        "Destination Location",
                        Many2one("stock.location"),
                    ),
                    f("state", "Status", Selection(PICKING_STATES)),
                    req("move_type", "Shipping Policy", Selection(MOVE_TYPES)),
                    f("priority", "Priority", Selection(PRIORITIES)),
                    f("backorder_id", "Back Order of", Many2one("stock.picking")),
                    f(
                        "backorder_ids",
                        "Back Orders",
                        One2many("stock.picking", "backorder_id"),
                    ),
                    f(
                        "move_ids",
                        "Stock Moves",
                        One2many("stock.move", "picking_id"),
                    ),
                    f(
                        "move_ids_without_package",
                        "Stock moves not in package",
                        One2many("stock.move", "picking_id"),
                    ),
                    f(
                        "move_line_ids",
                        "Operations",
                        One2many("stock.move.line", "picking_id"),
                    ),
                    f("scheduled_date", "Scheduled Date", Datetime),
                    f("date_done", "Date of Transfer", Datetime),
                    f("user_id", "Responsible", Many2one("res.users")),
                    f("weight", "Weight", Float),
                    f("shipping_weight", "Weight for Shipping", Float),
                    f("is_locked", "Is Locked", Boolean),
                ],
                order: "priority desc, scheduled_date asc, id desc",
            },
            ModelDef {
                name: "stock.move.line",
                description: "Product Moves (Stock Move Line)",
                fields: vec![
                    f("id", "ID", Integer),
                    f("display_name", "Display Name", Char),
                    f("picking_id", "Transfer", Many2one("stock.picking")),
                    f("move_id", "Stock Operation", Many2one("stock.move")),
                    f("product_id", "Product", Many2one("product.product")),
                    req("product_uom_id", "Unit", Many2one("uom.uom")),
                    f("quantity", "Quantity", Float),
                    f("quantity_product_uom", "Quantity in Product UoM", Float),
                    f("picked", "Picked", Boolean),
                    f("lot_id", "Lot/Serial Number", Many2one("stock.lot")),
                    f("lot_name", "Lot/Serial Number Name", Char),
                    f("package_id", "Source Package", Many2one(package_model)),
                    f(
                        "result_package_id",
                        "Destination Package",
                        Many2one(package_model),
                    ),
                    req("location_id", "From", Many2one("stock.location")),
                    req("location_dest_id", "To", Many2one("stock.location")),
                    f("state", "Status", Selection(MOVE_STATES)),
                    f("reference", "Reference", Char),
                    f("tracking", "Product with Tracking", Selection(TRACKING)),
                    f("picking_code", "Picking Code", Selection(PICKING_CODES)),
                    f(
                        "picking_type_id",
                        "Operation type",
                        Many2one("stock.picking.type"),
                    ),
                    f("is_inventory", "Inventory", Boolean),
                    req("date", "Date", Datetime),
                ],
                order: "result_package_id desc, id",
            },
            ModelDef {
                name: "stock.backorder.confirmation",
                description: "Backorder Confirmation",
                fields: vec![
                    f("id", "ID", Integer),
                    f("display_name", "Display Name", Char),
                    f("pick_ids", "Pick", Many2many("stock.picking")),
                    f("show_transfers", "Show Transfers", Boolean),
                    f(
                        "backorder_confirmation_line_ids",
                        "Backorder Confirmation Lines",
                        One2many(
                            "stock.backorder.confirmation.line",
                            "backorder_confirmation_id",
                        ),
                    ),
                ],
                order: "id",
            },
            ModelDef {
                name: "stock.backorder.confirmation.line",
                description: "Backorder Confirmation Line",
                fields: vec![
                    f("id", "ID", Integer),
                    f("display_name", "Display Name", Char),
                    f(
                        "backorder_confirmation_id",
                        "Immediate Transfer",
                        Many2one("stock.backorder.confirmation"),
                    ),
                    f("picking_id", "Transfer", Many2one("stock.picking")),
                    f("to_backorder", "To Backorder", Boolean),
                ],
                order: "id",
            },
            ModelDef {
                name: "ir.model.data",
                description: "Model Data",
                fields: vec![
                    f("id", "ID", Integer),
                    req("name", "External Identifier", Char),
                    f("display_name", "Display Name", Char),
                    f("complete_name", "Complete ID", Char),
                    req("module", "Module", Char),
                    req("model", "Model Name", Char),
                    req("res_id", "Record ID", Integer),
                    f("noupdate", "Non Updatable", Boolean),
                ],
                order: "module, model, name",
            },
        ];
        Self {
            models: defs.into_iter().map(|m| (m.name, m)).collect(),
        }
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelDef> {
        self.models.get(name)
    }
}

/// One stored row: the value of every field of its model in schema order (`null` in the slots
/// of one2many fields, which are read from the comodel), plus the values of names the schema
/// does not declare (none in practice; kept so that a stray write is not lost).
///
/// Positional storage is what keeps a million applied moves affordable: a `serde_json::Map`
/// per row cost a B-tree node set and a heap-allocated key per field (about 3.5 KB per
/// `stock.move`); a boxed slice costs one `Value` (32 bytes) per field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    vals: Box<[Value]>,
    extra: Option<Box<Record>>,
}

/// One model's rows, by id.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: BTreeMap<i64, Row>,
    next_id: i64,
}

/// One entry of the undo journal: what to put back to roll a change back.
#[derive(Debug, Clone)]
enum Undo {
    /// The row `id` of `model` as it was before a change (`None`: it did not exist).
    Row {
        model: &'static str,
        id: i64,
        old: Option<Row>,
    },
    /// The id sequence of `model` before an insert.
    NextId { model: &'static str, old: i64 },
}

/// A point in the undo journal to roll back to ([`Db::savepoint`], [`Db::rollback_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint(usize);

/// The whole database of one simulated Odoo instance.
///
/// Transactions are an undo journal, not copies: every change records the row as it was, a
/// [`Savepoint`] is a position in that journal and [`Db::rollback_to`] puts the recorded rows
/// (and id sequences) back in reverse order, re-deriving the indexes. A call therefore costs
/// what it changes, not what the database holds (a copy per call cost a pass over every
/// table it wrote, a million rows in the long scenarios). `Db` is still `Clone` (tables are
/// shared until written), for tests.
#[derive(Debug, Clone)]
pub struct Db {
    /// The version impersonated.
    pub version: OdooVersion,
    schema: Arc<Schema>,
    tables: BTreeMap<&'static str, Arc<Table>>,
    /// `(module, name)` → `ir.model.data` id (the unique index of the real table).
    xids: Arc<HashMap<(String, String), i64>>,
    /// `(product, location, lot)` → `stock.quant` ids, ascending (what `_gather` searches).
    quant_keys: Arc<HashMap<QuantKey, Vec<i64>>>,
    /// Changes since the last [`Db::commit`], oldest first.
    journal: Vec<Undo>,
}

/// The strict `_gather` key of a quant: product, location, lot.
pub type QuantKey = (Option<i64>, Option<i64>, Option<i64>);

/// The ids held by a stored many2many value.
pub fn id_list(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().filter_map(as_id).collect(),
        _ => Vec::new(),
    }
}

/// Odoo's datetime format, UTC.
pub fn now_string() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01 00:00:00".into())
}

/// A float as a JSON number (`0.0` for NaN/infinite, which Odoo would never store; `-0.0` is
/// stored as `0.0` like a PostgreSQL numeric).
pub fn float(v: f64) -> Value {
    Number::from_f64(v + 0.0)
        .map(Value::Number)
        .unwrap_or_else(|| Value::from(0))
}

/// The stored float of a value (`null`/`false` read as 0.0, as Odoo's Float field does).
pub fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::Bool(true) => 1.0,
        _ => 0.0,
    }
}

/// The stored id of a many2one value (`None` when empty).
pub fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|i| *i > 0),
        _ => None,
    }
}

/// Python truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Bool(true) => true,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's repr of a JSON value, for error messages (`'abc'`, `12`, `False`, `[1, 2]`).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Db {
    /// An empty database of `version` (no records; see `models::seed_base`).
    pub fn empty(version: OdooVersion) -> Self {
        let schema = Arc::new(Schema::for_version(version));
        let tables = schema.models.keys().map(|k| {
            (
                *k,
                Arc::new(Table {
                    next_id: 1,
                    ..Table::default()
                }),
            )
        });
        let tables = tables.collect();
        Self {
            version,
            schema,
            tables,
            xids: Arc::new(HashMap::new()),
            quant_keys: Arc::new(HashMap::new()),
            journal: Vec::new(),
        }
    }

    /// The model definition, or Odoo's "Object x doesn't exist" UserError.
    pub fn model(&self, name: &str) -> Result<&ModelDef, OdooError> {
        self.schema
            .model(name)
            .ok_or_else(|| OdooError::user_error(format!("Object {name} doesn't exist")))
    }

    /// The schema (shared, immutable).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The current position of the undo journal.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint(self.journal.len())
    }

    /// Undo every change made since `sp` (newest first), indexes included.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        while self.journal.len() > sp.0 {
            let Some(undo) = self.journal.pop() else {
                break;
            };
            match undo {
                Undo::NextId { model, old } => {
                    if let Some(t) = self.tables.get_mut(model) {
                        Arc::make_mut(t).next_id = old;
                    }
                }
                Undo::Row { model, id, old } => {
                    let old_xid = (model == "ir.model.data")
                        .then(|| self.xid_key(id))
                        .flatten();
                    let old_quant = (model == "stock.quant")
                        .then(|| self.quant_key(id))
                        .flatten();
                    if let Some(t) = self.tables.get_mut(model) {
                        let t = Arc::make_mut(t);
                        match old {
                            Some(row) => {
                                t.rows.insert(id, row);
                            }
                            None => {
                                t.rows.remove(&id);
                            }
                        }
                    }
                    if model == "ir.model.data" {
                        self.reindex_xid(id, old_xid);
                    } else if model == "stock.quant" {
                        self.reindex_quant(id, old_quant);
                    }
                }
            }
        }
    }

    /// Make every change so far permanent (forget the undo journal).
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    fn table(&self, model: &str) -> Option<&Table> {
        self.tables.get(model).map(|t| &**t)
    }

    /// The position of `field` in the rows of `model`.
    fn slot(&self, model: &str, field: &str) -> Option<usize> {
        self.schema
            .model(model)
            .and_then(|m| m.fields.iter().position(|f| f.name == field))
    }

    /// The row `id` of `model` for writing; its current state is journaled first.
    fn row_mut(&mut self, model: &str, id: i64) -> Option<&mut Row> {
        let (key, table) = self.tables.iter_mut().find(|(k, _)| **k == model)?;
        let row = Arc::make_mut(table).rows.get_mut(&id)?;
        self.journal.push(Undo::Row {
            model: key,
            id,
            old: Some(row.clone()),
        });
        Some(row)
    }

    /// Store `value` under `field` in a row (the slot, or the spill-over map for a name the
    /// schema does not declare).
    fn put(row: &mut Row, slot: Option<usize>, field: String, value: Value) {
        match slot.and_then(|i| row.vals.get_mut(i)) {
            Some(v) => *v = value,
            None => {
                row.extra
                    .get_or_insert_with(Default::default)
                    .insert(field, value);
            }
        }
    }

    /// Store one value in an existing row (journaled; no computed fields, no indexes).
    fn put_value(&mut self, model: &str, id: i64, field: &str, value: Value) {
        let slot = self.slot(model, field);
        if let Some(row) = self.row_mut(model, id) {
            Self::put(row, slot, field.to_owned(), value);
        }
    }

    fn xid_key(&self, id: i64) -> Option<(String, String)> {
        const M: &str = "ir.model.data";
        if !self.exists(M, id) {
            return None;
        }
        Some((self.str(M, id, "module"), self.str(M, id, "name")))
    }

    /// The `ir.model.data` id of `module.name` (indexed).
    pub fn xid_lookup(&self, module: &str, name: &str) -> Option<i64> {
        self.xids
            .get(&(module.to_owned(), name.to_owned()))
            .copied()
    }

    fn quant_key(&self, id: i64) -> Option<QuantKey> {
        const Q: &str = "stock.quant";
        if !self.exists(Q, id) {
            return None;
        }
        let m2o = |f: &str| self.m2o(Q, id, f);
        Some((m2o("product_id"), m2o("location_id"), m2o("lot_id")))
    }

    /// Quants with exactly this product, location and lot, ascending ids (indexed).
    pub fn quants_by_key(&self, key: QuantKey) -> &[i64] {
        self.quant_keys.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn reindex_quant(&mut self, id: i64, old: Option<QuantKey>) {
        let new = self.quant_key(id);
        if old == new {
            return;
        }
        let index = Arc::make_mut(&mut self.quant_keys);
        if let Some(old) = old {
            if let Some(v) = index.get_mut(&old) {
                v.retain(|q| *q != id);
                if v.is_empty() {
                    index.remove(&old);
                }
            }
        }
        if let Some(new) = new {
            let v = index.entry(new).or_default();
            if let Err(pos) = v.binary_search(&id) {
                v.insert(pos, id);
            }
        }
    }

    fn reindex_xid(&mut self, id: i64, old: Option<(String, String)>) {
        let new = self.xid_key(id);
        if old == new {
            return;
        }
        let index = Arc::make_mut(&mut self.xids);
        if let Some(old) = old {
            if index.get(&old) == Some(&id) {
                index.remove(&old);
            }
        }
        if let Some(new) = new {
            index.insert(new, id);
        }
    }

    /// True when the record exists.
    pub fn exists(&self, model: &str, id: i64) -> bool {
        self.table(model).is_some_and(|t| t.rows.contains_key(&id))
    }

    /// The stored row.
    fn row(&self, model: &str, id: i64) -> Option<&Row> {
        self.table(model).and_then(|t| t.rows.get(&id))
    }

    /// All ids of a model, ascending.
    pub fn all_ids(&self, model: &str) -> Vec<i64> {
        self.table(model)
            .map(|t| t.rows.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The stored value of one field (`null` when the record or field is missing).
    pub fn value(&self, model: &str, id: i64, field: &str) -> &Value {
        static NULL: Value = Value::Null;
        let Some(row) = self.row(model, id) else {
            return &NULL;
        };
        match self.slot(model, field).and_then(|i| row.vals.get(i)) {
            Some(v) => v,
            None => row
                .extra
                .as_ref()
                .and_then(|e| e.get(field))
                .unwrap_or(&NULL),
        }
    }

    /// Float convenience over [`Db::value`].
    pub fn float(&self, model: &str, id: i64, field: &str) -> f64 {
        as_f64(self.value(model, id, field))
    }

    /// Many2one convenience over [`Db::value`].
    pub fn m2o(&self, model: &str, id: i64, field: &str) -> Option<i64> {
        as_id(self.value(model, id, field))
    }

    /// String convenience over [`Db::value`] (`""` when unset).
    pub fn str(&self, model: &str, id: i64, field: &str) -> String {
        self.value(model, id, field)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Boolean convenience over [`Db::value`].
    pub fn bool(&self, model: &str, id: i64, field: &str) -> bool {
        truthy(self.value(model, id, field))
    }

    /// The default of a field on a fresh record (`default=` in the model source).
    fn default_value(&self, model: &str, field: &FieldDef) -> Value {
        match (model, field.name) {
            (_, "active") => Value::Bool(true),
            ("product.product", "tracking") => "none".into(),
            ("product.product", "type") | ("product.product", "detailed_type") => "consu".into(),
            ("stock.location", "usage") => "internal".into(),
            ("stock.move", "state") | ("stock.picking", "state") => "draft".into(),
            ("stock.quant", "in_date")
            | ("stock.move", "date")
            | ("stock.move.line", "date")
            | ("stock.picking", "scheduled_date") => now_string().into(),
            ("stock.picking", "name") => "/".into(),
            ("product.product", "uom_id") => self
                .xid_lookup("uom", "product_uom_unit")
                .and_then(|x| as_id(self.value("ir.model.data", x, "res_id")))
                .map(Value::from)
                .unwrap_or(Value::Null),
            ("stock.picking", "move_type") => "direct".into(),
            ("stock.picking", "priority") | ("stock.move", "priority") => "0".into(),
            ("stock.picking.type", "code") => "incoming".into(),
            ("stock.picking.type", "create_backorder") => "ask".into(),
            ("stock.picking.type", "reservation_method") => "at_confirm".into(),
            ("stock.picking.type", "use_create_lots")
            | ("stock.picking.type", "use_existing_lots") => Value::Bool(true),
            ("uom.uom", "factor") | ("uom.uom", "relative_factor") => float(1.0),
            ("product.packaging", "qty") => float(1.0),
            (_, _) if matches!(field.ty, FieldType::Many2many(_)) => Value::Array(Vec::new()),
            _ => match field.ty {
                FieldType::Float => float(0.0),
                FieldType::Boolean => Value::Bool(false),
                _ => Value::Null,
            },
        }
    }

    /// Low-level insert: fills defaults, assigns the next id, no checks beyond the schema.
    pub fn insert(&mut self, model: &str, values: Record) -> Result<i64, OdooError> {
        let schema = Arc::clone(&self.schema);
        let def = schema
            .model(model)
            .ok_or_else(|| OdooError::user_error(format!("Object {model} doesn't exist")))?;
        let mut row = Row {
            vals: def
                .fields
                .iter()
                .map(|field| match field.ty {
                    FieldType::One2many(..) => Value::Null,
                    _ => self.default_value(model, field),
                })
                .collect(),
            extra: None,
        };
        for (k, v) in values {
            let slot = def.fields.iter().position(|f| f.name == k);
            Self::put(&mut row, slot, k, v);
        }
        let (key, table) = self
            .tables
            .iter_mut()
            .find(|(k, _)| **k == model)
            .ok_or_else(|| OdooError::user_error(format!("Object {model} doesn't exist")))?;
        let table = Arc::make_mut(table);
        let id = table.next_id;
        table.next_id += 1;
        Self::put(
            &mut row,
            def.fields.iter().position(|f| f.name == "id"),
            "id".into(),
            Value::from(id),
        );
        table.rows.insert(id, row);
        self.journal.push(Undo::NextId {
            model: key,
            old: id,
        });
        self.journal.push(Undo::Row {
            model: key,
            id,
            old: None,
        });
        self.refresh_computed(model, id);
        if model == "ir.model.data" {
            self.reindex_xid(id, None);
        } else if model == "stock.quant" {
            self.reindex_quant(id, None);
        }
        Ok(id)
    }

    /// Low-level delete.
    pub fn remove(&mut self, model: &str, id: i64) {
        let old_xid = (model == "ir.model.data")
            .then(|| self.xid_key(id))
            .flatten();
        let old_quant = (model == "stock.quant")
            .then(|| self.quant_key(id))
            .flatten();
        if let Some((key, t)) = self.tables.iter_mut().find(|(k, _)| **k == model) {
            if let Some(row) = Arc::make_mut(t).rows.remove(&id) {
                self.journal.push(Undo::Row {
                    model: key,
                    id,
                    old: Some(row),
                });
            }
        }
        if old_xid.is_some() {
            self.reindex_xid(id, old_xid);
        }
        if old_quant.is_some() {
            self.reindex_quant(id, old_quant);
        }
    }

    /// Low-level update of stored values (no business rules).
    pub fn set(&mut self, model: &str, id: i64, values: Record) -> Result<(), OdooError> {
        let schema = Arc::clone(&self.schema);
        let def = schema
            .model(model)
            .ok_or_else(|| OdooError::user_error(format!("Object {model} doesn't exist")))?;
        let old = if model == "ir.model.data" {
            self.xid_key(id)
        } else {
            None
        };
        let old_quant = if model == "stock.quant" {
            self.quant_key(id)
        } else {
            None
        };
        let row = self
            .row_mut(model, id)
            .ok_or_else(|| OdooError::missing(model, &[id], 1))?;
        for (k, v) in values {
            let slot = def.fields.iter().position(|f| f.name == k);
            Self::put(row, slot, k, v);
        }
        self.refresh_computed(model, id);
        if model == "ir.model.data" {
            self.reindex_xid(id, old);
        } else if model == "stock.quant" {
            self.reindex_quant(id, old_quant);
        }
        Ok(())
    }

    /// Low-level update of one field.
    pub fn set1(
        &mut self,
        model: &str,
        id: i64,
        field: &str,
        value: Value,
    ) -> Result<(), OdooError> {
        let mut m = Record::new();
        m.insert(field.to_owned(), value);
        self.set(model, id, m)
    }

    /// Stored computed fields that only depend on the record itself and its parents
    /// (`complete_name` of locations and their children, `reference` of moves, `display_name`).
    fn refresh_computed(&mut self, model: &str, id: i64) {
        match model {
            "stock.location" => {
                // _compute_complete_name, recursive on children.
                let mut stack = vec![id];
                while let Some(loc) = stack.pop() {
                    let name = self.str(model, loc, "name");
                    let usage = self.str(model, loc, "usage");
                    let complete = match self.m2o(model, loc, "location_id") {
                        Some(parent) if usage != "view" => {
                            format!("{}/{}", self.str(model, parent, "complete_name"), name)
                        }
                        _ => name,
                    };
                    self.put_value(model, loc, "complete_name", complete.into());
                    let children: Vec<i64> = self
                        .all_ids(model)
                        .into_iter()
                        .filter(|c| self.m2o(model, *c, "location_id") == Some(loc))
                        .collect();
                    stack.extend(children);
                }
            }
            "stock.move" => {
                // _compute_reference: picking name, else the move's name; product_qty is the
                // demand in the product's unit (one unit per product here).
                let name = match self.m2o(model, id, "picking_id") {
                    Some(p) => self.value("stock.picking", p, "name").clone(),
                    None => self.value(model, id, "name").clone(),
                };
                let qty = self.value(model, id, "product_uom_qty").clone();
                self.put_value(model, id, "reference", name);
                self.put_value(model, id, "product_qty", qty);
            }
            "ir.model.data" => {
                let complete = format!(
                    "{}.{}",
                    self.str(model, id, "module"),
                    self.str(model, id, "name")
                );
                self.put_value(model, id, "complete_name", complete.into());
            }
            "product.product" if !self.version.has_is_storable() => {
                // 17: `type` is computed from `detailed_type`.
                let dt = self.value(model, id, "detailed_type").clone();
                self.put_value(model, id, "type", dt);
            }
            _ => {}
        }
    }

    /// Ids of `comodel` records whose many2one `inverse` is `id` (a one2many read), id order.
    pub fn one2many_ids(&self, comodel: &str, inverse: &str, id: i64) -> Vec<i64> {
        let Some(slot) = self.slot(comodel, inverse) else {
            return Vec::new();
        };
        self.table(comodel)
            .map(|t| {
                t.rows
                    .iter()
                    .filter(|(_, r)| r.vals.get(slot).and_then(as_id) == Some(id))
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }
    /// `display_name` of a record (each model's `_compute_display_name` / `_rec_name`).
    pub fn display_name(&self, model: &str, id: i64) -> String {
        match model {
            "product.product" => {
                let name = self.str(model, id, "name");
                match self.value(model, id, "default_code").as_str() {
                    Some(code) if !code.is_empty() => format!("[{code}] {name}"),
                    _ => name,
                }
            }
            "stock.location" => self.str(model, id, "complete_name"),
            "stock.quant" => {
                let mut parts = vec![self
                    .m2o(model, id, "location_id")
                    .map(|l| self.display_name("stock.location", l))
                    .unwrap_or_default()];
                if let Some(lot) = self.m2o(model, id, "lot_id") {
                    parts.push(self.str("stock.lot", lot, "name"));
                }
                parts.join(" - ")
            }
            "stock.move" => {
                // '%s%s%s>%s' % (origin/, code: , location name, dest name)
                let code = self
                    .m2o(model, id, "product_id")
                    .map(|p| self.str("product.product", p, "default_code"))
                    .filter(|c| !c.is_empty())
                    .map(|c| format!("{c}: "))
                    .unwrap_or_default();
                let loc = |f: &str| {
                    self.m2o(model, id, f)
                        .map(|l| self.str("stock.location", l, "name"))
                        .unwrap_or_default()
                };
                format!("{code}{}>{}", loc("location_id"), loc("location_dest_id"))
            }
            "ir.model.data" => self.str(model, id, "complete_name"),
            // _compute_display_name: 'Warehouse: Operation type' (the warehouse of a fresh
            // database is named after the company, "My Company").
            "stock.picking.type" => format!("My Company: {}", self.str(model, id, "name")),
            // _rec_name = product_id
            "stock.move.line" => self
                .m2o(model, id, "product_id")
                .map(|p| self.display_name("product.product", p))
                .unwrap_or_default(),
            "product.uom" => self
                .m2o(model, id, "uom_id")
                .map(|u| self.str("uom.uom", u, "name"))
                .unwrap_or_default(),
            _ => match self.value(model, id, "name").as_str() {
                Some(n) => n.to_owned(),
                None => format!("{model},{id}"),
            },
        }
    }

    /// One field in `read` form: many2one `[id, "name"]`, empty `false`, floats as floats.
    pub fn read_value(&self, model: &str, id: i64, field: &FieldDef) -> Value {
        if field.name == "display_name" {
            return self.display_name(model, id).into();
        }
        if let FieldType::One2many(comodel, inverse) = field.ty {
            return Value::from(self.one2many_ids(comodel, inverse, id));
        }
        let v = self.value(model, id, field.name);
        match field.ty {
            FieldType::Many2many(comodel) => Value::from(
                id_list(v)
                    .into_iter()
                    .filter(|i| self.exists(comodel, *i))
                    .collect::<Vec<i64>>(),
            ),
            FieldType::Many2one(comodel) => match as_id(v) {
                Some(rid) if self.exists(comodel, rid) => {
                    Value::Array(vec![rid.into(), self.display_name(comodel, rid).into()])
                }
                _ => Value::Bool(false),
            },
            FieldType::Float => float(as_f64(v)),
            FieldType::Boolean => Value::Bool(truthy(v)),
            FieldType::Integer => match v {
                Value::Number(_) => v.clone(),
                _ => Value::from(0),
            },
            _ => match v {
                Value::Null => Value::Bool(false),
                other => other.clone(),
            },
        }
    }

    /// Convert a client value for `field` to its stored form (`convert_to_cache`), with
    /// Odoo's errors for values of the wrong kind.
    pub fn coerce(&self, model: &str, field: &FieldDef, value: &Value) -> Result<Value, OdooError> {
        let bad = || {
            OdooError::value_error(format!(
                "Wrong value for {model}.{}: {}",
                field.name,
                py_repr(value)
            ))
        };
        Ok(match field.ty {
            FieldType::Integer => match value {
                Value::Null | Value::Bool(false) => Value::from(0),
                Value::Number(n) => Value::from(n.as_f64().map(|f| f as i64).ok_or_else(bad)?),
                _ => return Err(bad()),
            },
            FieldType::Float => match value {
                Value::Null | Value::Bool(false) => float(0.0),
                Value::Number(n) => float(n.as_f64().ok_or_else(bad)?),
                Value::String(s) => float(s.trim().parse::<f64>().map_err(|_| bad())?),
                _ => return Err(bad()),
            },
            FieldType::Boolean => Value::Bool(truthy(value)),
            FieldType::Char | FieldType::Datetime => match value {
                Value::Null | Value::Bool(false) => Value::Null,
                Value::String(s) => Value::String(s.clone()),
                Value::Number(n) => Value::String(n.to_string()),
                _ => return Err(bad()),
            },
            FieldType::Selection(options) => match value {
                Value::Null | Value::Bool(false) => Value::Null,
                Value::String(s) if options.contains(&s.as_str()) => Value::String(s.clone()),
                _ => return Err(bad()),
            },
            FieldType::Many2one(_) => match value {
                Value::Null | Value::Bool(false) => Value::Null,
                Value::Number(n) => match n.as_i64() {
                    Some(0) => Value::Null,
                    Some(i) => Value::from(i),
                    None => return Err(bad()),
                },
                // `[id, name]` pairs as returned by read are accepted by write.
                Value::Array(a) if a.first().and_then(Value::as_i64).is_some() => {
                    Value::from(a[0].as_i64().unwrap_or_default())
                }
                _ => return Err(bad()),
            },
            // Commands are resolved by the ORM layer (`models::orm`), kept as given here.
            FieldType::One2many(..) | FieldType::Many2many(_) => match value {
                Value::Null | Value::Bool(false) => Value::Array(Vec::new()),
                Value::Array(_) => value.clone(),
                _ => return Err(bad()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_complete_name_follows_the_parent_unless_the_location_is_a_view() {
        let mut db = Db::empty(OdooVersion::V17);
        let mut wh = Record::new();
        wh.insert("name".into(), "WH".into());
        wh.insert("usage".into(), "view".into());
        let wh = db.insert("stock.location", wh).unwrap_or_default();
        let mut stock = Record::new();
        stock.insert("name".into(), "Stock".into());
        stock.insert("location_id".into(), wh.into());
        let stock = db.insert("stock.location", stock).unwrap_or_default();
        assert_eq!(db.str("stock.location", wh, "complete_name"), "WH");
        assert_eq!(db.str("stock.location", stock, "complete_name"), "WH/Stock");
        assert_eq!(db.display_name("stock.location", stock), "WH/Stock");
    }

    #[test]
    fn many2one_reads_as_id_and_display_name() {
        let mut db = Db::empty(OdooVersion::V18);
        let mut p = Record::new();
        p.insert("name".into(), "Widget".into());
        p.insert("default_code".into(), "W1".into());
        let pid = db.insert("product.product", p).unwrap_or_default();
        let mut lot = Record::new();
        lot.insert("name".into(), "L1".into());
        lot.insert("product_id".into(), pid.into());
        let lot = db.insert("stock.lot", lot).unwrap_or_default();
        let field = db
            .schema()
            .model("stock.lot")
            .and_then(|m| m.field("product_id"))
            .cloned();
        let field = field.unwrap_or_else(|| f("x", "x", Integer));
        assert_eq!(
            db.read_value("stock.lot", lot, &field),
            serde_json::json!([pid, "[W1] Widget"])
        );
    }

    #[test]
    fn xid_and_quant_indexes_follow_writes_and_deletes() {
        let mut db = Db::empty(OdooVersion::V18);
        let mut x = Record::new();
        x.insert("module".into(), "scanbridge".into());
        x.insert("name".into(), "WH01_1".into());
        x.insert("model".into(), "stock.quant".into());
        x.insert("res_id".into(), 1.into());
        let xid = db.insert("ir.model.data", x).unwrap_or_default();
        assert_eq!(db.xid_lookup("scanbridge", "WH01_1"), Some(xid));
        let _ = db.set1("ir.model.data", xid, "name", "WH01_2".into());
        assert_eq!(db.xid_lookup("scanbridge", "WH01_1"), None);
        assert_eq!(db.xid_lookup("scanbridge", "WH01_2"), Some(xid));
        db.remove("ir.model.data", xid);
        assert_eq!(db.xid_lookup("scanbridge", "WH01_2"), None);

        let mut q = Record::new();
        q.insert("product_id".into(), 7.into());
        q.insert("location_id".into(), 9.into());
        let quant = db.insert("stock.quant", q).unwrap_or_default();
        assert_eq!(db.quants_by_key((Some(7), Some(9), None)), &[quant]);
        let _ = db.set1("stock.quant", quant, "location_id", 10.into());
        assert!(db.quants_by_key((Some(7), Some(9), None)).is_empty());
        assert_eq!(db.quants_by_key((Some(7), Some(10), None)), &[quant]);
    }

    #[test]
    fn a_cloned_database_does_not_see_later_writes() {
        let mut db = Db::empty(OdooVersion::V17);
        let mut p = Record::new();
        p.insert("name".into(), "Widget".into());
        let id = db.insert("product.product", p).unwrap_or_default();
        let snapshot = db.clone();
        let _ = db.set1("product.product", id, "name", "Gadget".into());
        assert_eq!(snapshot.str("product.product", id, "name"), "Widget");
        assert_eq!(db.str("product.product", id, "name"), "Gadget");
    }

    #[test]
    fn rolling_back_to_a_savepoint_restores_rows_ids_and_indexes() {
        let mut db = Db::empty(OdooVersion::V18);
        let mut x = Record::new();
        x.insert("module".into(), "scanbridge".into());
        x.insert("name".into(), "WH01_1".into());
        x.insert("model".into(), "stock.quant".into());
        x.insert("res_id".into(), 1.into());
        let kept = db.insert("ir.model.data", x.clone()).unwrap_or_default();
        let mut q = Record::new();
        q.insert("product_id".into(), 7.into());
        q.insert("location_id".into(), 9.into());
        let quant = db.insert("stock.quant", q.clone()).unwrap_or_default();
        db.commit();
        let before = db.all_ids("ir.model.data");

        let outer = db.savepoint();
        let _ = db.set1("ir.model.data", kept, "name", "WH01_9".into());
        x.insert("name".into(), "WH01_1".into());
        let added = db.insert("ir.model.data", x).unwrap_or_default();
        let inner = db.savepoint();
        db.remove("stock.quant", quant);
        assert!(db.quants_by_key((Some(7), Some(9), None)).is_empty());
        db.rollback_to(inner);
        assert_eq!(db.quants_by_key((Some(7), Some(9), None)), &[quant]);
        assert_eq!(db.xid_lookup("scanbridge", "WH01_1"), Some(added));
        let _ = db.set1("stock.quant", quant, "location_id", 10.into());
        db.rollback_to(outer);

        assert_eq!(db.all_ids("ir.model.data"), before);
        assert_eq!(db.str("ir.model.data", kept, "name"), "WH01_1");
        assert_eq!(
            db.str("ir.model.data", kept, "complete_name"),
            "scanbridge.WH01_1"
        );
        assert_eq!(db.xid_lookup("scanbridge", "WH01_1"), Some(kept));
        assert_eq!(db.xid_lookup("scanbridge", "WH01_9"), None);
        assert_eq!(db.quants_by_key((Some(7), Some(9), None)), &[quant]);
        assert!(db.quants_by_key((Some(7), Some(10), None)).is_empty());
        // The id sequence was rolled back too: the next insert reuses the undone id.
        let again = db.insert("stock.quant", q).unwrap_or_default();
        assert_eq!(again, quant + 1);
    }

    #[test]
    fn a_value_outside_the_schema_is_kept_and_read_back() {
        let mut db = Db::empty(OdooVersion::V17);
        let mut p = Record::new();
        p.insert("name".into(), "Widget".into());
        p.insert("x_note".into(), "kept".into());
        let id = db.insert("product.product", p).unwrap_or_default();
        assert_eq!(db.str("product.product", id, "x_note"), "kept");
        assert_eq!(db.str("product.product", id, "name"), "Widget");
        assert_eq!(db.value("product.product", id, "nope"), &Value::Null);
    }

    #[test]
    fn python_repr_matches_python_for_error_messages() {
        assert_eq!(
            py_repr(&serde_json::json!(["a", 1, false])),
            "['a', 1, False]"
        );
    }
}
