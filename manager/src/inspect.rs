//! `agora-manager inspect`: the answer of `stats` (`PROTOCOL.md`, section 4.2.1) as JSON or as
//! tables a person reads.
//!
//! Both forms are made from the decoded answer, so they show what the wire carries; a field
//! missing from it (an answer of an older manager, say) shows as `-` in the tables instead of
//! failing.

use std::fmt::Write as _;

use rmpv::Value;

/// The answer as pretty-printed JSON, field for field.
pub fn to_json(stats: &Value) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(stats)
}

/// Field `key` of map `v`.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The array in field `key` of `v` (empty when absent).
fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    field(v, key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Field `key` of `v` as text: a string as it is, a number in decimal, nil and absence as `-`.
fn text(v: &Value, key: &str) -> String {
    match field(v, key) {
        Some(Value::String(s)) => s.as_str().unwrap_or("?").to_owned(),
        Some(Value::Integer(n)) => n.to_string(),
        Some(Value::F64(x)) => seconds(*x),
        Some(Value::Boolean(b)) => if *b { "yes" } else { "no" }.to_owned(),
        _ => "-".to_owned(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    field(v, key).and_then(Value::as_u64).unwrap_or(0)
}

/// A duration in seconds, as a person reads it.
fn seconds(x: f64) -> String {
    if x < 60.0 {
        format!("{x:.1}s")
    } else if x < 3600.0 {
        format!("{}m{:02}s", (x / 60.0) as u64, (x % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (x / 3600.0) as u64,
            ((x % 3600.0) / 60.0) as u64
        )
    }
}

/// A connection id as the tables show it: its first 8 hex digits (the JSON has it whole).
fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// A connection named in field `key` of `v`, shortened.
fn conn(v: &Value, key: &str) -> String {
    match field(v, key).and_then(Value::as_str) {
        Some(id) => short(id),
        None => "-".to_owned(),
    }
}

/// An object as a connection's holds and waits name it: `kind name` or `kind #id`.
fn object_name(v: &Value) -> String {
    let kind = text(v, "kind");
    match field(v, "name").and_then(Value::as_str) {
        Some(name) => format!("{kind} {name}"),
        None => format!("{kind} #{}", text(v, "object")),
    }
}

/// Rows under a header, each column as wide as its widest cell, the last one not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// Groups the same words, in order of first appearance: `the lock x2, an item`.
fn tally<'a>(items: impl Iterator<Item = String> + 'a) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for item in items {
        match seen.iter_mut().find(|(s, _)| *s == item) {
            Some((_, n)) => *n += 1,
            None => seen.push((item, 1)),
        }
    }
    if seen.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = seen
        .into_iter()
        .map(|(s, n)| if n > 1 { format!("{s} x{n}") } else { s })
        .collect();
    parts.join(", ")
}

/// The answer as tables: the objects, the connections, and the totals.
pub fn render(stats: &Value) -> String {
    let mut out = String::new();
    let totals = field(stats, "totals").unwrap_or(&Value::Nil);
    let _ = writeln!(
        out,
        "manager run {}, store {}, up {}",
        text(stats, "run"),
        text(stats, "store"),
        text(stats, "uptime")
    );
    out.push('\n');

    let objects = list(stats, "objects");
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            let held = list(o, "held_by").iter().map(|h| {
                let mut who = conn(h, "connection");
                if let Some(thread) = field(h, "thread").and_then(Value::as_u64) {
                    let _ = write!(who, " thread {thread}");
                }
                if number(h, "count") > 1 {
                    let _ = write!(who, " x{}", number(h, "count"));
                }
                if field(h, "owned").and_then(Value::as_bool) == Some(false) {
                    who.push_str(" (unowned)");
                }
                who
            });
            vec![
                text(o, "id"),
                text(o, "name"),
                text(o, "kind"),
                text(o, "size"),
                text(o, "holders"),
                tally(held),
                text(o, "parked"),
                tally(list(o, "waiting").iter().map(|w| text(w, "for"))),
            ]
        })
        .collect();
    let _ = writeln!(out, "OBJECTS ({})", objects.len());
    table(
        &mut out,
        &[
            "ID",
            "NAME",
            "KIND",
            "SIZE",
            "REFS",
            "HELD BY",
            "PARKED",
            "WAITING FOR",
        ],
        &rows,
    );
    out.push('\n');

    let connections = list(stats, "connections");
    let rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| {
            let holds = list(c, "holds").iter().map(|h| {
                let count = number(h, "count");
                let name = object_name(h);
                if count > 1 {
                    format!("{name} x{count}")
                } else {
                    name
                }
            });
            let waits = list(c, "waits")
                .iter()
                .map(|w| format!("{} ({})", object_name(w), text(w, "for")));
            vec![
                conn(c, "id"),
                text(c, "peer"),
                text(c, "pid"),
                text(c, "seconds"),
                text(c, "calls"),
                text(c, "errors"),
                tally(holds),
                tally(waits),
            ]
        })
        .collect();
    let _ = writeln!(out, "CONNECTIONS ({})", connections.len());
    table(
        &mut out,
        &[
            "ID",
            "PEER",
            "PID",
            "AGE",
            "CALLS",
            "ERRORS",
            "HOLDS",
            "WAITS FOR",
        ],
        &rows,
    );
    out.push('\n');

    let _ = writeln!(
        out,
        "TOTAL  {} objects, {} connections, {} calls parked, {} held; {} calls ({} errors) \
         and {} connections since the start",
        text(totals, "objects"),
        text(totals, "connections"),
        text(totals, "parked"),
        text(totals, "held"),
        text(totals, "calls"),
        text(totals, "errors"),
        text(totals, "accepted"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(0.04), "0.0s");
        assert_eq!(seconds(12.34), "12.3s");
        assert_eq!(seconds(61.0), "1m01s");
        assert_eq!(seconds(7322.0), "2h02m");
    }

    #[test]
    fn the_same_words_are_counted_once() {
        let items = ["a", "b", "a", "a"].iter().map(|s| s.to_string());
        assert_eq!(tally(items), "a x3, b");
        assert_eq!(tally(std::iter::empty()), "-");
    }

    #[test]
    fn columns_line_up_and_an_empty_answer_renders() {
        let mut out = String::new();
        let rows = vec![vec!["1".to_owned(), "long name".to_owned(), "x".to_owned()]];
        table(&mut out, &["ID", "NAME", "LAST"], &rows);
        assert_eq!(out, "ID  NAME       LAST\n1   long name  x\n");
        let empty = render(&Value::Map(vec![]));
        assert!(empty.contains("OBJECTS (0)") && empty.contains("CONNECTIONS (0)"));
    }
}
