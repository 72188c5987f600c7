//! ProtoStream annotations: `@Name` or `@Name(attr=value, ...)` lines in the documentation
//! comment of a message, enum or field (`/** @TypeId(65606) */`). They carry the type ids that
//! WrappedMessage uses and the index definition Ickle queries are checked against.

use std::collections::BTreeMap;

/// One annotation as written: its name and its attributes (`@Basic(sortable=true)` gives
/// `("Basic", [("sortable", "true")])`; a bare value such as `@TypeId(5)` is attribute `value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

impl Annotation {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.attribute(name).map(|v| {
            let v = v.trim_matches('"');
            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes")
        })
    }
}

/// Extracts the annotations of a documentation comment (the text between `/**` and `*/`, as
/// protox keeps it). Text that is not an annotation is ignored; a malformed annotation is
/// ignored rather than failing the schema, as ProtoStream ignores unknown ones.
pub fn parse_annotations(comment: &str) -> Vec<Annotation> {
    let mut out = Vec::new();
    let chars: Vec<char> = comment.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // An annotation starts a line (after the comment's `*` decoration) or follows blanks.
        let at_start = i == 0
            || chars[..i]
                .iter()
                .rev()
                .take_while(|c| **c != '\n')
                .all(|c| c.is_whitespace() || *c == '*');
        if chars[i] != '@' || !at_start {
            i += 1;
            continue;
        }
        let name_start = i + 1;
        let mut j = name_start;
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
        {
            j += 1;
        }
        if j == name_start {
            i += 1;
            continue;
        }
        let name: String = chars[name_start..j].iter().collect();
        let mut k = j;
        while k < chars.len() && (chars[k] == ' ' || chars[k] == '\t') {
            k += 1;
        }
        let mut attributes = Vec::new();
        if k < chars.len() && chars[k] == '(' {
            match closing_paren(&chars, k) {
                Some(end) => {
                    let inner: String = chars[k + 1..end].iter().collect();
                    attributes = parse_attributes(&inner);
                    j = end + 1;
                }
                None => {
                    i = j;
                    continue;
                }
            }
        }
        out.push(Annotation { name, attributes });
        i = j;
    }
    out
}

fn closing_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut in_string = false;
    for (idx, c) in chars.iter().enumerate().skip(open) {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(idx);
                }
            }
            _ => {}
        }
    }
    None
}

/// `a=1, b="x, y", c=Foo.BAR` or a single bare value.
fn parse_attributes(inner: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    let mut in_string = false;
    for c in inner.chars() {
        match c {
            '"' => {
                in_string = !in_string;
                current.push(c);
            }
            '(' | '{' if !in_string => {
                depth += 1;
                current.push(c);
            }
            ')' | '}' if !in_string => {
                depth -= 1;
                current.push(c);
            }
            ',' if !in_string && depth == 0 => parts.push(std::mem::take(&mut current)),
            // Comment decoration inside a multi-line annotation.
            '\n' | '*' if !in_string => current.push(' '),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), unquote(v.trim())),
            None => ("value".to_string(), unquote(&p)),
        })
        .collect()
}

fn unquote(v: &str) -> String {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// How a field is indexed (Infinispan 14+ `@Basic`, `@Keyword`, `@Text`, `@Decimal`,
/// `@Embedded`; the legacy `@Field` / `@IndexedField` / `@SortableField` are read as `Basic`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Basic,
    Keyword,
    Text,
    Decimal,
    Embedded,
}

/// The index definition of one field, with Infinispan's defaults for attributes not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIndex {
    pub kind: IndexKind,
    pub searchable: bool,
    pub projectable: bool,
    pub sortable: bool,
    pub aggregable: bool,
    /// `indexNullAs`, when given.
    pub index_null_as: Option<String>,
}

/// The annotations of one field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldAnnotations {
    pub annotations: Vec<Annotation>,
    /// `None` when the field is not indexed.
    pub index: Option<FieldIndex>,
}

/// The annotations of one message type and of its fields (by field name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageAnnotations {
    pub annotations: Vec<Annotation>,
    /// `@TypeId(n)`.
    pub type_id: Option<u32>,
    /// `@Indexed` (and not `@Indexed(false)` / `@Indexed(enabled=false)`).
    pub indexed: bool,
    pub fields: BTreeMap<String, FieldAnnotations>,
}

impl MessageAnnotations {
    /// Fields with an index definition, in name order.
    pub fn indexed_fields(&self) -> impl Iterator<Item = (&str, &FieldIndex)> {
        self.fields
            .iter()
            .filter_map(|(n, f)| f.index.as_ref().map(|i| (n.as_str(), i)))
    }
}

/// `@TypeId(n)` among `annotations`.
pub fn type_id(annotations: &[Annotation]) -> Option<u32> {
    annotations
        .iter()
        .find(|a| a.name == "TypeId")
        .and_then(|a| a.attribute("value"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn is_indexed(annotations: &[Annotation]) -> bool {
    annotations.iter().any(|a| {
        a.name == "Indexed"
            && a.flag("value").unwrap_or(true)
            && a.flag("enabled").unwrap_or(true)
            && a.flag("index").unwrap_or(true)
    })
}

/// The index definition the field annotations declare, if any.
pub fn field_index(annotations: &[Annotation]) -> Option<FieldIndex> {
    for a in annotations {
        let kind = match a.name.as_str() {
            "Basic" => IndexKind::Basic,
            "Keyword" => IndexKind::Keyword,
            "Text" => IndexKind::Text,
            "Decimal" => IndexKind::Decimal,
            "Embedded" => IndexKind::Embedded,
            "Field" | "IndexedField" | "SortableField" => IndexKind::Basic,
            _ => continue,
        };
        let legacy = matches!(a.name.as_str(), "Field" | "IndexedField" | "SortableField");
        if legacy {
            // Protostream 4: @Field(index=Index.NO) / @IndexedField(index=false) mean "not indexed".
            let index = a.attribute("index").map(|v| {
                let v = v.trim();
                !(v.eq_ignore_ascii_case("false") || v.ends_with(".NO") || v == "NO")
            });
            if index == Some(false) {
                continue;
            }
            let store = a.attribute("store").map(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("true") || v.ends_with(".YES") || v == "YES"
            });
            return Some(FieldIndex {
                kind,
                searchable: true,
                projectable: store.unwrap_or(a.name == "IndexedField"),
                sortable: a.name == "SortableField",
                aggregable: false,
                index_null_as: a.attribute("indexNullAs").map(str::to_string),
            });
        }
        return Some(FieldIndex {
            kind,
            searchable: a.flag("searchable").unwrap_or(true),
            projectable: a.flag("projectable").unwrap_or(false),
            // Text fields cannot be sorted on (they are tokenized).
            sortable: kind != IndexKind::Text && a.flag("sortable").unwrap_or(false),
            aggregable: kind != IndexKind::Text && a.flag("aggregable").unwrap_or(false),
            index_null_as: a.attribute("indexNullAs").map(str::to_string),
        });
    }
    // @SortableField may accompany another annotation in protostream 4.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_of_a_generated_comment() {
        let a = parse_annotations("*\n * @Indexed\n * @TypeId(65605)\n ");
        assert_eq!(a.len(), 2);
        assert!(is_indexed(&a));
        assert_eq!(type_id(&a), Some(65605));
    }

    #[test]
    fn basic_with_attributes_and_defaults() {
        let a = parse_annotations("*\n    * @Basic(projectable=true, sortable=true)\n    ");
        let i = field_index(&a).unwrap();
        assert_eq!(i.kind, IndexKind::Basic);
        assert!(i.searchable && i.projectable && i.sortable && !i.aggregable);
        let plain = field_index(&parse_annotations("* @Basic\n")).unwrap();
        assert!(plain.searchable && !plain.projectable && !plain.sortable);
        let text = field_index(&parse_annotations(
            "@Text(sortable=true, analyzer=\"en, x\")",
        ))
        .unwrap();
        assert_eq!(text.kind, IndexKind::Text);
        assert!(!text.sortable);
        assert_eq!(
            parse_annotations("@Text(analyzer=\"en, x\")")[0].attribute("analyzer"),
            Some("en, x")
        );
    }

    #[test]
    fn not_annotations() {
        // An e-mail address or a mid-sentence @ is not an annotation; an unclosed one is dropped.
        assert!(parse_annotations("* write to a@b.c\n").is_empty());
        assert!(parse_annotations("* @Basic(sortable=true").is_empty());
        assert!(!is_indexed(&parse_annotations("@Indexed(false)")));
        assert!(!is_indexed(&parse_annotations("@Indexed(enabled=false)")));
        assert_eq!(type_id(&parse_annotations("@TypeId(nope)")), None);
        assert!(field_index(&parse_annotations("@IndexedField(index=false)")).is_none());
    }
}
