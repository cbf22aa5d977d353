//! Integration tests of the transfer flows over real HTTP: receipts with lots, pick/pack/ship,
//! the backorder wizard both ways, `skip_backorder`, lot errors, duplicate lots, idempotent
//! `load` of move lines, and the 17/18/19 differences.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const WIDGET: &str = "4006381333931";
const GADGET: &str = "4006381333948";

/// A lot-tracked Widget, a plain Gadget (0.5 kg), shelf A01 with 5 Gadgets, one receipt of 10
/// Widgets and one delivery of 3 Gadgets, both reserved.
async fn warehouse(sim: &SimProcess) -> Value {
    seed(
        sim,
        json!({
            "products": [
                {"barcode": WIDGET, "name": "Widget", "tracking": "lot"},
                {"barcode": GADGET, "name": "Gadget", "weight": 0.5,
                 "packagings": [{"barcode": "14006381333945", "qty": 6}]}
            ],
            "locations": [{"barcode": "WH-STOCK-A01", "name": "A01"}],
            "quants": [{"product": GADGET, "location": "WH-STOCK-A01", "quantity": 5}],
            "pickings": [
                {"name": "WH/IN/00012", "type": "incoming", "state": "assigned", "partner": "Azure Interior",
                 "moves": [{"product": WIDGET, "qty": 10}]},
                {"name": "WH/OUT/00007", "type": "outgoing", "state": "assigned",
                 "moves": [{"product": GADGET, "qty": 3}]}
            ]
        }),
    )
    .await
}

async fn picking_state(sim: &SimProcess, id: &Value) -> String {
    let r = call(
        sim,
        "stock.picking",
        "read",
        json!([[id]]),
        json!({"fields": ["state"]}),
    )
    .await;
    r[0]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_receipt_is_found_by_name_and_validated_with_a_new_lot_in_every_version() {
    for v in ["17", "18", "19"] {
        let sim = start(v);
        let ids = warehouse(&sim).await;
        let pid = ids["pickings"]["WH/IN/00012"].clone();
        let product = ids["products"][WIDGET].clone();
        let found = call(
            &sim,
            "stock.picking",
            "search_read",
            json!([[["name", "=", "WH/IN/00012"]]]),
            json!({"fields": ["state", "picking_type_code", "move_ids", "partner_id"]}),
        )
        .await;
        assert_eq!(found[0]["id"], pid, "{v}");
        assert_eq!(
            found[0]["state"], "assigned",
            "{v}: a receipt from Vendors is Ready at once"
        );
        assert_eq!(found[0]["picking_type_code"], "incoming");
        assert_eq!(found[0]["partner_id"][1], "Azure Interior");
        // the reserved line carries the demand, not picked
        let lines = call(
            &sim,
            "stock.move.line",
            "search_read",
            json!([[["picking_id", "=", pid]]]),
            json!({"fields": ["quantity", "picked", "lot_id", "move_id"]}),
        )
        .await;
        assert_eq!(lines.as_array().unwrap().len(), 1);
        assert_eq!(lines[0]["quantity"], 10.0);
        assert_eq!(lines[0]["picked"], false);
        // a scan: quantity, picked, lot name on the existing line
        call(
            &sim,
            "stock.move.line",
            "write",
            json!([[lines[0]["id"]], {"quantity": 10, "picked": true, "lot_name": "LOT-A"}]),
            json!({}),
        )
        .await;
        let res = call(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({}),
        )
        .await;
        assert_eq!(res, json!(true), "{v}");
        let st = state(&sim).await;
        let p = by_id(&st["pickings"], &pid);
        assert_eq!(p["state"], "done");
        let lot = st["lots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "LOT-A")
            .unwrap_or_else(|| panic!("{v}: lot created from lot_name"));
        assert_eq!(lot["product_id"], product);
        let stock = st["picking_types"][0]["default_location_dest_id"].clone();
        let quant = st["quants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["product_id"] == product && q["location_id"] == stock)
            .unwrap();
        assert_eq!(quant["quantity"], 10.0);
        assert_eq!(quant["lot_id"], lot["id"]);
    }
}

#[tokio::test]
async fn a_scanned_line_without_move_attaches_to_the_move_of_its_product_or_gets_a_new_move() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/IN/00012"].clone();
    let widget = ids["products"][WIDGET].clone();
    let gadget = ids["products"][GADGET].clone();
    let move_id = ids["moves"]["WH/IN/00012"][0].clone();
    let ml = call(
        &sim,
        "stock.move.line",
        "create",
        json!([{"picking_id": pid, "product_id": widget, "quantity": 4, "picked": true, "lot_name": "L1"}]),
        json!({}),
    )
    .await;
    let st = state(&sim).await;
    let line = by_id(&st["move_lines"], &ml);
    assert_eq!(
        line["move_id"], move_id,
        "attached to the receipt's Widget move"
    );
    assert_eq!(line["picked"], true);
    let m = by_id(&st["moves"], &move_id);
    assert_eq!(m["quantity"], 14.0, "the reserved 10 plus the scanned 4");
    assert_eq!(m["picked"], true);
    // a product the picking does not expect: a new move with no demand
    let extra = call(
        &sim,
        "stock.move.line",
        "create",
        json!([{"picking_id": pid, "product_id": gadget, "quantity": 2, "picked": true}]),
        json!({}),
    )
    .await;
    let st = state(&sim).await;
    let line = by_id(&st["move_lines"], &extra);
    assert_ne!(line["move_id"], move_id);
    let new_move = by_id(&st["moves"], &line["move_id"]);
    assert_eq!(new_move["picking_id"], pid);
    assert_eq!(new_move["product_uom_qty"], 0.0);
    assert_eq!(
        new_move["state"], "assigned",
        "a move created on a Ready picking takes its state"
    );
    // validating keeps only the picked lines: 4 Widgets (lot L1) and 2 Gadgets
    let res = call(
        &sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({}),
    )
    .await;
    assert_eq!(
        res["res_model"], "stock.backorder.confirmation",
        "4 of 10 picked: ask"
    );
}

#[tokio::test]
async fn a_delivery_reserves_shelf_stock_and_validating_moves_it_to_the_customer() {
    let sim = start("17");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/OUT/00007"].clone();
    let gadget = ids["products"][GADGET].clone();
    let a01 = ids["locations"]["WH-STOCK-A01"].clone();
    let st = state(&sim).await;
    let p = by_id(&st["pickings"], &pid);
    assert_eq!(p["state"], "assigned");
    let line = by_id(&st["move_lines"], &p["move_line_ids"][0]);
    assert_eq!(line["location_id"], a01, "reserved where the stock is");
    assert_eq!(line["quantity"], 3.0);
    let quant = st["quants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["product_id"] == gadget && q["location_id"] == a01)
        .unwrap()
        .clone();
    let reserved = call(
        &sim,
        "stock.quant",
        "read",
        json!([[quant["id"]]]),
        json!({"fields": ["reserved_quantity"]}),
    )
    .await;
    assert_eq!(reserved[0]["reserved_quantity"], 3.0);
    // packaging barcode lookup (17/18 model)
    let pk = call(
        &sim,
        "product.packaging",
        "search_read",
        json!([[["barcode", "=", "14006381333945"]]]),
        json!({"fields": ["product_id", "qty"]}),
    )
    .await;
    assert_eq!(pk[0]["product_id"][0], gadget);
    assert_eq!(pk[0]["qty"], 6.0);
    // pick: the scan marks the line picked
    call(
        &sim,
        "stock.move.line",
        "write",
        json!([[line["id"]], {"picked": true}]),
        json!({}),
    )
    .await;
    assert_eq!(
        call(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({})
        )
        .await,
        json!(true)
    );
    let st = state(&sim).await;
    assert_eq!(by_id(&st["pickings"], &pid)["state"], "done");
    assert_eq!(on_hand(&st, &gadget, &a01), 2.0);
    let customers = by_id(&st["pickings"], &pid)["location_dest_id"].clone();
    assert_eq!(on_hand(&st, &gadget, &customers), 3.0);
}

#[tokio::test]
async fn shipping_weight_written_by_a_scale_is_recomputed_when_the_lines_change_as_in_odoo() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/OUT/00007"].clone();
    call(
        &sim,
        "stock.picking",
        "write",
        json!([[pid], {"shipping_weight": 12.5}]),
        json!({}),
    )
    .await;
    let r = call(
        &sim,
        "stock.picking",
        "read",
        json!([[pid]]),
        json!({"fields": ["shipping_weight", "weight"]}),
    )
    .await;
    assert_eq!(r[0]["shipping_weight"], 12.5);
    assert_eq!(r[0]["weight"], 1.5, "3 Gadgets of 0.5 kg");
    let line = state(&sim).await["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pid)
        .unwrap()["move_line_ids"][0]
        .clone();
    call(
        &sim,
        "stock.move.line",
        "write",
        json!([[line], {"quantity": 2, "picked": true}]),
        json!({}),
    )
    .await;
    let r = call(
        &sim,
        "stock.picking",
        "read",
        json!([[pid]]),
        json!({"fields": ["shipping_weight"]}),
    )
    .await;
    assert_eq!(
        r[0]["shipping_weight"], 1.0,
        "stock_delivery's compute ran again: 2 x 0.5 kg"
    );
}

async fn shipping_weight(sim: &SimProcess, id: &Value) -> f64 {
    let r = call(
        sim,
        "stock.picking",
        "read",
        json!([[id]]),
        json!({"fields": ["shipping_weight"]}),
    )
    .await;
    r[0]["shipping_weight"].as_f64().unwrap()
}

#[tokio::test]
async fn validating_drops_the_unpicked_lines_and_recomputes_shipping_weight_as_in_odoo() {
    for v in ["17", "18", "19"] {
        let sim = start(v);
        let ids = warehouse(&sim).await;
        let pid = ids["pickings"]["WH/OUT/00007"].clone();
        let gadget = ids["products"][GADGET].clone();
        // A scanner picks 3 Gadgets on a new line; the reserved line on A01 stays unpicked.
        call(
            &sim,
            "stock.move.line",
            "create",
            json!([{"picking_id": pid, "product_id": gadget, "quantity": 3, "picked": true}]),
            json!({}),
        )
        .await;
        assert_eq!(
            shipping_weight(&sim, &pid).await,
            3.0,
            "{v}: reserved 3 + picked 3, 0.5 kg each"
        );
        call(
            &sim,
            "stock.picking",
            "write",
            json!([[pid], {"shipping_weight": 9.0}]),
            json!({}),
        )
        .await;
        assert_eq!(shipping_weight(&sim, &pid).await, 9.0, "{v}");
        let res = call(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({}),
        )
        .await;
        assert_eq!(res, json!(true), "{v}: 3 of 3 picked");
        let st = state(&sim).await;
        let done = by_id(&st["pickings"], &pid);
        assert_eq!(done["state"], "done", "{v}");
        assert_eq!(
            done["move_line_ids"].as_array().unwrap().len(),
            1,
            "{v}: the unpicked reserved line is gone: {done}"
        );
        assert_eq!(
            shipping_weight(&sim, &pid).await,
            1.5,
            "{v}: the compute ran again without the dropped line (3 x 0.5 kg), as Odoo does"
        );
    }
}

async fn short_receipt(sim: &SimProcess) -> (Value, Value) {
    let ids = warehouse(sim).await;
    let pid = ids["pickings"]["WH/IN/00012"].clone();
    let st = state(sim).await;
    let line = by_id(&st["pickings"], &pid)["move_line_ids"][0].clone();
    call(
        sim,
        "stock.move.line",
        "write",
        json!([[line], {"quantity": 6, "picked": true, "lot_name": "LOT-B"}]),
        json!({}),
    )
    .await;
    let action = call(
        sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({}),
    )
    .await;
    (pid, action)
}

#[tokio::test]
async fn a_short_receipt_answers_the_backorder_wizard_and_process_creates_the_backorder() {
    for v in ["17", "19"] {
        let sim = start(v);
        let (pid, action) = short_receipt(&sim).await;
        assert_eq!(action["type"], "ir.actions.act_window");
        assert_eq!(action["res_model"], "stock.backorder.confirmation");
        assert_eq!(action["target"], "new");
        assert_eq!(
            action["context"]["button_validate_picking_ids"],
            json!([pid])
        );
        assert_eq!(action["context"]["default_pick_ids"], json!([[4, pid]]));
        assert_eq!(
            picking_state(&sim, &pid).await,
            "assigned",
            "{v}: not done yet"
        );
        let ctx = action["context"].clone();
        let wiz = call(
            &sim,
            "stock.backorder.confirmation",
            "create",
            json!([{}]),
            json!({"context": ctx}),
        )
        .await;
        let res = call(
            &sim,
            "stock.backorder.confirmation",
            "process",
            json!([[wiz]]),
            json!({"context": ctx}),
        )
        .await;
        assert_eq!(res, json!(true));
        let st = state(&sim).await;
        assert_eq!(by_id(&st["pickings"], &pid)["state"], "done", "{v}");
        let bo = st["pickings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["backorder_id"] == pid)
            .unwrap_or_else(|| panic!("{v}: a backorder"));
        assert_eq!(bo["name"], "WH/IN/00013");
        assert_eq!(bo["state"], "assigned");
        let m = by_id(&st["moves"], &bo["move_ids"][0]);
        assert_eq!(m["product_uom_qty"], 4.0);
        let done_move = by_id(&st["moves"], &by_id(&st["pickings"], &pid)["move_ids"][0]);
        assert_eq!(
            done_move["product_uom_qty"], 6.0,
            "{v}: the done move keeps what was done"
        );
        assert_eq!(done_move["state"], "done");
    }
}

#[tokio::test]
async fn process_cancel_backorder_validates_without_a_backorder() {
    let sim = start("18");
    let (pid, action) = short_receipt(&sim).await;
    let ctx = action["context"].clone();
    let wiz = call(
        &sim,
        "stock.backorder.confirmation",
        "create",
        json!([{}]),
        json!({"context": ctx}),
    )
    .await;
    call(
        &sim,
        "stock.backorder.confirmation",
        "process_cancel_backorder",
        json!([[wiz]]),
        json!({"context": ctx}),
    )
    .await;
    let st = state(&sim).await;
    assert_eq!(by_id(&st["pickings"], &pid)["state"], "done");
    assert!(st["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["backorder_id"] != pid));
}

#[tokio::test]
async fn process_without_the_action_context_does_nothing_like_odoo() {
    let sim = start("18");
    let (pid, action) = short_receipt(&sim).await;
    let wiz = call(
        &sim,
        "stock.backorder.confirmation",
        "create",
        json!([{}]),
        json!({"context": action["context"]}),
    )
    .await;
    let res = call(
        &sim,
        "stock.backorder.confirmation",
        "process",
        json!([[wiz]]),
        json!({}),
    )
    .await;
    assert_eq!(res, json!(true));
    assert_eq!(picking_state(&sim, &pid).await, "assigned");
}

#[tokio::test]
async fn skip_backorder_in_the_context_validates_with_or_without_a_backorder() {
    let sim = start("17");
    let (pid, _) = short_receipt(&sim).await;
    let res = call(
        &sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({"context": {"skip_backorder": true, "picking_ids_not_to_backorder": [pid]}}),
    )
    .await;
    assert_eq!(res, json!(true));
    let st = state(&sim).await;
    assert_eq!(by_id(&st["pickings"], &pid)["state"], "done");
    assert!(st["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["backorder_id"] != pid));

    let sim = start("17");
    let (pid, _) = short_receipt(&sim).await;
    call(
        &sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({"context": {"skip_backorder": true}}),
    )
    .await;
    let st = state(&sim).await;
    assert!(st["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["backorder_id"] == pid));
}

#[tokio::test]
async fn operation_types_that_never_or_always_backorder_do_not_ask() {
    let sim = start("18");
    seed(
        &sim,
        json!({"picking_types": [{"sequence_code": "IN", "create_backorder": "never"}]}),
    )
    .await;
    let (pid, res) = short_receipt(&sim).await;
    assert_eq!(res, json!(true));
    let st = state(&sim).await;
    assert!(st["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["backorder_id"] != pid));

    let sim = start("18");
    seed(
        &sim,
        json!({"picking_types": [{"sequence_code": "IN", "create_backorder": "always"}]}),
    )
    .await;
    let (pid, res) = short_receipt(&sim).await;
    assert_eq!(res, json!(true));
    let st = state(&sim).await;
    assert!(st["pickings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["backorder_id"] == pid));
}

#[tokio::test]
async fn a_tracked_product_without_lot_is_refused_and_nothing_is_validated() {
    for (v, msg) in [
        (
            "17",
            "You need to supply a Lot/Serial Number for product: \n - Widget",
        ),
        (
            "18",
            "You need to supply a Lot/Serial Number for product:\n- Widget",
        ),
    ] {
        let sim = start(v);
        let ids = warehouse(&sim).await;
        let pid = ids["pickings"]["WH/IN/00012"].clone();
        let err = call_err(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({}),
        )
        .await;
        assert_eq!(err["name"], "odoo.exceptions.UserError");
        assert_eq!(err["message"], msg);
        assert_eq!(
            picking_state(&sim, &pid).await,
            "assigned",
            "{v}: rolled back"
        );
        let st = state(&sim).await;
        assert!(
            st["move_lines"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["picked"] == false),
            "{v}"
        );
    }
    // a picked line without lot fails the sanity check first
    let sim = start("19");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/IN/00012"].clone();
    let st = state(&sim).await;
    let line = by_id(&st["pickings"], &pid)["move_line_ids"][0].clone();
    call(
        &sim,
        "stock.move.line",
        "write",
        json!([[line], {"picked": true}]),
        json!({}),
    )
    .await;
    let err = call_err(
        &sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({}),
    )
    .await;
    assert_eq!(
        err["message"],
        "You need to supply a Lot/Serial number for products Widget."
    );
}

#[tokio::test]
async fn a_duplicate_lot_is_a_validation_error() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let widget = ids["products"][WIDGET].clone();
    call(
        &sim,
        "stock.lot",
        "create",
        json!([{"name": "LOT-X", "product_id": widget}]),
        json!({}),
    )
    .await;
    let err = call_err(
        &sim,
        "stock.lot",
        "create",
        json!([{"name": "LOT-X", "product_id": widget}]),
        json!({}),
    )
    .await;
    assert_eq!(err["name"], "odoo.exceptions.ValidationError");
    assert_eq!(
        err["message"],
        "The combination of serial number and product must be unique across a company.\nFollowing combination contains duplicates:\n - Product: Widget, Serial Number: LOT-X"
    );
}

#[tokio::test]
async fn an_empty_transfer_is_refused_with_the_message_of_each_version() {
    for (v, msg) in [
        ("17", "Please add some items to move."),
        ("18", "You can’t validate an empty transfer. Please add some products to move before proceeding."),
        ("19", "You can’t validate an empty transfer. Please add some products to move before proceeding."),
    ] {
        let sim = start(v);
        seed(&sim, json!({"pickings": [{"name": "WH/INT/00001", "type": "internal"}]})).await;
        let found = call(&sim, "stock.picking", "search", json!([[["name", "=", "WH/INT/00001"]]]), json!({})).await;
        let err = call_err(&sim, "stock.picking", "button_validate", json!([found]), json!({})).await;
        assert_eq!(err["message"], msg, "{v}");
    }
}

#[tokio::test]
async fn a_done_picking_is_skipped_from_18_and_refused_in_17() {
    for v in ["17", "18"] {
        let sim = start(v);
        let ids = warehouse(&sim).await;
        let pid = ids["pickings"]["WH/OUT/00007"].clone();
        call(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({}),
        )
        .await;
        let again = execute_kw(
            &sim,
            "stock.picking",
            "button_validate",
            json!([[pid]]),
            json!({}),
        )
        .await;
        if v == "17" {
            assert_eq!(
                again["error"]["data"]["message"],
                "You cannot validate a transfer if no quantities are reserved nor done. To force the transfer, encode quantities."
            );
        } else {
            assert_eq!(again["result"], json!(true));
        }
    }
}

#[tokio::test]
async fn loading_a_move_line_by_external_id_twice_applies_once() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/IN/00012"].clone();
    let widget = ids["products"][WIDGET].clone();
    let fields = json!([
        "id",
        "picking_id/.id",
        "product_id/.id",
        "quantity",
        "picked",
        "lot_name"
    ]);
    let rows = json!([["scanbridge.WH01_41", pid, widget, 3, true, "LOT-9"]]);
    let first = call(
        &sim,
        "stock.move.line",
        "load",
        json!([fields, rows]),
        json!({}),
    )
    .await;
    let second = call(
        &sim,
        "stock.move.line",
        "load",
        json!([fields, rows]),
        json!({}),
    )
    .await;
    assert_eq!(first["messages"], json!([]));
    assert_eq!(first["ids"], second["ids"]);
    let st = state(&sim).await;
    assert_eq!(
        st["move_lines"].as_array().unwrap().len(),
        2 + 1,
        "reserved receipt line, delivery line, one scan"
    );
    let m = by_id(&st["moves"], &ids["moves"]["WH/IN/00012"][0]);
    assert_eq!(m["quantity"], 13.0);
}

#[tokio::test]
async fn version_differences_show_in_the_models() {
    let sim = start("17");
    let f = call(&sim, "product.product", "fields_get", json!([]), json!({})).await;
    assert!(f.get("detailed_type").is_some() && f.get("is_storable").is_none());
    let pk = call(
        &sim,
        "stock.quant.package",
        "search_count",
        json!([[]]),
        json!({}),
    )
    .await;
    assert_eq!(pk, json!(0));

    let sim = start("19");
    warehouse(&sim).await;
    let f = call(&sim, "product.product", "fields_get", json!([]), json!({})).await;
    assert!(f.get("is_storable").is_some() && f.get("detailed_type").is_none());
    let err = call_err(
        &sim,
        "product.packaging",
        "search_read",
        json!([[]]),
        json!({}),
    )
    .await;
    assert_eq!(err["message"], "Object product.packaging doesn't exist");
    let pu = call(
        &sim,
        "product.uom",
        "search_read",
        json!([[["barcode", "=", "14006381333945"]]]),
        json!({"fields": ["product_id", "uom_id"]}),
    )
    .await;
    assert_eq!(pu[0]["uom_id"][1], "Pack of 6");
    let err = call_err(
        &sim,
        "stock.quant.package",
        "search_count",
        json!([[]]),
        json!({}),
    )
    .await;
    assert_eq!(err["message"], "Object stock.quant.package doesn't exist");
    call(
        &sim,
        "stock.package",
        "search_count",
        json!([[]]),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn a_transfer_created_over_rpc_is_named_by_its_sequence_and_reserves_on_confirm() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let gadget = ids["products"][GADGET].clone();
    let widget = ids["products"][WIDGET].clone();
    let int_type = ids["picking_types"]["INT"].clone();
    let pid = call(
        &sim,
        "stock.picking",
        "create",
        json!([{"picking_type_id": int_type, "move_ids": [[0, 0, {"product_id": gadget, "product_uom_qty": 4}]]}]),
        json!({}),
    )
    .await;
    let r = call(
        &sim,
        "stock.picking",
        "read",
        json!([[pid]]),
        json!({"fields": ["name", "state", "move_ids"]}),
    )
    .await;
    assert_eq!(r[0]["name"], "WH/INT/00001");
    assert_eq!(r[0]["state"], "draft");
    call(
        &sim,
        "stock.picking",
        "action_confirm",
        json!([[pid]]),
        json!({}),
    )
    .await;
    // 5 on A01, 3 reserved by the delivery: 2 left for this transfer
    let st = state(&sim).await;
    let p = by_id(&st["pickings"], &pid);
    assert_eq!(p["state"], "assigned", "partially available shows as Ready");
    let m = by_id(&st["moves"], &p["move_ids"][0]);
    assert_eq!(m["state"], "partially_available");
    assert_eq!(m["quantity"], 2.0);
    // a lot of another product is refused on a line
    let lot = call(
        &sim,
        "stock.lot",
        "create",
        json!([{"name": "W-1", "product_id": widget}]),
        json!({}),
    )
    .await;
    let err = call_err(
        &sim,
        "stock.move.line",
        "create",
        json!([{"picking_id": pid, "product_id": gadget, "quantity": 1, "lot_id": lot}]),
        json!({}),
    )
    .await;
    assert_eq!(err["name"], "odoo.exceptions.ValidationError");
    assert_eq!(
        err["message"],
        "This lot W-1 is incompatible with this product Gadget"
    );
    // writing the move quantity moves its lines; unreserving drops unpicked lines
    call(
        &sim,
        "stock.move",
        "write",
        json!([[m["id"]], {"quantity": 1}]),
        json!({}),
    )
    .await;
    let st = state(&sim).await;
    assert_eq!(by_id(&st["moves"], &m["id"])["quantity"], 1.0);
    call(
        &sim,
        "stock.picking",
        "do_unreserve",
        json!([[pid]]),
        json!({}),
    )
    .await;
    let st = state(&sim).await;
    assert_eq!(by_id(&st["moves"], &m["id"])["state"], "confirmed");
    assert_eq!(by_id(&st["pickings"], &pid)["state"], "confirmed");
}

#[tokio::test]
async fn a_second_picking_with_the_same_reference_is_refused() {
    let sim = start("17");
    let ids = warehouse(&sim).await;
    let in_type = ids["picking_types"]["IN"].clone();
    let err = call_err(
        &sim,
        "stock.picking",
        "create",
        json!([{"picking_type_id": in_type, "name": "WH/IN/00012"}]),
        json!({}),
    )
    .await;
    assert_eq!(err["name"], "odoo.exceptions.ValidationError");
    assert_eq!(
        err["message"],
        "The operation cannot be completed: Reference must be unique per company!"
    );
}

#[tokio::test]
async fn a_line_added_to_a_done_picking_moves_stock_at_once_as_in_odoo() {
    let sim = start("18");
    let ids = warehouse(&sim).await;
    let pid = ids["pickings"]["WH/OUT/00007"].clone();
    let gadget = ids["products"][GADGET].clone();
    call(
        &sim,
        "stock.picking",
        "button_validate",
        json!([[pid]]),
        json!({}),
    )
    .await;
    let before = state(&sim).await;
    let src = by_id(&before["pickings"], &pid)["location_id"].clone();
    let ml = call(
        &sim,
        "stock.move.line",
        "create",
        json!([{"picking_id": pid, "product_id": gadget, "quantity": 1}]),
        json!({}),
    )
    .await;
    let st = state(&sim).await;
    let line = by_id(&st["move_lines"], &ml);
    assert_eq!(line["state"], "done");
    let m = by_id(&st["moves"], &line["move_id"]);
    assert_eq!(
        (m["state"].clone(), m["product_uom_qty"].clone()),
        (json!("done"), json!(1.0))
    );
    assert_eq!(
        on_hand(&st, &gadget, &src),
        on_hand(&before, &gadget, &src) - 1.0
    );
}
