//! Unit tests of the model layer through `call_kw`, without HTTP.

use serde_json::{json, Map, Value};

use super::*;
use crate::control::{seed_db, Seed, SeedLocation, SeedProduct};
use crate::sim::{Sim, SimConfig};

const TAG: &str = "scanbridge:WH01:1-3";

struct Fixture {
    db: Db,
    widget: i64,
    gadget: i64,
    a01: i64,
    loss: i64,
}

fn fixture(version: OdooVersion) -> Fixture {
    let mut db =
        base_db(version, "scanbridge", "Administrator").unwrap_or_else(|e| panic!("base db: {e}"));
    let seed = Seed {
        products: vec![
            SeedProduct {
                barcode: "4006381333931".into(),
                name: "Widget".into(),
                default_code: None,
                tracking: None,
                storable: None,
                weight: None,
                packagings: Vec::new(),
            },
            SeedProduct {
                barcode: "4006381334006".into(),
                name: "Gadget".into(),
                default_code: Some("G1".into()),
                tracking: None,
                storable: None,
                weight: None,
                packagings: Vec::new(),
            },
        ],
        locations: vec![SeedLocation {
            barcode: "WH-STOCK-A01".into(),
            name: "A01".into(),
        }],
        ..Seed::default()
    };
    let ids = seed_db(&mut db, &seed).unwrap_or_else(|e| panic!("seed: {e}"));
    let id = |v: &Value| v.as_i64().unwrap_or_else(|| panic!("no id in {v}"));
    let loss = location::standard(&db)
        .unwrap_or_else(|e| panic!("{e}"))
        .inventory_adjustment;
    Fixture {
        widget: id(&ids["products"]["4006381333931"]),
        gadget: id(&ids["products"]["4006381334006"]),
        a01: id(&ids["locations"]["WH-STOCK-A01"]),
        loss,
        db,
    }
}

fn kw(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn call(
    db: &mut Db,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Result<Option<Value>, OdooError> {
    let args = match args {
        Value::Array(a) => a,
        other => vec![other],
    };
    call_kw(db, 2, model, method, args, kw(kwargs))
}

fn ok(r: Result<Option<Value>, OdooError>) -> Value {
    match r {
        Ok(v) => v.unwrap_or(Value::Null),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(r: Result<Option<Value>, OdooError>) -> OdooError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn inventory_ctx() -> Value {
    json!({"context": {"inventory_mode": true}})
}

fn count_in_inventory_mode(db: &mut Db, product: i64, location: i64, qty: f64) -> i64 {
    let v = ok(call(
        db,
        "stock.quant",
        "create",
        json!([{"product_id": product, "location_id": location, "inventory_quantity": qty}]),
        inventory_ctx(),
    ));
    v.as_i64().unwrap_or_else(|| panic!("create returned {v}"))
}

fn apply(db: &mut Db, ids: &[i64]) -> Result<Option<Value>, OdooError> {
    call(
        db,
        "stock.quant",
        "action_apply_inventory",
        json!([ids]),
        json!({"context": {"inventory_mode": true, "inventory_name": TAG}}),
    )
}

fn quantity(db: &Db, quant: i64) -> f64 {
    db.float("stock.quant", quant, "quantity")
}

fn moves(db: &Db) -> Vec<Value> {
    db.all_ids("stock.move")
        .into_iter()
        .map(|m| move_::dump(db, m))
        .collect()
}

#[test]
fn inventory_mode_create_merges_into_the_existing_quant_of_the_same_product_and_location() {
    let mut f = fixture(OdooVersion::V17);
    let first = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 5.0);
    assert!(apply(&mut f.db, &[first]).is_ok());
    let second = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 7.0);
    assert_eq!(first, second, "a second count must land on the same quant");
    assert_eq!(f.db.float("stock.quant", first, "inventory_quantity"), 7.0);
    assert!(f.db.bool("stock.quant", first, "inventory_quantity_set"));
    assert_eq!(
        f.db.float("stock.quant", first, "inventory_diff_quantity"),
        2.0
    );
    assert_eq!(f.db.m2o("stock.quant", first, "user_id"), Some(2));
    let other = count_in_inventory_mode(&mut f.db, f.gadget, f.a01, 1.0);
    assert_ne!(other, first, "another product gets its own quant");
}

#[test]
fn inventory_mode_create_refuses_fields_outside_the_inventory_whitelist() {
    let mut f = fixture(OdooVersion::V18);
    let e = err(call(
        &mut f.db,
        "stock.quant",
        "create",
        json!([{"product_id": f.widget, "location_id": f.a01, "inventory_quantity": 3, "quantity": 3}]),
        inventory_ctx(),
    ));
    assert_eq!(e.name, "odoo.exceptions.UserError");
    assert_eq!(
        e.message,
        "Quant's creation is restricted, you can't do this operation."
    );
}

#[test]
fn apply_with_a_positive_diff_moves_stock_in_from_inventory_adjustment() {
    let mut f = fixture(OdooVersion::V17);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 12.0);
    assert_eq!(
        ok(apply(&mut f.db, &[q])),
        Value::Null,
        "action_apply_inventory returns None"
    );
    assert_eq!(quantity(&f.db, q), 12.0);
    assert_eq!(f.db.float("stock.quant", q, "inventory_quantity"), 0.0);
    assert!(!f.db.bool("stock.quant", q, "inventory_quantity_set"));
    assert_eq!(f.db.m2o("stock.quant", q, "user_id"), None);
    let m = moves(&f.db);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["name"], format!("{TAG} (Administrator)"));
    assert_eq!(m[0]["reference"], m[0]["name"]);
    assert_eq!(m[0]["state"], "done");
    assert_eq!(m[0]["is_inventory"], true);
    assert_eq!(m[0]["location_id"], f.loss);
    assert_eq!(m[0]["location_dest_id"], f.a01);
    assert_eq!(m[0]["quantity"], 12.0);
    // Odoo keeps the counterpart as a negative quant in the inventory adjustment location.
    let loss_quants = quant::gather(&f.db, f.widget, f.loss, None);
    assert_eq!(loss_quants.len(), 1);
    assert_eq!(quantity(&f.db, loss_quants[0]), -12.0);
}

#[test]
fn apply_with_a_negative_diff_moves_stock_out_to_inventory_adjustment() {
    let mut f = fixture(OdooVersion::V18);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 10.0);
    assert!(apply(&mut f.db, &[q]).is_ok());
    let q2 = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 4.0);
    assert_eq!(q, q2);
    assert!(apply(&mut f.db, &[q]).is_ok());
    assert_eq!(quantity(&f.db, q), 4.0);
    let m = moves(&f.db);
    assert_eq!(m.len(), 2);
    assert_eq!(m[1]["location_id"], f.a01);
    assert_eq!(m[1]["location_dest_id"], f.loss);
    assert_eq!(m[1]["product_uom_qty"], 6.0);
}

#[test]
fn apply_with_a_zero_diff_still_creates_a_done_move_named_after_the_context() {
    let mut f = fixture(OdooVersion::V19);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 3.0);
    assert!(apply(&mut f.db, &[q]).is_ok());
    let q2 = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 3.0);
    assert_eq!(q, q2);
    assert!(apply(&mut f.db, &[q]).is_ok());
    assert_eq!(quantity(&f.db, q), 3.0);
    let m = moves(&f.db);
    assert_eq!(m.len(), 2);
    assert_eq!(m[1]["name"], format!("{TAG} (Administrator)"));
    assert_eq!(m[1]["quantity"], 0.0);
    assert_eq!(m[1]["state"], "done");
}

#[test]
fn without_an_inventory_name_moves_are_named_updated_or_confirmed() {
    let mut f = fixture(OdooVersion::V18);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 2.0);
    ok(call(
        &mut f.db,
        "stock.quant",
        "action_apply_inventory",
        json!([[q]]),
        inventory_ctx(),
    ));
    count_in_inventory_mode(&mut f.db, f.widget, f.a01, 2.0);
    ok(call(
        &mut f.db,
        "stock.quant",
        "action_apply_inventory",
        json!([[q]]),
        inventory_ctx(),
    ));
    let m = moves(&f.db);
    assert_eq!(m[0]["name"], "Product Quantity Updated (Administrator)");
    assert_eq!(m[1]["name"], "Product Quantity Confirmed (Administrator)");
}

#[test]
fn a_zero_count_on_stocked_quant_is_applied_from_18_but_not_in_17() {
    for (version, expected) in [
        (OdooVersion::V17, 5.0),
        (OdooVersion::V18, 0.0),
        (OdooVersion::V19, 0.0),
    ] {
        let mut f = fixture(version);
        let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 5.0);
        assert!(apply(&mut f.db, &[q]).is_ok());
        // Assigning 0 over the cleared 0 is a no-op in Field.__set__: the quant stays "not set".
        count_in_inventory_mode(&mut f.db, f.widget, f.a01, 0.0);
        assert!(!f.db.bool("stock.quant", q, "inventory_quantity_set"));
        assert!(apply(&mut f.db, &[q]).is_ok());
        assert_eq!(quantity(&f.db, q), expected, "version {version}");
    }
}

#[test]
fn a_quant_moved_after_counting_gets_the_conflict_wizard_instead_of_being_applied() {
    let mut f = fixture(OdooVersion::V18);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 5.0);
    quant::update_available_quantity(&mut f.db, f.widget, f.a01, None, 2.0)
        .unwrap_or_else(|e| panic!("{e}"));
    let action = ok(apply(&mut f.db, &[q]));
    assert_eq!(action["res_model"], "stock.inventory.conflict");
    assert_eq!(action["context"]["default_quant_to_fix_ids"], json!([q]));
    assert_eq!(action["context"]["inventory_name"], TAG);
    assert!(moves(&f.db).is_empty());
}

#[test]
fn load_by_external_id_twice_upserts_one_record() {
    let mut f = fixture(OdooVersion::V17);
    let fields = json!(["id", "name", "barcode"]);
    let first = ok(call(
        &mut f.db,
        "product.product",
        "load",
        json!([fields, [["sb_p1", "Bolt", "2000000000015"]]]),
        json!({}),
    ));
    let second = ok(call(
        &mut f.db,
        "product.product",
        "load",
        json!([fields, [["sb_p1", "Bolt M8", "2000000000015"]]]),
        json!({}),
    ));
    assert_eq!(first["messages"], json!([]));
    assert_eq!(first["ids"], second["ids"]);
    let id = first["ids"][0].as_i64().unwrap_or_default();
    assert_eq!(f.db.str("product.product", id, "name"), "Bolt M8");
    let xid = ir_model_data::lookup(&f.db, "__import__", "sb_p1")
        .unwrap_or_else(|| panic!("xid not registered"));
    assert_eq!((xid.model.as_str(), xid.res_id), ("product.product", id));
    let n = ok(call(
        &mut f.db,
        "product.product",
        "search_count",
        json!([[["barcode", "=", "2000000000015"]]]),
        json!({}),
    ));
    assert_eq!(n, 1);
}

#[test]
fn load_of_quants_in_inventory_mode_registers_the_xid_on_the_merged_quant() {
    let mut f = fixture(OdooVersion::V18);
    let q = count_in_inventory_mode(&mut f.db, f.widget, f.a01, 1.0);
    let fields = json!([
        "id",
        "product_id/.id",
        "location_id/.id",
        "inventory_quantity"
    ]);
    let res = ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, [["scanbridge.WH01_1", f.widget, f.a01, 9]]]),
        inventory_ctx(),
    ));
    assert_eq!(res, json!({"ids": [q], "messages": [], "nextrow": 0}));
    assert_eq!(f.db.float("stock.quant", q, "inventory_quantity"), 9.0);
    let xid = ir_model_data::lookup(&f.db, "scanbridge", "WH01_1").map(|x| x.res_id);
    assert_eq!(xid, Some(q));
}

#[test]
fn loading_an_existing_quant_xid_again_is_refused_in_inventory_mode_like_odoo() {
    let mut f = fixture(OdooVersion::V17);
    let fields = json!([
        "id",
        "product_id/.id",
        "location_id/.id",
        "inventory_quantity"
    ]);
    let rows = json!([["scanbridge.WH01_1", f.widget, f.a01, 9]]);
    ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, rows]),
        inventory_ctx(),
    ));
    let again = ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, rows]),
        inventory_ctx(),
    ));
    assert_eq!(again["ids"], false);
    assert_eq!(
        again["messages"][0]["message"],
        "Quant's editing is restricted, you can't do this operation."
    );
    assert_eq!(again["messages"][0]["type"], "error");
}

#[test]
fn a_load_error_rolls_back_every_row_and_answers_ids_false() {
    let mut f = fixture(OdooVersion::V17);
    let before = f.db.all_ids("stock.quant").len();
    let fields = json!([
        "id",
        "product_id/.id",
        "location_id/.id",
        "inventory_quantity"
    ]);
    let rows = json!([
        ["scanbridge.WH01_1", f.widget, f.a01, 9],
        ["scanbridge.WH01_2", 999, f.a01, 1]
    ]);
    let res = ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, rows]),
        inventory_ctx(),
    ));
    assert_eq!(res["ids"], false);
    let first = &res["messages"][0];
    assert_eq!(
        first["message"],
        "No matching record found for database id '999' in field 'Product'"
    );
    assert_eq!(first["record"], 1);
    assert_eq!(first["rows"], json!({"from": 1, "to": 1}));
    assert_eq!(
        f.db.all_ids("stock.quant").len(),
        before,
        "no quant may remain"
    );
    assert!(
        ir_model_data::lookup(&f.db, "scanbridge", "WH01_1").is_none(),
        "no xid may remain"
    );
}

#[test]
fn load_with_an_unknown_column_raises_instead_of_reporting() {
    let mut f = fixture(OdooVersion::V17);
    let e = err(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([["id", "nope"], [["x", 1]]]),
        json!({}),
    ));
    assert_eq!(e.name, "builtins.KeyError");
    assert_eq!(e.message, "'nope'");
}

#[test]
fn a_count_for_a_consumable_is_a_validation_error() {
    let mut f = fixture(OdooVersion::V18);
    let mut vals = Map::new();
    vals.insert("is_storable".into(), Value::Bool(false));
    orm::base_write(&mut f.db, "product.product", &[f.gadget], &vals, 2)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = err(call(
        &mut f.db,
        "stock.quant",
        "create",
        json!([{"product_id": f.gadget, "location_id": f.a01, "inventory_quantity": 1}]),
        inventory_ctx(),
    ));
    assert_eq!(e.name, "odoo.exceptions.ValidationError");
    assert_eq!(
        e.message,
        "Quants cannot be created for consumables or services."
    );
}

#[test]
fn read_skips_missing_ids_and_renders_many2one_as_pairs() {
    let mut f = fixture(OdooVersion::V17);
    let q = count_in_inventory_mode(&mut f.db, f.gadget, f.a01, 1.0);
    let rows = ok(call(
        &mut f.db,
        "stock.quant",
        "read",
        json!([[q, 999], ["product_id", "location_id", "lot_id"]]),
        json!({}),
    ));
    assert_eq!(
        rows,
        json!([{"id": q, "product_id": [f.gadget, "[G1] Gadget"], "location_id": [f.a01, "WH/Stock/A01"], "lot_id": false}])
    );
}

#[test]
fn write_on_a_missing_record_is_a_missing_error() {
    let mut f = fixture(OdooVersion::V17);
    let e = err(call(
        &mut f.db,
        "product.product",
        "write",
        json!([[999], {"name": "x"}]),
        json!({}),
    ));
    assert_eq!(e.name, "odoo.exceptions.MissingError");
    assert_eq!(
        e.message,
        "Record does not exist or has been deleted.\n(Record: product.product(999,), User: 2)"
    );
}

#[test]
fn create_returns_an_id_for_a_dict_and_ids_for_a_list() {
    let mut f = fixture(OdooVersion::V18);
    let one = ok(call(
        &mut f.db,
        "stock.location",
        "create",
        json!([{"name": "B01", "location_id": f.a01}]),
        json!({}),
    ));
    assert!(one.is_i64());
    let many = ok(call(
        &mut f.db,
        "stock.location",
        "create",
        json!([[{"name": "B02"}, {"name": "B03"}]]),
        json!({}),
    ));
    assert_eq!(many.as_array().map(Vec::len), Some(2));
}

#[test]
fn unknown_and_private_methods_are_refused_with_the_version_wording() {
    let mut f17 = fixture(OdooVersion::V17);
    let e = err(call(
        &mut f17.db,
        "stock.quant",
        "frobnicate",
        json!([]),
        json!({}),
    ));
    assert_eq!(
        (e.name.as_str(), e.message.as_str()),
        (
            "builtins.AttributeError",
            "The method 'frobnicate' does not exist on the model 'stock.quant'"
        )
    );
    let e = err(call(
        &mut f17.db,
        "stock.quant",
        "_apply_inventory",
        json!([[1]]),
        json!({}),
    ));
    assert_eq!(
        e.message,
        "Private methods (such as _apply_inventory) cannot be called remotely."
    );
    let mut f18 = fixture(OdooVersion::V18);
    let e = err(call(
        &mut f18.db,
        "stock.quant",
        "frobnicate",
        json!([]),
        json!({}),
    ));
    assert_eq!(
        e.message,
        "The method 'stock.quant.frobnicate' does not exist"
    );
    let e = err(call(
        &mut f18.db,
        "stock.quant",
        "_apply_inventory",
        json!([[1]]),
        json!({}),
    ));
    assert_eq!(e.name, "odoo.exceptions.AccessError");
    assert_eq!(
        e.message,
        "Private methods (such as 'stock.quant._apply_inventory') cannot be called remotely."
    );
    let e = err(call(
        &mut f18.db,
        "foo.bar",
        "search",
        json!([[]]),
        json!({}),
    ));
    assert_eq!(
        (e.name.as_str(), e.message.as_str()),
        ("odoo.exceptions.UserError", "Object foo.bar doesn't exist")
    );
}

#[test]
fn search_read_honours_domain_order_limit_and_archived_records() {
    let mut f = fixture(OdooVersion::V17);
    let rows = ok(call(
        &mut f.db,
        "product.product",
        "search_read",
        json!([[["barcode", "!=", false]]]),
        json!({"fields": ["name"], "order": "name desc", "limit": 1}),
    ));
    assert_eq!(rows, json!([{"id": f.widget, "name": "Widget"}]));
    ok(call(
        &mut f.db,
        "product.product",
        "write",
        json!([[f.widget], {"active": false}]),
        json!({}),
    ));
    let n = ok(call(
        &mut f.db,
        "product.product",
        "search_count",
        json!([[["barcode", "=", "4006381333931"]]]),
        json!({}),
    ));
    assert_eq!(n, 0, "archived products are hidden");
    let n = ok(call(
        &mut f.db,
        "product.product",
        "search_count",
        json!([[["barcode", "=", "4006381333931"]]]),
        json!({"context": {"active_test": false}}),
    ));
    assert_eq!(n, 1);
    let locs = ok(call(
        &mut f.db,
        "stock.location",
        "search",
        json!([[
            ["location_id.usage", "=", "view"],
            ["usage", "=", "inventory"]
        ]]),
        json!({}),
    ));
    assert_eq!(locs, json!([f.loss]));
}

#[test]
fn unexpected_keyword_arguments_are_type_errors() {
    let mut f = fixture(OdooVersion::V17);
    let e = err(call(
        &mut f.db,
        "product.product",
        "search",
        json!([[]]),
        json!({"fields": ["id"]}),
    ));
    assert_eq!(e.name, "builtins.TypeError");
    assert_eq!(
        e.message,
        "search() got an unexpected keyword argument 'fields'"
    );
}

#[test]
fn a_failing_call_leaves_the_database_untouched() {
    let sim = Sim::new(SimConfig {
        version: OdooVersion::V18,
        db_name: "scanbridge".into(),
        login: "scanbridge".into(),
        api_key: "k".into(),
        user_name: "Administrator".into(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let before = sim.read(|db| db.all_ids("stock.location").len());
    // The first location is created, the second violates NOT NULL on name: all rolled back.
    let r = sim.execute_kw(
        2,
        "stock.location",
        "create",
        vec![json!([{"name": "ok"}, {"usage": "internal"}])],
        Map::new(),
    );
    let e = err(r);
    assert_eq!(e.name, "odoo.exceptions.ValidationError");
    assert!(
        e.message.contains("Field: Location Name (name)"),
        "{}",
        e.message
    );
    assert_eq!(sim.read(|db| db.all_ids("stock.location").len()), before);
}

#[test]
fn an_empty_user_column_in_load_keeps_the_move_name_exactly_the_inventory_name() {
    let mut f = fixture(OdooVersion::V17);
    let fields = json!([
        "id",
        "product_id/.id",
        "location_id/.id",
        "inventory_quantity",
        "user_id/.id"
    ]);
    let res = ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, [["scanbridge.WH01_1", f.widget, f.a01, 4, false]]]),
        inventory_ctx(),
    ));
    assert_eq!(res["messages"], json!([]));
    let ids = res["ids"].clone();
    ok(call(
        &mut f.db,
        "stock.quant",
        "action_apply_inventory",
        json!([ids]),
        json!({"context": {"inventory_mode": true, "inventory_name": TAG}}),
    ));
    assert_eq!(moves(&f.db)[0]["name"], TAG);
    let n = ok(call(
        &mut f.db,
        "stock.move",
        "search_count",
        json!([[["name", "=", TAG]]]),
        json!({}),
    ));
    assert_eq!(n, 1);
}

#[test]
fn duplicate_ids_from_a_merging_load_apply_the_difference_twice_like_odoo() {
    let mut f = fixture(OdooVersion::V18);
    let fields = json!([
        "id",
        "product_id/.id",
        "location_id/.id",
        "inventory_quantity"
    ]);
    let rows = json!([
        ["scanbridge.WH01_1", f.widget, f.a01, 5],
        ["scanbridge.WH01_2", f.widget, f.a01, 7]
    ]);
    let res = ok(call(
        &mut f.db,
        "stock.quant",
        "load",
        json!([fields, rows]),
        inventory_ctx(),
    ));
    let q = res["ids"][0].as_i64().unwrap_or_default();
    assert_eq!(res["ids"], json!([q, q]), "both rows merged into one quant");
    ok(apply(&mut f.db, &[q, q]));
    assert_eq!(
        quantity(&f.db, q),
        14.0,
        "each id of the recordset makes its own move"
    );
}
