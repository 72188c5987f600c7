//! Reads the cache configuration clients send with `@@cache@getorcreate` (Infinispan XML, JSON or
//! YAML). ferrod needs only the storage media types and the default expiration from it; the rest
//! (clustering mode, owners, transactions, indexing) has no meaning here and is kept verbatim.

use ferrod_codec::media::APPLICATION_UNKNOWN;
use ferrod_store::CacheDef;

use crate::config::media_type_is_known;

/// Builds the definition of cache `name` from its configuration text.
pub fn parse(name: &str, configuration: &str, template: &str) -> Result<CacheDef, String> {
    if name.is_empty() {
        return Err("the cache name must not be empty".into());
    }
    let text = configuration.trim();
    let mut def = CacheDef {
        name: name.to_string(),
        key_media_type: APPLICATION_UNKNOWN.to_string(),
        value_media_type: APPLICATION_UNKNOWN.to_string(),
        default_lifespan_ms: -1,
        default_max_idle_ms: -1,
        configuration: if text.is_empty() {
            template.to_string()
        } else {
            text.to_string()
        },
    };
    if text.is_empty() {
        return Ok(def);
    }
    let encoding = section(text, "encoding");
    if let Some(mt) = encoding.and_then(|s| attribute(s, "media-type")) {
        def.key_media_type = mt.clone();
        def.value_media_type = mt;
    }
    if let Some(enc) = encoding {
        if let Some(mt) = section(enc, "key").and_then(|s| attribute(s, "media-type")) {
            def.key_media_type = mt;
        }
        if let Some(mt) = section(enc, "value").and_then(|s| attribute(s, "media-type")) {
            def.value_media_type = mt;
        }
    }
    for mt in [&def.key_media_type, &def.value_media_type] {
        if !media_type_is_known(mt) {
            return Err(format!("'{mt}' is not a media type"));
        }
    }
    if let Some(exp) = section(text, "expiration") {
        if let Some(v) = attribute(exp, "lifespan") {
            def.default_lifespan_ms =
                millis(&v).ok_or_else(|| format!("lifespan '{v}' is not a number of ms"))?;
        }
        if let Some(v) = attribute(exp, "max-idle").or_else(|| attribute(exp, "maxIdle")) {
            def.default_max_idle_ms =
                millis(&v).ok_or_else(|| format!("max-idle '{v}' is not a number of ms"))?;
        }
    }
    Ok(def)
}

fn millis(v: &str) -> Option<i64> {
    let n: i64 = v.trim().trim_end_matches("ms").parse().ok()?;
    Some(if n <= 0 { -1 } else { n })
}

/// The text from the first `<name` (XML) or `"name"` / `name:` (JSON/YAML) onwards.
fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    for pat in [
        format!("<{name}"),
        format!("\"{name}\""),
        format!("{name}:"),
    ] {
        if let Some(i) = text.find(&pat) {
            return Some(&text[i + pat.len()..]);
        }
    }
    None
}

/// An attribute value in XML (`name="v"`), JSON (`"name": "v"` or a number) or YAML (`name: v`),
/// looked up within the element/object that starts `text`.
fn attribute(text: &str, name: &str) -> Option<String> {
    // Only within the current XML element or JSON object, so a later element's attribute is
    // never taken for this one's.
    let scope = &text[..text.find(['>', '}']).map(|i| i + 1).unwrap_or(text.len())];
    let xml = format!("{name}=\"");
    if let Some(i) = scope.find(&xml) {
        let rest = &scope[i + xml.len()..];
        return rest.find('"').map(|e| rest[..e].to_string());
    }
    for pat in [format!("\"{name}\""), format!("{name}:")] {
        if let Some(i) = scope.find(&pat) {
            let rest = scope[i + pat.len()..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start();
            let rest = rest.trim_start_matches('"');
            let end = rest.find(['"', ',', '}', '\n']).unwrap_or(rest.len());
            return Some(rest[..end].trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloak_xml() {
        let xml = r#"<distributed-cache name="sessions" mode="SYNC" owners="2" statistics="true"><encoding media-type="application/x-protostream"/><expiration lifespan="-1" max-idle="-1" interval="60000"/><indexing enabled="true"/></distributed-cache>"#;
        let d = parse("sessions", xml, "").unwrap();
        assert_eq!(d.key_media_type, "application/x-protostream");
        assert_eq!(d.value_media_type, "application/x-protostream");
        assert_eq!(d.default_lifespan_ms, -1);
    }

    #[test]
    fn json_with_expiration_and_split_encoding() {
        let json = r#"{"distributed-cache":{"encoding":{"key":{"media-type":"text/plain"},"value":{"media-type":"application/json"}},"expiration":{"lifespan":5000,"max-idle":"1000"}}}"#;
        let d = parse("c", json, "").unwrap();
        assert_eq!(d.key_media_type, "text/plain");
        assert_eq!(d.value_media_type, "application/json");
        assert_eq!(d.default_lifespan_ms, 5000);
        assert_eq!(d.default_max_idle_ms, 1000);
    }

    #[test]
    fn empty_configuration_is_a_raw_cache() {
        let d = parse("x", "", "org.infinispan.DIST_SYNC").unwrap();
        assert_eq!(d.key_media_type, APPLICATION_UNKNOWN);
        assert!(parse("", "", "").is_err());
        assert!(parse(
            "x",
            r#"<local-cache><encoding media-type="garbage"/></local-cache>"#,
            ""
        )
        .is_err());
    }
}
