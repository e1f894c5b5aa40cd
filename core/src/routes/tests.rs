use super::*;

fn table(entries: &[(&str, &str)]) -> RouteTable {
    let mut table = RouteTable::default();
    for (service, entry) in entries {
        let id = match table.service_id(service) {
            Some(id) => id,
            None => table.add_service(service).unwrap(),
        };
        table.add_route(entry, id).unwrap();
    }
    table
}

fn endpoint(table: &RouteTable, method: Method, path: &str) -> Option<String> {
    table
        .resolve(method, path.as_bytes())
        .endpoint
        .map(|id| table.template_text(id).unwrap().to_owned())
}

#[test]
fn static_segment_beats_parameter() {
    let t = table(&[
        ("api", "/api/v1/users/:id"),
        ("api", "/api/v1/users/me"),
        ("api", "/api/v1/users/:id/avatar"),
        ("api", "/api/v1/users/me/password"),
    ]);
    assert_eq!(
        endpoint(&t, Method::Get, "/api/v1/users/me").as_deref(),
        Some("/api/v1/users/me")
    );
    assert_eq!(
        endpoint(&t, Method::Get, "/api/v1/users/42").as_deref(),
        Some("/api/v1/users/:id")
    );
    // The static branch `me` has no `avatar` child: fall back to the parameter branch.
    assert_eq!(
        endpoint(&t, Method::Get, "/api/v1/users/me/avatar").as_deref(),
        Some("/api/v1/users/:id/avatar")
    );
    assert_eq!(
        endpoint(&t, Method::Put, "/api/v1/users/me/password").as_deref(),
        Some("/api/v1/users/me/password")
    );
}

#[test]
fn query_fragment_and_one_trailing_slash_are_ignored() {
    let t = table(&[("api", "/api/v1/tracks/:id")]);
    for path in [
        "/api/v1/tracks/7?token=secret",
        "/api/v1/tracks/7/",
        "/api/v1/tracks/7#x",
        "/api/v1/tracks/7/?a=b",
    ] {
        assert_eq!(
            endpoint(&t, Method::Get, path).as_deref(),
            Some("/api/v1/tracks/:id"),
            "{path}"
        );
    }
}

#[test]
fn empty_segments_and_wrong_depth_do_not_match() {
    let t = table(&[("api", "/api/v1/tracks/:id")]);
    for path in [
        "//api/v1/tracks/1",
        "/api//v1/tracks/1",
        "/api/v1/tracks//",
        "/api/v1/tracks",
        "/api/v1/tracks/1/2",
        "/API/v1/tracks/1",
        "",
        "api/v1/tracks/1",
    ] {
        assert_eq!(endpoint(&t, Method::Get, path), None, "{path}");
    }
}

#[test]
fn methods_select_between_same_shape_templates() {
    let t = table(&[
        ("api", "GET /api/v1/shared-resources/:filename"),
        ("api", "PUT,DELETE /api/v1/shared-resources/:id"),
    ]);
    assert_eq!(
        endpoint(&t, Method::Get, "/api/v1/shared-resources/a.mp3").as_deref(),
        Some("/api/v1/shared-resources/:filename")
    );
    assert_eq!(
        endpoint(&t, Method::Delete, "/api/v1/shared-resources/9").as_deref(),
        Some("/api/v1/shared-resources/:id")
    );
    assert_eq!(
        endpoint(&t, Method::Post, "/api/v1/shared-resources/9"),
        None
    );
}

#[test]
fn catch_all_matches_the_rest() {
    let t = table(&[("s", "/static/*filepath"), ("s", "/static/index.html")]);
    assert_eq!(
        endpoint(&t, Method::Get, "/static/index.html").as_deref(),
        Some("/static/index.html")
    );
    assert_eq!(
        endpoint(&t, Method::Get, "/static/a/b/c.css").as_deref(),
        Some("/static/*filepath")
    );
    let deep = format!("/static{}", "/x".repeat(100));
    assert_eq!(
        endpoint(&t, Method::Get, &deep).as_deref(),
        Some("/static/*filepath")
    );
}

#[test]
fn root_template() {
    let t = table(&[("s", "/")]);
    assert_eq!(endpoint(&t, Method::Get, "/").as_deref(), Some("/"));
    assert_eq!(endpoint(&t, Method::Get, "/?q=1").as_deref(), Some("/"));
    assert_eq!(endpoint(&t, Method::Get, "/x"), None);
}

#[test]
fn service_comes_from_template_then_longest_prefix() {
    let mut t = RouteTable::default();
    let api = t.add_service("backend-api").unwrap();
    let chat = t.add_service("chat").unwrap();
    t.add_prefix("/api/", api).unwrap();
    t.add_prefix("/api/messages", chat).unwrap();
    t.add_route("/api/v1/tracks", api).unwrap();
    assert_eq!(
        t.resolve(Method::Get, b"/api/v1/tracks"),
        RouteMatch {
            endpoint: Some(0),
            service: Some(api)
        }
    );
    assert_eq!(
        t.resolve(Method::Get, b"/api/messages/x"),
        RouteMatch {
            endpoint: None,
            service: Some(chat)
        }
    );
    assert_eq!(
        t.resolve(Method::Get, b"/api/nothing"),
        RouteMatch {
            endpoint: None,
            service: Some(api)
        }
    );
    assert_eq!(
        t.resolve(Method::Get, b"/elsewhere"),
        RouteMatch {
            endpoint: None,
            service: None
        }
    );
}

#[test]
fn invalid_templates_are_refused_with_a_reason() {
    let mut t = RouteTable::default();
    let s = t.add_service("s").unwrap();
    let cases = [
        ("api/v1", "must start with '/'"),
        ("/api/:", "parameter at segment 2 has no name"),
        ("/api//x", "empty segment at position 2"),
        ("/a/*rest/b", "must be the last segment"),
        ("/a;b", "contains ';'"),
        ("/a=b", "contains '='"),
        ("/a b", "is not a standard HTTP method"),
        ("FETCH /a", "\"FETCH\" is not a standard HTTP method"),
        ("/a/:id-x", "may use only letters"),
    ];
    for (entry, expected) in cases {
        let err = t.add_route(entry, s).unwrap_err();
        assert!(err.contains(expected), "{entry}: {err}");
    }
    let long = format!("/{}", "a".repeat(MAX_TEMPLATE_LEN));
    assert!(t.add_route(&long, s).unwrap_err().contains("longer than"));
    let deep = "/a".repeat(MAX_TEMPLATE_SEGMENTS + 1);
    assert!(t.add_route(&deep, s).unwrap_err().contains("more than"));
}

#[test]
fn duplicates_are_refused() {
    let mut t = RouteTable::default();
    let s = t.add_service("s").unwrap();
    t.add_route("/a/:id", s).unwrap();
    let err = t.add_route("GET /a/:name", s).unwrap_err();
    assert_eq!(
        err,
        "\"/a/:name\" matches the same paths and methods as \"/a/:id\""
    );
    assert!(t.add_service("s").unwrap_err().contains("defined twice"));
    t.add_prefix("/a", s).unwrap();
    assert!(t.add_prefix("/a", s).unwrap_err().contains("claimed twice"));
}
