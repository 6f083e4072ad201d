//! `PROTOCOL.md` against the method table (`agora_proto::methods`): the document's method tables
//! name exactly the table's methods, with the same params, and the document's list of methods
//! that may be parked is exactly the table's.
//!
//! How the document is read: a method table is one whose header's first cell is `method`. Its
//! rows name methods in backticks in their first cell, in full (`dict.get`) or bare (`put`); a
//! bare name belongs to every kind the section's heading names in backticks, or to no kind
//! when the heading names none (sections 2 and 4.2). Fenced code blocks are skipped.

use std::collections::BTreeSet;
use std::path::Path;

use agora_proto::methods::{self, MethodSpec, MAY_WAIT, TABLE};
use agora_proto::Kind;

/// One method as a row of `PROTOCOL.md` documents it.
struct Documented {
    kind: Option<Kind>,
    name: String,
    /// The row's params cell, as written.
    params: String,
    /// The line of the row, 1-based, for messages.
    line: usize,
}

impl Documented {
    fn wire(&self) -> String {
        match self.kind {
            Some(kind) => format!("{kind}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn protocol_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text between backticks.
fn spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose(doc: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// Every row of every method table, one entry per method (a row may name several, and a bare
/// name under a heading of several kinds stands for one method of each).
fn documented_methods(doc: &str) -> Vec<Documented> {
    let mut found = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    let mut in_method_table = false;
    for (line_no, line) in prose(doc) {
        if line.starts_with('#') {
            kinds = spans(line).filter_map(Kind::parse).collect();
            in_method_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_method_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "method" {
            in_method_table = true;
            continue;
        }
        if !in_method_table || cells[0].starts_with("---") {
            continue;
        }
        let params = cells.get(1).copied().unwrap_or_default();
        let mut add = |kind, name: &str| {
            found.push(Documented {
                kind,
                name: name.to_owned(),
                params: params.to_owned(),
                line: line_no,
            })
        };
        for name in spans(cells[0]) {
            match name.split_once('.') {
                Some((prefix, method)) => {
                    let kind = Kind::parse(prefix)
                        .unwrap_or_else(|| panic!("line {line_no}: {prefix:?} is no kind"));
                    assert!(
                        kinds.contains(&kind),
                        "line {line_no}: {name} is documented under a heading of {kinds:?}"
                    );
                    add(Some(kind), method);
                }
                None if kinds.is_empty() => add(None, name),
                None => kinds.iter().for_each(|k| add(Some(*k), name)),
            }
        }
    }
    found
}

/// The bracketed forms of a params text (`[id, key]`, `[id, array of [key, value]]`), with
/// backticks and runs of spaces removed, in order.
fn forms(text: &str) -> Vec<String> {
    let text = text.replace('`', "");
    let mut found = Vec::new();
    let (mut depth, mut current) = (0usize, String::new());
    for c in text.chars() {
        if c == '[' {
            depth += 1;
        }
        if depth > 0 {
            current.push(c);
        }
        if c == ']' && depth > 0 {
            depth -= 1;
            if depth == 0 {
                found.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                current.clear();
            }
        }
    }
    assert_eq!(depth, 0, "unbalanced brackets in {text:?}");
    found
}

fn spec_of(d: &Documented) -> &'static MethodSpec {
    methods::find(d.kind, &d.name)
        .unwrap_or_else(|| panic!("line {}: {} is not in the method table", d.line, d.wire()))
}

#[test]
fn protocol_md_documents_exactly_the_methods_of_the_table() {
    let documented = documented_methods(&protocol_md());
    let mut in_doc = BTreeSet::new();
    for d in &documented {
        assert!(
            in_doc.insert(d.wire()),
            "line {}: {} is documented twice",
            d.line,
            d.wire()
        );
    }
    let in_table: BTreeSet<String> = TABLE.iter().map(|m| m.wire.to_owned()).collect();
    let undocumented: Vec<_> = in_table.difference(&in_doc).collect();
    let untabled: Vec<_> = in_doc.difference(&in_table).collect();
    assert!(
        undocumented.is_empty() && untabled.is_empty(),
        "in the table but not in PROTOCOL.md: {undocumented:?}; \
         in PROTOCOL.md but not in the table: {untabled:?}"
    );
}

#[test]
fn protocol_md_documents_the_params_of_the_table() {
    for d in documented_methods(&protocol_md()) {
        let spec = spec_of(&d);
        let mut documented = forms(&d.params);
        if documented.is_empty() {
            // "as `lock` / `rlock`": the params of the same method of the kind referred to.
            let other = spans(&d.params)
                .find_map(Kind::parse)
                .unwrap_or_else(|| panic!("line {}: no params for {}", d.line, d.wire()));
            let theirs = methods::find(Some(other), &d.name)
                .unwrap_or_else(|| panic!("line {}: {other} has no {}", d.line, d.name));
            documented = forms(theirs.params);
        }
        assert_eq!(
            forms(spec.params),
            documented,
            "line {}: the params of {}",
            d.line,
            d.wire()
        );
    }
}

/// The methods named in the bullet of section 4.1 that says which methods may be parked.
fn documented_as_parking(doc: &str) -> BTreeSet<String> {
    let lines = prose(doc);
    let start = lines
        .iter()
        .position(|(_, l)| l.contains("**Which methods may be parked**"))
        .expect("PROTOCOL.md says which methods may be parked");
    let mut names = BTreeSet::new();
    for (i, (_, line)) in lines[start..].iter().enumerate() {
        if i > 0 && (line.trim().is_empty() || line.starts_with("- ")) {
            break;
        }
        names.extend(spans(line).map(str::to_owned));
    }
    names
}

#[test]
fn protocol_md_lists_as_parked_exactly_the_methods_the_table_says_park() {
    let documented = documented_as_parking(&protocol_md());
    for wire in &documented {
        let spec = TABLE.iter().find(|m| m.wire == wire);
        let spec = spec.unwrap_or_else(|| panic!("{wire} may be parked but is not in the table"));
        assert!(
            spec.parks,
            "PROTOCOL.md says {wire} may be parked; the table does not"
        );
    }
    let parking: BTreeSet<String> = TABLE
        .iter()
        .filter(|m| m.parks)
        .map(|m| m.wire.to_owned())
        .collect();
    let unlisted: Vec<_> = parking.difference(&documented).collect();
    assert!(
        unlisted.is_empty(),
        "the table says these park but PROTOCOL.md does not list them: {unlisted:?}"
    );
    let may_wait: BTreeSet<String> = MAY_WAIT.iter().map(|m| m.to_string()).collect();
    assert_eq!(may_wait, documented, "MAY_WAIT and PROTOCOL.md disagree");
}

#[test]
fn the_readers_of_the_document_find_what_they_look_for() {
    // Guards the tests above against passing on a parse that found nothing.
    let sample = "## 2. Session: `hello`\n\n| method | params | result |\n|---|---|---|\n\
                  | `ping` | `[]` | `\"pong\"` |\n\n### 4.8 `queue` and `joinable_queue`\n\n\
                  | method | params | result |\n|---|---|---|\n| `put` | `[id, item]` | nil |\n\
                  | `joinable_queue.join` | `[id]` or `[id, timeout]` | bool |\n\n\
                  | kind | args |\n|---|---|\n| `dict` | `[]` |\n```\n# not a heading\n```\n";
    let found: Vec<(String, String)> = documented_methods(sample)
        .iter()
        .map(|d| (d.wire(), d.params.clone()))
        .collect();
    let expected = [
        ("ping", "`[]`"),
        ("queue.put", "`[id, item]`"),
        ("joinable_queue.put", "`[id, item]`"),
        ("joinable_queue.join", "`[id]` or `[id, timeout]`"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(w, p)| (w.to_string(), p.to_string()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(
        forms("`[id, map]` or `[id, array of [key, value]]`"),
        ["[id, map]", "[id, array of [key, value]]"]
    );
    assert_eq!(forms("`[digest]`: bin, HMAC(key = k)"), ["[digest]"]);
    let doc = protocol_md();
    assert!(documented_methods(&doc).len() >= TABLE.len() / 2);
    assert!(documented_as_parking(&doc).len() >= 10);
}
