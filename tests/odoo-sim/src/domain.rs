//! Odoo search domains: parsing the JSON list form (Polish-notation `&`, `|`, `!` prefix
//! operators with implicit AND) and evaluating it against stored records.
//!
//! Mirrors `odoo/osv/expression.py` (17) / `odoo/orm/domains.py` (18+): leaf operators `=`, `!=`,
//! `<>`, `<`, `>`, `<=`, `>=`, `in`, `not in`, `like`, `not like`, `ilike`, `not ilike`, `=like`,
//! `=ilike`, `child_of`, `parent_of`; dotted paths through many2one fields
//! (`location_id.usage`); `('x', '=', False)` meaning "not set"; negative operators also matching
//! unset values (SQL `OR x IS NULL`); many2one compared to a string by display name;
//! `(1, '=', 1)` / `(0, '=', 1)` constant leaves.

use serde_json::Value;

use crate::db::{as_f64, as_id, py_repr, truthy, Db, FieldType};
use crate::rpc::errors::OdooError;

/// A parsed domain.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// Always true (also the empty domain).
    True,
    /// Always false.
    False,
    /// `(path, operator, value)`.
    Leaf {
        /// Field path, split on dots.
        path: Vec<String>,
        /// Operator, normalised (`<>` → `!=`).
        op: String,
        /// Right-hand value.
        value: Value,
    },
    /// All must hold.
    And(Vec<Domain>),
    /// One must hold.
    Or(Vec<Domain>),
    /// Negation.
    Not(Box<Domain>),
}

const OPERATORS: &[&str] = &[
    "=",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "in",
    "not in",
    "like",
    "not like",
    "ilike",
    "not ilike",
    "=like",
    "=ilike",
    "child_of",
    "parent_of",
];

fn syntax_error(domain: &Value) -> OdooError {
    OdooError::value_error(format!(
        "Domain {} is syntactically not correct.",
        py_repr(domain)
    ))
}

/// Parse a domain in its JSON list form.
pub fn parse(domain: &Value) -> Result<Domain, OdooError> {
    let items = match domain {
        Value::Null | Value::Bool(false) => return Ok(Domain::True),
        Value::Array(items) => items,
        _ => return Err(syntax_error(domain)),
    };
    let mut stack: Vec<Domain> = Vec::new();
    for item in items.iter().rev() {
        match item {
            Value::String(s) if s == "!" => {
                let a = stack.pop().ok_or_else(|| syntax_error(domain))?;
                stack.push(Domain::Not(Box::new(a)));
            }
            Value::String(s) if s == "&" || s == "|" => {
                let a = stack.pop().ok_or_else(|| syntax_error(domain))?;
                let b = stack.pop().ok_or_else(|| syntax_error(domain))?;
                stack.push(if s == "&" {
                    Domain::And(vec![a, b])
                } else {
                    Domain::Or(vec![a, b])
                });
            }
            Value::Array(leaf) if leaf.len() == 3 => stack.push(parse_leaf(leaf)?),
            _ => return Err(syntax_error(domain)),
        }
    }
    stack.reverse();
    Ok(match stack.len() {
        0 => Domain::True,
        1 => stack.pop().unwrap_or(Domain::True),
        _ => Domain::And(stack),
    })
}

fn parse_leaf(leaf: &[Value]) -> Result<Domain, OdooError> {
    let op = leaf[1].as_str().unwrap_or_default().to_lowercase();
    let op = if op == "<>" { "!=".to_owned() } else { op };
    match &leaf[0] {
        Value::Number(n) => {
            // TRUE_LEAF (1, '=', 1) and FALSE_LEAF (0, '=', 1)
            let l = n.as_i64().unwrap_or(-1);
            match (l, op.as_str(), leaf[2].as_i64()) {
                (1, "=", Some(1)) => Ok(Domain::True),
                (0, "=", Some(1)) => Ok(Domain::False),
                _ => Err(OdooError::value_error(format!(
                    "Invalid leaf {}",
                    py_repr(&leaf.to_vec().into())
                ))),
            }
        }
        Value::String(path) => {
            if !OPERATORS.contains(&op.as_str()) {
                return Err(OdooError::value_error(format!(
                    "Invalid operator {} in domain term {}",
                    py_repr(&leaf[1]),
                    leaf_repr(leaf)
                )));
            }
            Ok(Domain::Leaf {
                path: path.split('.').map(str::to_owned).collect(),
                op,
                value: leaf[2].clone(),
            })
        }
        _ => Err(OdooError::value_error(format!(
            "Invalid leaf {}",
            leaf_repr(leaf)
        ))),
    }
}

fn leaf_repr(leaf: &[Value]) -> String {
    format!(
        "({})",
        leaf.iter().map(py_repr).collect::<Vec<_>>().join(", ")
    )
}

impl Domain {
    /// True when some leaf tests the `active` field (then `active_test` adds nothing).
    pub fn mentions_active(&self) -> bool {
        match self {
            Domain::Leaf { path, .. } => path.first().is_some_and(|p| p == "active"),
            Domain::And(v) | Domain::Or(v) => v.iter().any(Domain::mentions_active),
            Domain::Not(d) => d.mentions_active(),
            Domain::True | Domain::False => false,
        }
    }

    /// Check every field path against the schema before evaluating (so an invalid field fails
    /// even on an empty table, as the SQL translation would).
    pub fn validate(&self, db: &Db, model: &str) -> Result<(), OdooError> {
        match self {
            Domain::Leaf { path, op, value } => {
                let mut current = model.to_owned();
                for (i, seg) in path.iter().enumerate() {
                    let def = db.model(&current)?;
                    let field = def.field(seg).ok_or_else(|| {
                        OdooError::value_error(format!(
                            "Invalid field {current}.{seg} in leaf ({}, {}, {})",
                            py_repr(&Value::String(path.join("."))),
                            py_repr(&Value::String(op.clone())),
                            py_repr(value)
                        ))
                    })?;
                    if i + 1 < path.len() {
                        match field.ty {
                            FieldType::Many2one(co) => current = co.to_owned(),
                            _ => {
                                return Err(OdooError::value_error(format!(
                                    "Invalid field {current}.{seg} in leaf: {seg} is not relational"
                                )))
                            }
                        }
                    }
                }
                Ok(())
            }
            Domain::And(v) | Domain::Or(v) => v.iter().try_for_each(|d| d.validate(db, model)),
            Domain::Not(d) => d.validate(db, model),
            Domain::True | Domain::False => Ok(()),
        }
    }

    /// Evaluate against one stored record. Call [`Domain::validate`] first.
    pub fn matches(&self, db: &Db, model: &str, id: i64) -> bool {
        match self {
            Domain::True => true,
            Domain::False => false,
            Domain::And(v) => v.iter().all(|d| d.matches(db, model, id)),
            Domain::Or(v) => v.iter().any(|d| d.matches(db, model, id)),
            Domain::Not(d) => !d.matches(db, model, id),
            Domain::Leaf { path, op, value } => leaf_matches(db, model, id, path, op, value),
        }
    }
}

fn leaf_matches(db: &Db, model: &str, id: i64, path: &[String], op: &str, value: &Value) -> bool {
    // Walk the many2one chain.
    let mut model = model.to_owned();
    let mut id = id;
    for seg in &path[..path.len().saturating_sub(1)] {
        let Ok(def) = db.model(&model) else {
            return false;
        };
        let Some(FieldType::Many2one(co)) = def.field(seg).map(|f| f.ty) else {
            return false;
        };
        match db.m2o(&model, id, seg) {
            Some(next) => {
                model = co.to_owned();
                id = next;
            }
            None => return false,
        }
    }
    let Some(name) = path.last() else {
        return false;
    };
    let Ok(def) = db.model(&model) else {
        return false;
    };
    let Some(field) = def.field(name) else {
        return false;
    };
    let stored: std::borrow::Cow<'_, Value> = if name == "display_name" {
        std::borrow::Cow::Owned(Value::String(db.display_name(&model, id)))
    } else {
        std::borrow::Cow::Borrowed(db.value(&model, id, name))
    };
    match field.ty {
        FieldType::One2many(co, inverse) => ids_match(&db.one2many_ids(co, inverse, id), op, value),
        FieldType::Many2many(_) => ids_match(&crate::db::id_list(&stored), op, value),
        FieldType::Many2one(co) => m2o_matches(db, co, as_id(&stored), op, value),
        FieldType::Integer if name == "id" => scalar_matches(&Value::from(id), op, value, field.ty),
        ty => scalar_matches(&stored, op, value, ty),
    }
}

/// x2many leaves: `=`/`in` hold when any id is in the value (`= False`: no ids at all).
fn ids_match(ids: &[i64], op: &str, value: &Value) -> bool {
    let positive = match op {
        "=" | "in" | "!=" | "not in" => {
            if is_unset(value) {
                ids.is_empty()
            } else {
                as_list(value)
                    .iter()
                    .filter_map(as_id)
                    .any(|v| ids.contains(&v))
            }
        }
        _ => return false,
    };
    if op == "!=" || op == "not in" {
        !positive
    } else {
        positive
    }
}

fn is_unset(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn m2o_matches(db: &Db, comodel: &str, stored: Option<i64>, op: &str, value: &Value) -> bool {
    // A string on the right compares to the display name (name_search semantics).
    let by_name = |v: &Value| v.is_string();
    match op {
        "=" | "!=" if !by_name(value) => {
            let eq = match (stored, value) {
                (None, v) if is_unset(v) => true,
                (Some(s), Value::Number(n)) => n.as_i64() == Some(s),
                _ => false,
            };
            if op == "=" {
                eq
            } else {
                !eq
            }
        }
        "in" | "not in" if !as_list(value).iter().any(by_name) => {
            let list = as_list(value);
            let hit = list.iter().any(|v| match (stored, v) {
                (None, v) if is_unset(v) => true,
                (Some(s), Value::Number(n)) => n.as_i64() == Some(s),
                _ => false,
            });
            if op == "in" {
                hit
            } else {
                !hit
            }
        }
        "child_of" | "parent_of" => {
            let Some(s) = stored else { return false };
            let targets: Vec<i64> = as_list(value).iter().filter_map(Value::as_i64).collect();
            targets.iter().any(|t| {
                if op == "child_of" {
                    is_descendant(db, comodel, s, *t)
                } else {
                    is_descendant(db, comodel, *t, s)
                }
            })
        }
        _ => {
            let name = match stored {
                Some(s) => Value::String(db.display_name(comodel, s)),
                None => Value::Null,
            };
            let r = scalar_matches(&name, op, value, FieldType::Char);
            // A number with a comparison operator compares ids.
            if value.is_number() {
                return scalar_matches(
                    &stored.map(Value::from).unwrap_or(Value::Null),
                    op,
                    value,
                    FieldType::Integer,
                );
            }
            r
        }
    }
}

/// True when `child` is `ancestor` or below it (parent chain through `location_id`-like field).
fn is_descendant(db: &Db, model: &str, child: i64, ancestor: i64) -> bool {
    let parent_field = match model {
        "stock.location" => "location_id",
        _ => return child == ancestor,
    };
    let mut cur = Some(child);
    let mut guard = 0;
    while let Some(c) = cur {
        if c == ancestor {
            return true;
        }
        guard += 1;
        if guard > 1000 {
            return false;
        }
        cur = db.m2o(model, c, parent_field);
    }
    false
}

/// SQL LIKE with `%` and `_` wildcards (`\\` escapes the next character).
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    if case_insensitive {
        let t: Vec<char> = text.to_lowercase().chars().collect();
        let p: Vec<char> = pattern.to_lowercase().chars().collect();
        like_slices(&t, &p)
    } else if text.is_ascii() && pattern.is_ascii() {
        like_slices(text.as_bytes(), pattern.as_bytes())
    } else {
        let t: Vec<char> = text.chars().collect();
        let p: Vec<char> = pattern.chars().collect();
        like_slices(&t, &p)
    }
}

trait LikeChar: Copy + PartialEq {
    fn is(self, c: char) -> bool;
}

impl LikeChar for char {
    fn is(self, c: char) -> bool {
        self == c
    }
}

impl LikeChar for u8 {
    fn is(self, c: char) -> bool {
        char::from(self) == c
    }
}

/// Iterative wildcard matching with backtracking on `%`.
fn like_slices<C: LikeChar>(t: &[C], p: &[C]) -> bool {
    let (mut ti, mut pi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi + 1 < p.len() && p[pi].is('\\') && p[pi + 1] == t[ti] {
            ti += 1;
            pi += 2;
        } else if pi < p.len() && !p[pi].is('%') && (p[pi].is('_') || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi].is('%') {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi].is('%') {
        pi += 1;
    }
    pi == p.len()
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn values_equal(stored: &Value, v: &Value, ty: FieldType) -> bool {
    match ty {
        FieldType::Integer | FieldType::Float => {
            !is_unset(stored) && v.is_number() && as_f64(stored) == as_f64(v)
                || (ty == FieldType::Float && is_unset(stored) && v.is_number() && as_f64(v) == 0.0)
        }
        FieldType::Boolean => truthy(stored) == truthy(v),
        _ => match (stored, v) {
            (Value::String(a), Value::String(b)) => a == b,
            (a, b) if is_unset(b) => is_unset(a) || a.as_str() == Some(""),
            (Value::String(a), Value::Number(n)) => *a == n.to_string(),
            _ => false,
        },
    }
}

fn scalar_matches(stored: &Value, op: &str, value: &Value, ty: FieldType) -> bool {
    match op {
        "=" => {
            if ty == FieldType::Boolean {
                truthy(stored) == truthy(value)
            } else if is_unset(value) && !matches!(ty, FieldType::Boolean) {
                is_unset(stored) || stored.as_str() == Some("")
            } else {
                values_equal(stored, value, ty)
            }
        }
        "!=" => !scalar_matches(stored, "=", value, ty),
        "in" => as_list(value)
            .iter()
            .any(|v| scalar_matches(stored, "=", v, ty)),
        "not in" => !scalar_matches(stored, "in", value, ty),
        "<" | ">" | "<=" | ">=" => {
            if is_unset(stored) && !matches!(ty, FieldType::Float) {
                return false;
            }
            let ord = match (stored, value) {
                (Value::String(a), Value::String(b)) => a.as_str().partial_cmp(b.as_str()),
                _ => as_f64(stored).partial_cmp(&as_f64(value)),
            };
            let Some(ord) = ord else { return false };
            match op {
                "<" => ord.is_lt(),
                ">" => ord.is_gt(),
                "<=" => ord.is_le(),
                _ => ord.is_ge(),
            }
        }
        "like" | "ilike" | "not like" | "not ilike" => {
            let ci = op.contains("ilike");
            let negative = op.starts_with("not");
            if is_unset(value) || value.as_str() == Some("") {
                // `ilike ''` matches everything set; `not ilike ''` nothing (Odoo: TRUE/FALSE).
                return !negative;
            }
            let hit =
                !is_unset(stored) && like(&text_of(stored), &format!("%{}%", text_of(value)), ci);
            if negative {
                !hit
            } else {
                hit
            }
        }
        "=like" | "=ilike" => match (stored, value) {
            (Value::String(t), Value::String(p)) => like(t, p, op == "=ilike"),
            _ => !is_unset(stored) && like(&text_of(stored), &text_of(value), op == "=ilike"),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Record;
    use crate::version::OdooVersion;
    use serde_json::json;

    fn db_with_products() -> (Db, i64, i64) {
        let mut db = Db::empty(OdooVersion::V17);
        let mut a = Record::new();
        a.insert("name".into(), "Widget".into());
        a.insert("barcode".into(), "4006381333931".into());
        let a = db.insert("product.product", a).unwrap_or_default();
        let mut b = Record::new();
        b.insert("name".into(), "Gadget".into());
        let b = db.insert("product.product", b).unwrap_or_default();
        (db, a, b)
    }

    fn ids(db: &Db, d: Value) -> Vec<i64> {
        let d = parse(&d).unwrap_or(Domain::False);
        db.all_ids("product.product")
            .into_iter()
            .filter(|i| d.matches(db, "product.product", *i))
            .collect()
    }

    #[test]
    fn in_and_equality_select_by_barcode() {
        let (db, a, _) = db_with_products();
        assert_eq!(
            ids(&db, json!([["barcode", "in", ["4006381333931", "x"]]])),
            vec![a]
        );
        assert_eq!(
            ids(&db, json!([["barcode", "=", "4006381333931"]])),
            vec![a]
        );
    }

    #[test]
    fn equal_false_matches_unset_and_not_equal_matches_unset_too() {
        let (db, a, b) = db_with_products();
        assert_eq!(ids(&db, json!([["barcode", "=", false]])), vec![b]);
        assert_eq!(
            ids(&db, json!([["barcode", "!=", "4006381333931"]])),
            vec![b]
        );
        assert_eq!(ids(&db, json!([["barcode", "!=", false]])), vec![a]);
    }

    #[test]
    fn prefix_operators_combine_leaves() {
        let (db, a, b) = db_with_products();
        assert_eq!(
            ids(
                &db,
                json!(["|", ["name", "=", "Widget"], ["name", "=", "Gadget"]])
            ),
            vec![a, b]
        );
        assert_eq!(ids(&db, json!(["!", ["name", "ilike", "widg"]])), vec![b]);
        assert_eq!(
            ids(&db, json!([["name", "ilike", "g"], ["id", ">", a]])),
            vec![b]
        );
    }

    #[test]
    fn like_patterns_follow_sql_wildcards() {
        assert!(like(
            "scanbridge:WH01:1-5 (Administrator)",
            "scanbridge:WH01:1-5 (%",
            false
        ));
        assert!(!like("scanbridge:WH01:1-50", "scanbridge:WH01:1-5", false));
        assert!(like("ABC", "a_c", true));
    }

    #[test]
    fn a_dangling_operator_is_a_syntax_error() {
        assert!(parse(&json!(["|", ["name", "=", "x"]])).is_err());
        assert!(parse(&json!([["name", "is", "x"]])).is_err());
    }
}
