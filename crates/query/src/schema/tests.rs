use super::*;

const KC_26_4: &str = include_str!("../../tests/fixtures/KeycloakModelSchema-26.4.7.proto");
const KC_26_7: &str = include_str!("../../tests/fixtures/KeycloakModelSchema-26.7.3.proto");
const KC: &str = "KeycloakModelSchema.proto";

#[test]
fn builtins_resolve_and_carry_type_ids() {
    let r = SchemaRegistry::new();
    let s = r.schemas();
    assert!(s.errors().is_empty());
    assert!(s.message(WRAPPED_MESSAGE).is_some());
    assert_eq!(s.type_id(WRAPPED_MESSAGE), Some(0));
    assert_eq!(
        s.message_by_type_id(4400).unwrap().full_name(),
        "org.infinispan.query.remote.client.QueryRequest"
    );
    assert_eq!(
        s.message_by_type_id(4401).unwrap().full_name(),
        "org.infinispan.query.remote.client.QueryResponse"
    );
    assert_eq!(
        s.message_by_type_id(1005).unwrap().full_name(),
        "org.infinispan.protostream.commons.UUID"
    );
    assert!(s
        .message("org.infinispan.protostream.commons.ArrayList")
        .is_some());
}

#[test]
fn keycloak_schema_resolves_with_its_index_annotations() {
    for text in [KC_26_4, KC_26_7] {
        let mut r = SchemaRegistry::new();
        assert!(r.put_file(KC, text));
        let s = r.schemas();
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        assert_eq!(s.errors_summary(), None);

        let us = s.message_by_type_id(65605).unwrap();
        assert_eq!(us.full_name(), "keycloak.RemoteUserSessionEntity");
        let ann = s.annotations("keycloak.RemoteUserSessionEntity").unwrap();
        assert!(ann.indexed);
        assert_eq!(ann.type_id, Some(65605));
        let indexed: Vec<&str> = ann.indexed_fields().map(|(n, _)| n).collect();
        assert_eq!(
            indexed,
            [
                "brokerSessionId",
                "brokerUserId",
                "realmId",
                "userId",
                "userSessionId"
            ]
        );
        let id = s
            .field_index("keycloak.RemoteUserSessionEntity", "userSessionId")
            .unwrap();
        assert!(id.sortable && !id.projectable);
        assert!(s
            .field_index("keycloak.RemoteUserSessionEntity", "ipAddress")
            .is_none());

        let cs = s
            .field_index(
                "keycloak.RemoteAuthenticatedClientSessionEntity",
                "clientId",
            )
            .unwrap();
        assert!(cs.projectable && cs.sortable);
        assert_eq!(
            s.message_by_type_id(65607).unwrap().full_name(),
            "keycloak.RemoteAuthenticatedClientSessionEntity"
        );
        assert_eq!(
            s.message_by_type_id(65606).unwrap().full_name(),
            "keycloak.ClientSessionKey"
        );
        assert!(
            s.annotations("keycloak.LoginFailureEntity")
                .unwrap()
                .indexed
        );
        assert!(
            s.annotations("keycloak.RootAuthenticationSessionEntity")
                .unwrap()
                .indexed
        );
        // Enums have type ids too (UserSessionModel.State = 65536).
        assert!(matches!(s.type_by_id(65536), Some(TypeDescriptor::Enum(_))));
        // Same text again: nothing to do, same snapshot.
        let generation = s.generation();
        assert!(!r.put_file(KC, text));
        assert_eq!(r.schemas().generation(), generation);
        assert!(r.remove_file(KC));
        assert!(r.schemas().generation() > generation);
    }
}

#[test]
fn syntax_error_is_reported_for_that_file_only() {
    let mut r = SchemaRegistry::new();
    r.put_file(KC, KC_26_4);
    r.put_file(
        "broken.proto",
        "package x;\nmessage A { optional string a = ; }",
    );
    let s = r.schemas();
    let e = s.file_error("broken.proto").expect("an error");
    assert!(e.starts_with("Syntax error in broken.proto at 2:"), "{e}");
    assert_eq!(s.errors().len(), 1);
    assert_eq!(s.errors_summary().as_deref(), Some("broken.proto"));
    // The good schema still resolves.
    assert!(s.message("keycloak.RemoteUserSessionEntity").is_some());
    // Fixing it clears the error.
    r.put_file(
        "broken.proto",
        "package x;\nmessage A { optional string a = 1; }",
    );
    assert!(r.schemas().errors().is_empty());
    assert!(r.schemas().message("x.A").is_some());
}

#[test]
fn unknown_type_and_unknown_import() {
    let mut r = SchemaRegistry::new();
    r.put_file("a.proto", "package a; message A { optional Nope n = 1; }");
    r.put_file(
        "b.proto",
        "import \"missing.proto\"; package b; message B {}",
    );
    let s = r.schemas();
    assert!(
        s.file_error("a.proto").unwrap().contains("Nope"),
        "{:?}",
        s.errors()
    );
    assert_eq!(
        s.file_error("b.proto"),
        Some("Import 'missing.proto' not found")
    );
    assert_eq!(s.errors_summary().as_deref(), Some("a.proto\nb.proto"));
    assert!(s.message("a.A").is_none() && s.message("b.B").is_none());
}

#[test]
fn dependents_of_a_broken_file_fail_and_recover() {
    let mut r = SchemaRegistry::new();
    r.put_file(
        "base.proto",
        "package base; message Base { optional string s = 1; }",
    );
    r.put_file(
        "user.proto",
        "import \"base.proto\"; package user; message U { optional base.Base b = 1; }",
    );
    assert!(r.schemas().errors().is_empty());
    assert!(r.schemas().message("user.U").is_some());

    r.put_file(
        "base.proto",
        "package base; message Base { optional string s = 1 }",
    );
    let s = r.schemas();
    assert_eq!(
        s.file_error("user.proto"),
        Some("File user.proto imports a file (base.proto) that has errors")
    );
    assert_eq!(
        s.errors_summary().as_deref(),
        Some("base.proto\nuser.proto")
    );

    r.remove_file("base.proto");
    assert_eq!(
        r.schemas().file_error("user.proto"),
        Some("Import 'base.proto' not found")
    );
    assert_eq!(r.schemas().file_error("base.proto"), None);

    r.put_file(
        "base.proto",
        "package base; message Base { optional string s = 1; }",
    );
    assert!(r.schemas().errors().is_empty());
    assert!(r.schemas().message("user.U").is_some());

    r.clear();
    assert!(r.schemas().message("base.Base").is_none());
    assert!(r.schemas().message(WRAPPED_MESSAGE).is_some());
}

#[test]
fn cycles_duplicates_and_clashes() {
    let mut r = SchemaRegistry::new();
    r.put_file("c1.proto", "import \"c2.proto\"; package c1; message C1 {}");
    r.put_file("c2.proto", "import \"c1.proto\"; package c2; message C2 {}");
    let s = r.schemas();
    assert!(
        s.file_error("c2.proto")
            .unwrap()
            .starts_with("Cyclic import"),
        "{:?}",
        s.errors()
    );
    assert!(s.file_error("c1.proto").is_some());

    let mut r = SchemaRegistry::new();
    r.put_file(
        "d.proto",
        "import \"common-java-types.proto\"; import \"common-java-types.proto\"; message D {}",
    );
    assert_eq!(
        r.schemas().file_error("d.proto"),
        Some("Duplicate import : common-java-types.proto")
    );

    // Two files defining the same type: the second (by name) fails, the first keeps working.
    let mut r = SchemaRegistry::new();
    r.put_file("e1.proto", "package e; message E {}");
    r.put_file("e2.proto", "package e; message E {}");
    assert!(r.schemas().file_error("e1.proto").is_none());
    assert!(r.schemas().file_error("e2.proto").is_some());

    // Uploading a copy of a built-in changes nothing.
    let mut r = SchemaRegistry::new();
    r.put_file(
        "org/infinispan/protostream/message-wrapping.proto",
        "message Other {}",
    );
    assert!(r.schemas().errors().is_empty());
    assert!(r.schemas().message("Other").is_none());
}

#[test]
fn imports_of_the_builtins_resolve() {
    let mut r = SchemaRegistry::new();
    r.put_file(
        "q.proto",
        "syntax = \"proto3\";\npackage q;\nimport \"org/infinispan/protostream/message-wrapping.proto\";\nimport \"common-java-types.proto\";\n/**\n * @TypeId(70000)\n * @Indexed\n */\nmessage Q {\n  /** @Keyword(projectable = true, normalizer = \"lowercase\") */\n  string k = 1;\n  org.infinispan.protostream.WrappedMessage w = 2;\n  org.infinispan.protostream.commons.UUID id = 3;\n  /** @Text */\n  string t = 4;\n}\n",
    );
    let s = r.schemas();
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert_eq!(s.message_by_type_id(70000).unwrap().full_name(), "q.Q");
    let k = s.field_index("q.Q", "k").unwrap();
    assert_eq!(k.kind, IndexKind::Keyword);
    assert!(k.projectable);
    let ann = &s.annotations("q.Q").unwrap().fields["k"].annotations[0];
    assert_eq!(ann.attribute("normalizer"), Some("lowercase"));
    assert_eq!(s.field_index("q.Q", "t").unwrap().kind, IndexKind::Text);
}
