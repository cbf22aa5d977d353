//! The exactly-once, in-order verdict on the simulator's state after a stream of counts.
//!
//! The stream is built so that the k-th count of a (product, location) pair carries qty = k. Applied
//! exactly once and in order, every count then raises the quant by exactly 1, so each pair must end
//! with quantity = number of counts, and with exactly that many inventory moves, each of 1 unit from
//! the inventory-adjustment location into the pair's location. A lost count leaves fewer moves (and
//! a +2 move); a duplicate makes a zero move; a reordering makes a +2 and a -1 move. All fail here.

use std::collections::{BTreeMap, BTreeSet};

use crate::odoo_sim::{Move, SimState};

/// A (product id, location id) pair in the simulator's database.
pub type Pair = (i64, i64);

/// Counts per pair, and the (product, location) ids to ignore (fence and warm-up products).
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// How many counts were published for each pair (the k-th with qty = k).
    pub counts: BTreeMap<Pair, u64>,
}

impl Expected {
    /// Records the next count for `pair` and returns its qty (1, 2, 3, ...).
    pub fn next_qty(&mut self, pair: Pair) -> u64 {
        let n = self.counts.entry(pair).or_insert(0);
        *n += 1;
        *n
    }

    /// Total counts.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Products of the pairs.
    pub fn products(&self) -> BTreeSet<i64> {
        self.counts.keys().map(|p| p.0).collect()
    }

    /// How many pairs already hold their final quantity in `state`.
    pub fn pairs_done(&self, state: &SimState) -> usize {
        self.counts
            .iter()
            .filter(|(&(p, l), &n)| state.quant(p, l).is_some_and(|q| q.quantity == n as f64))
            .count()
    }
}

/// A chunk tag `scanbridge:<site>:<first>-<last>` parsed into its seq range.
///
/// Odoo 17+ appends ` (<user>)` to an inventory move's name when the quant is assigned to a user
/// other than the superuser (`_get_inventory_move_values`), which inventory-mode writes through the
/// API do; that suffix is accepted.
pub fn parse_tag(name: &str, site: &str) -> Option<(u64, u64)> {
    let name = match name.split_once(" (") {
        Some((tag, user)) if user.ends_with(')') => tag,
        _ => name,
    };
    let rest = name
        .strip_prefix("scanbridge:")?
        .strip_prefix(site)?
        .strip_prefix(':')?;
    let (a, b) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !all_digits(a) || !all_digits(b) {
        return None;
    }
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

/// What the verdict found, for the test's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub pairs: usize,
    pub moves: usize,
    pub chunks: usize,
    pub inventory_location: i64,
}

/// The panic message for a failed [`verify_exactly_once`]: how many violations, and the first 30.
/// `what` says under which faults, e.g. `"after 25 SIGKILLs (seed 7)"`.
pub fn describe_violations(problems: &[String], what: &str) -> String {
    format!(
        "{} violations of exactly-once, in-order {what}; first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Checks the exactly-once, in-order property for every pair of `expected`; every violation found
/// is listed (not just the first), so a failing run explains itself.
pub fn verify_exactly_once(
    state: &SimState,
    expected: &Expected,
    site: &str,
) -> Result<Summary, Vec<String>> {
    let mut problems = Vec::new();
    let products = expected.products();
    let locations: BTreeSet<i64> = expected.counts.keys().map(|p| p.1).collect();

    let tracked: Vec<&Move> = state
        .moves
        .iter()
        .filter(|m| m.is_inventory && m.product_id.is_some_and(|p| products.contains(&p)))
        .collect();

    // The virtual inventory-adjustment location: from the simulator's xmlids if it has them,
    // else the one source all moves into a tracked location share.
    let inventory_location = state.inventory_location_id().or_else(|| {
        let sources: BTreeSet<i64> = tracked
            .iter()
            .filter(|m| m.location_dest_id.is_some_and(|l| locations.contains(&l)))
            .filter_map(|m| m.location_id)
            .collect();
        if sources.len() > 1 {
            problems.push(format!(
                "inventory moves come from several locations {sources:?}; expected one \
                 inventory-adjustment location"
            ));
        }
        sources.into_iter().next()
    });
    let Some(inventory_location) = inventory_location else {
        problems.push("no inventory move at all for the published counts".into());
        return Err(problems);
    };
    if locations.contains(&inventory_location) {
        problems.push(format!(
            "inventory moves come from location {inventory_location}, which is a counted shelf"
        ));
    }

    // Moves per pair, in id order (the simulator lists them in creation order).
    let mut per_pair: BTreeMap<Pair, Vec<&Move>> = BTreeMap::new();
    let mut ids_in_order = true;
    let mut last_id = i64::MIN;
    for m in &state.moves {
        ids_in_order &= m.id > last_id;
        last_id = m.id;
    }
    if !ids_in_order {
        problems.push("/__sim/state lists moves out of id order".into());
    }
    for m in &tracked {
        let Some(product) = m.product_id else {
            continue;
        };
        let into = m.location_dest_id.filter(|l| locations.contains(l));
        let out_of = m.location_id.filter(|l| locations.contains(l));
        match into.or(out_of) {
            Some(loc) => per_pair.entry((product, loc)).or_default().push(m),
            None => problems.push(format!(
                "move {} `{}` of product {product} touches no counted location ({:?} -> {:?})",
                m.id, m.name, m.location_id, m.location_dest_id
            )),
        }
    }

    for (&(product, location), &n) in &expected.counts {
        let quantity = state.quant(product, location).map(|q| q.quantity);
        if quantity != Some(n as f64) {
            problems.push(format!(
                "product {product} at location {location}: quantity {quantity:?}, expected {n} \
                 ({n} counts published)"
            ));
        }
        let moves = per_pair.remove(&(product, location)).unwrap_or_default();
        if moves.len() as u64 != n {
            problems.push(format!(
                "product {product} at location {location}: {} inventory moves, expected {n}",
                moves.len()
            ));
        }
        for m in &moves {
            let ok = m.product_uom_qty == 1.0
                && m.location_id == Some(inventory_location)
                && m.location_dest_id == Some(location);
            if !ok {
                problems.push(format!(
                    "product {product} at location {location}: move {} `{}` is {} from {:?} to \
                     {:?}; expected 1 from the inventory location {inventory_location} (a 0 is a \
                     duplicate, 2 a loss, a reverse move a reordering)",
                    m.id, m.name, m.product_uom_qty, m.location_id, m.location_dest_id
                ));
            }
            if m.state != "done" {
                problems.push(format!("move {} is in state `{}`, not done", m.id, m.state));
            }
        }
    }
    for ((product, location), moves) in per_pair {
        problems.push(format!(
            "{} inventory moves for product {product} at location {location}, where nothing was \
             counted",
            moves.len()
        ));
    }

    // Tags: well formed, ranges disjoint, applied in seq order, at most one move per event.
    let mut per_tag: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut last_range: Option<(u64, u64)> = None;
    for m in &tracked {
        match parse_tag(&m.name, site) {
            None => problems.push(format!(
                "move {} is named `{}`, not `scanbridge:{site}:<first>-<last>`",
                m.id, m.name
            )),
            Some(range) => {
                *per_tag.entry(range).or_default() += 1;
                if let Some(prev) = last_range {
                    if range != prev && range.0 <= prev.1 {
                        problems.push(format!(
                            "move {} chunk {}-{} applied after chunk {}-{} (out of seq order or \
                             overlapping)",
                            m.id, range.0, range.1, prev.0, prev.1
                        ));
                    }
                }
                last_range = Some(range);
            }
        }
    }
    let ranges: Vec<(u64, u64)> = per_tag.keys().copied().collect();
    for w in ranges.windows(2) {
        if w[1].0 <= w[0].1 {
            problems.push(format!(
                "chunk ranges {}-{} and {}-{} overlap",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    for (&(a, b), &moves) in &per_tag {
        if moves as u64 > b - a + 1 {
            problems.push(format!(
                "chunk {a}-{b} made {moves} moves for {} events",
                b - a + 1
            ));
        }
    }

    if problems.is_empty() {
        Ok(Summary {
            pairs: expected.counts.len(),
            moves: tracked.len(),
            chunks: per_tag.len(),
            inventory_location,
        })
    } else {
        Err(problems)
    }
}

/// One published count of a stream whose publisher may have lost its broker: which pair, which
/// qty, and whether the broker PUBACKed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedCount {
    pub pair: Pair,
    pub qty: u64,
    pub acked: bool,
}

/// What [`verify_after_broker_loss`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerLossReport {
    /// Counts applied in Odoo.
    pub applied: usize,
    /// PUBACKed counts that never reached Odoo (`(pair, qty)`): lost by the broker.
    pub acked_lost: Vec<(Pair, u64)>,
    /// Counts without a PUBACK that never reached Odoo (allowed).
    pub unacked_absent: usize,
    /// Counts without a PUBACK that reached Odoo once (allowed).
    pub unacked_present: usize,
    /// Counts applied again right after themselves (a zero move), once per extra application:
    /// `(pair, qty)`. Not a violation by itself: the test must tell a scanner's re-publication (a
    /// second MQTT message the agent cannot know for the same scan) from a redelivery the agent
    /// should have recognised.
    pub repeated: Vec<(Pair, u64)>,
    /// Violations: a count applied out of order, one nobody published, or an applied event
    /// without its move.
    pub violations: Vec<String>,
}

/// The verdict for a stream published through a broker that may have lost messages (a broker
/// SIGKILL between two autosaves): the counts applied in Odoo, per pair, must be an increasing
/// subsequence of the published ones (nothing out of order, nothing invented), where a count
/// applied again right after itself is listed in [`BrokerLossReport::repeated`]; every PUBACKed
/// count missing from it is reported in [`BrokerLossReport::acked_lost`] for the test to judge
/// against the broker's durability window.
///
/// The applied counts of a pair are read from its inventory moves (the running sum of their
/// signed quantities is the qty each applied count set; a duplicate adds a zero move) and checked
/// against the number of `scanbridge.<site>_<seq>` external ids on the pair's quant (one per
/// applied event, so a duplicate Odoo made no move for still shows).
pub fn verify_after_broker_loss(
    state: &SimState,
    published: &[PublishedCount],
    site: &str,
) -> BrokerLossReport {
    let mut report = BrokerLossReport::default();
    let mut per_pair: BTreeMap<Pair, Vec<&PublishedCount>> = BTreeMap::new();
    for c in published {
        per_pair.entry(c.pair).or_default().push(c);
    }
    let xid_prefix = format!("{site}_");
    for (&(product, location), counts) in &per_pair {
        let moves: Vec<&Move> = state
            .moves
            .iter()
            .filter(|m| m.is_inventory && m.product_id == Some(product))
            .filter(|m| m.location_dest_id == Some(location) || m.location_id == Some(location))
            .collect();
        let mut level = 0.0f64;
        let mut applied: Vec<u64> = Vec::new();
        for m in &moves {
            let signed = if m.location_dest_id == Some(location) {
                m.product_uom_qty
            } else {
                -m.product_uom_qty
            };
            let next = level + signed;
            if next == level {
                report
                    .repeated
                    .push(((product, location), next.max(0.0) as u64));
            } else if next < level {
                report.violations.push(format!(
                    "product {product} at location {location}: move {} takes the quantity from \
                     {level} down to {next} (a count applied out of order)",
                    m.id
                ));
            }
            level = next;
            applied.push(next.max(0.0) as u64);
        }
        if let Some(quant) = state.quant(product, location) {
            let events = state
                .xmlids
                .iter()
                .filter(|x| x.model == "stock.quant" && x.res_id == quant.id)
                .filter(|x| x.name.starts_with(&xid_prefix))
                .count();
            if events != moves.len() {
                report.violations.push(format!(
                    "product {product} at location {location}: {events} events applied to its \
                     quant but {} moves (an event applied without effect is a duplicate)",
                    moves.len()
                ));
            }
        }
        let published_qtys: BTreeSet<u64> = counts.iter().map(|c| c.qty).collect();
        for q in &applied {
            if !published_qtys.contains(q) {
                report.violations.push(format!(
                    "product {product} at location {location}: qty {q} applied, never published"
                ));
            }
        }
        let applied_set: BTreeSet<u64> = applied.iter().copied().collect();
        report.applied += applied.len();
        for c in counts {
            match (applied_set.contains(&c.qty), c.acked) {
                (false, true) => report.acked_lost.push((c.pair, c.qty)),
                (false, false) => report.unacked_absent += 1,
                (true, false) => report.unacked_present += 1,
                (true, true) => {}
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odoo_sim::Quant;

    const INV: i64 = 14;

    fn mv(id: i64, tag: &str, product: i64, from: i64, to: i64, qty: f64) -> Move {
        Move {
            id,
            name: tag.into(),
            product_id: Some(product),
            location_id: Some(from),
            location_dest_id: Some(to),
            product_uom_qty: qty,
            quantity: qty,
            state: "done".into(),
            is_inventory: true,
            reference: serde_json::Value::Null,
        }
    }

    fn quant(id: i64, product: i64, location: i64, quantity: f64) -> Quant {
        Quant {
            id,
            product_id: Some(product),
            location_id: Some(location),
            lot_id: None,
            quantity,
            inventory_quantity: 0.0,
            inventory_quantity_set: false,
        }
    }

    fn state(quants: Vec<Quant>, moves: Vec<Move>) -> SimState {
        SimState {
            products: vec![],
            locations: vec![],
            quants,
            moves,
            xmlids: vec![],
            calls: Default::default(),
            rpc_total: 0,
        }
    }

    /// Product 1 and 2 at location 20: seq 1 = p1 qty1, seq 2 = p2 qty1, seq 3 = p1 qty2.
    fn expected() -> Expected {
        let mut e = Expected::default();
        e.next_qty((1, 20));
        e.next_qty((2, 20));
        e.next_qty((1, 20));
        e
    }

    fn good_state() -> SimState {
        state(
            vec![quant(1, 1, 20, 2.0), quant(2, 2, 20, 1.0)],
            vec![
                mv(1, "scanbridge:WH01:1-2", 1, INV, 20, 1.0),
                mv(2, "scanbridge:WH01:1-2", 2, INV, 20, 1.0),
                mv(3, "scanbridge:WH01:3-3", 1, INV, 20, 1.0),
            ],
        )
    }

    #[test]
    fn counts_applied_exactly_once_in_order_pass() {
        let s = verify_exactly_once(&good_state(), &expected(), "WH01").expect("good");
        assert_eq!(s.moves, 3);
        assert_eq!(s.chunks, 2);
        assert_eq!(s.inventory_location, INV);
    }

    #[test]
    fn a_duplicate_apply_shows_as_a_zero_move_and_fails() {
        let mut st = good_state();
        st.moves.push(mv(4, "scanbridge:WH01:4-4", 1, INV, 20, 0.0));
        let err = verify_exactly_once(&st, &expected(), "WH01").expect_err("dup");
        assert!(
            err.iter()
                .any(|p| p.contains("3 inventory moves, expected 2")),
            "{err:?}"
        );
    }

    #[test]
    fn a_lost_count_fails() {
        let st = state(
            vec![quant(1, 1, 20, 2.0), quant(2, 2, 20, 1.0)],
            vec![
                mv(1, "scanbridge:WH01:2-2", 2, INV, 20, 1.0),
                mv(2, "scanbridge:WH01:3-3", 1, INV, 20, 2.0),
            ],
        );
        assert!(verify_exactly_once(&st, &expected(), "WH01").is_err());
    }

    #[test]
    fn a_reordering_fails() {
        // qty 2 applied before qty 1: +2 then -1, final quantity 1.
        let st = state(
            vec![quant(1, 1, 20, 1.0), quant(2, 2, 20, 1.0)],
            vec![
                mv(1, "scanbridge:WH01:1-1", 1, INV, 20, 2.0),
                mv(2, "scanbridge:WH01:2-3", 2, INV, 20, 1.0),
                mv(3, "scanbridge:WH01:2-3", 1, 20, INV, 1.0),
            ],
        );
        assert!(verify_exactly_once(&st, &expected(), "WH01").is_err());
    }

    #[test]
    fn overlapping_chunk_ranges_fail() {
        let mut st = good_state();
        st.moves[2].name = "scanbridge:WH01:2-3".into();
        let err = verify_exactly_once(&st, &expected(), "WH01").expect_err("overlap");
        assert!(err.iter().any(|p| p.contains("overlap")), "{err:?}");
    }

    #[test]
    fn a_move_named_otherwise_fails() {
        let mut st = good_state();
        st.moves[0].name = "Quantity Updated".into();
        let err = verify_exactly_once(&st, &expected(), "WH01").expect_err("name");
        assert!(
            err.iter().any(|p| p.contains("not `scanbridge:WH01")),
            "{err:?}"
        );
    }

    #[test]
    fn chunk_tags_parse_only_in_the_contract_form() {
        assert_eq!(parse_tag("scanbridge:WH01:1-200", "WH01"), Some((1, 200)));
        assert_eq!(parse_tag("scanbridge:WH01:7-7", "WH01"), Some((7, 7)));
        assert_eq!(
            parse_tag("scanbridge:WH01:1-39 (Administrator)", "WH01"),
            Some((1, 39))
        );
        assert_eq!(parse_tag("scanbridge:WH01:1-39 (Admin", "WH01"), None);
        assert_eq!(parse_tag("scanbridge:WH02:1-2", "WH01"), None);
        assert_eq!(parse_tag("scanbridge:WH01:3-2", "WH01"), None);
        assert_eq!(parse_tag("scanbridge:WH01:1-", "WH01"), None);
        assert_eq!(parse_tag("scanbridge:WH01:+1-2", "WH01"), None);
    }

    fn published(acked: &[bool]) -> Vec<PublishedCount> {
        // Pair (1, 20) counted 1, 2, 3.
        acked
            .iter()
            .enumerate()
            .map(|(i, &a)| PublishedCount {
                pair: (1, 20),
                qty: i as u64 + 1,
                acked: a,
            })
            .collect()
    }

    fn xid(seq: u64, quant: i64) -> crate::odoo_sim::XmlId {
        crate::odoo_sim::XmlId {
            module: "scanbridge".into(),
            name: format!("WH01_{seq}"),
            model: "stock.quant".into(),
            res_id: quant,
        }
    }

    #[test]
    fn after_a_broker_loss_missing_acked_counts_and_repeats_are_reported_and_a_silent_repeat_fails()
    {
        // Counts 1 and 3 applied (2 lost by the broker although acked).
        let mut st = state(
            vec![quant(1, 1, 20, 3.0)],
            vec![
                mv(1, "scanbridge:WH01:1-1", 1, INV, 20, 1.0),
                mv(2, "scanbridge:WH01:2-2", 1, INV, 20, 2.0),
            ],
        );
        st.xmlids = vec![xid(1, 1), xid(2, 1)];
        let r = verify_after_broker_loss(&st, &published(&[true, true, false]), "WH01");
        assert!(r.violations.is_empty(), "{r:?}");
        assert_eq!(r.acked_lost, vec![((1, 20), 2)]);
        assert_eq!(r.unacked_present, 1);
        assert_eq!(r.applied, 2);

        // Count 3 applied twice: a zero move and a third event, listed for the test to judge.
        st.moves.push(mv(3, "scanbridge:WH01:3-3", 1, INV, 20, 0.0));
        st.xmlids.push(xid(3, 1));
        let r = verify_after_broker_loss(&st, &published(&[true, true, false]), "WH01");
        assert!(r.violations.is_empty(), "{r:?}");
        assert_eq!(r.repeated, vec![((1, 20), 3)]);

        // Applied out of order: 3 then 2 again.
        let mut back = st.clone();
        back.moves
            .push(mv(4, "scanbridge:WH01:4-4", 1, 20, INV, 1.0));
        back.xmlids.push(xid(4, 1));
        let r = verify_after_broker_loss(&back, &published(&[true, true, false]), "WH01");
        assert_eq!(r.violations.len(), 1, "{r:?}");

        // A repeat Odoo made no move for still shows in the external ids.
        st.moves.pop();
        let r = verify_after_broker_loss(&st, &published(&[true, true, false]), "WH01");
        assert_eq!(r.violations.len(), 1, "{r:?}");
    }
}
