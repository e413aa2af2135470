//! Finds where a key is written in a TOML file, so errors can name the line.
//!
//! figment reports the key path of an error but not its position, so the file is parsed once more
//! with toml_edit, which keeps spans.

use toml_edit::{Document, Item, Table, TableLike, Value};

/// The 1-based line of `path` in `text`, or of its deepest ancestor that is written in the file
/// (a missing required key points at its table). `None` when nothing of the path is in the file.
pub(super) fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let doc = Document::parse(text).ok()?;
    let mut offset = None;
    let mut here = Node::Item(doc.as_item());
    for segment in path {
        let Some((next, start)) = step(here, segment) else {
            break;
        };
        offset = start.or(offset);
        here = next;
    }
    offset.map(|at| line_at(text, at))
}

/// The 1-based line holding byte `offset`.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A position in the parsed document: arrays of tables hand out tables, arrays hand out values.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

/// Steps to the child named `segment` (a key, or an index into an array), returning it and the
/// byte offset where it is written.
fn step<'a>(here: Node<'a>, segment: &str) -> Option<(Node<'a>, Option<usize>)> {
    if let Ok(index) = segment.parse::<usize>() {
        return match here {
            Node::Item(Item::ArrayOfTables(tables)) => {
                let table = tables.get(index)?;
                Some((Node::Table(table), table.span().map(|s| s.start)))
            }
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                let value = array.get(index)?;
                Some((Node::Value(value), value.span().map(|s| s.start)))
            }
            _ => None,
        };
    }
    let table: &dyn TableLike = match here {
        Node::Item(item) => item.as_table_like()?,
        Node::Table(table) => table,
        Node::Value(value) => value.as_inline_table()?,
    };
    let (key, item) = table.get_key_value(segment)?;
    Some((
        Node::Item(item),
        key.span().map(|s| s.start).or_else(|| span_of(item)),
    ))
}

fn span_of(item: &Item) -> Option<usize> {
    match item {
        Item::Table(t) => t.span().map(|s| s.start),
        Item::ArrayOfTables(a) => a.span().map(|s| s.start),
        Item::Value(v) => v.span().map(|s| s.start),
        Item::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# comment
[edge]
workers = 4

[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/api"
upstream = "api"

[upstreams.app]
servers = ["127.0.0.1:3000", { addr = "127.0.0.1:3001", weight = 2 }]
"#;

    fn at(path: &[&str]) -> Option<usize> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        line_of(TEXT, &path)
    }

    #[test]
    fn finds_plain_keys() {
        assert_eq!(at(&["edge", "workers"]), Some(3));
        assert_eq!(at(&["edge"]), Some(2));
    }

    #[test]
    fn finds_keys_in_arrays_of_tables() {
        assert_eq!(at(&["routes", "1", "upstream"]), Some(11));
        assert_eq!(at(&["routes", "0", "path"]), Some(6));
    }

    #[test]
    fn finds_inline_tables_in_arrays() {
        assert_eq!(
            at(&["upstreams", "app", "servers", "1", "weight"]),
            Some(14)
        );
    }

    #[test]
    fn falls_back_to_the_deepest_written_ancestor() {
        assert_eq!(at(&["edge", "tls", "cert"]), Some(2));
        assert_eq!(at(&["admin", "listen"]), None);
    }
}
