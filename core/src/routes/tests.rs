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

/// The tree walk the matcher is laid out from: what `resolve` must agree with.
fn reference(node: &Node, method: Method, segments: &[&[u8]]) -> Option<EndpointId> {
    let Some((first, rest)) = segments.split_first() else {
        return pick(&node.leaves, method).or_else(|| pick(&node.catch_all, method));
    };
    if let Some(found) = node
        .statics
        .get(*first)
        .and_then(|child| reference(child, method, rest))
    {
        return Some(found);
    }
    if let Some(child) = &node.param {
        if !first.is_empty() {
            if let Some(found) = reference(child, method, rest) {
                return Some(found);
            }
        }
    }
    pick(&node.catch_all, method)
}

/// Segments of every length around the eight bytes an edge holds, sharing their first eight
/// bytes, at several depths with parameters and catch-alls: every path made from them
/// resolves as the tree walk does, and each template's own path to itself.
#[test]
fn the_laid_out_matcher_agrees_with_the_tree() {
    let words = [
        "a",
        "v1",
        "users",
        "abcdefg",
        "abcdefgh",
        "abcdefghi",
        "abcdefghz",
        "abcdefgz",
        "abcdefghij",
        "abcdefghiz",
        "conversations",
        "conversationz",
    ];
    let mut t = RouteTable::default();
    let s = t.add_service("s").unwrap();
    let mut templates = Vec::new();
    for (i, first) in words.iter().enumerate() {
        for (j, second) in words.iter().enumerate() {
            let template = match (i + j) % 4 {
                0 => format!("/{first}/{second}"),
                1 => format!("/{first}/:id/{second}"),
                2 => format!("/{first}/{second}/:id"),
                _ => format!("/{first}/{second}/*rest"),
            };
            t.add_route(&template, s).unwrap();
            templates.push(template);
        }
    }
    let mut paths = vec!["/".to_owned(), "/x".to_owned(), "/abcdefgh/".to_owned()];
    for first in words {
        for second in words {
            for middle in ["", "/42", "/abcdefgh", "/conversations"] {
                paths.push(format!("/{first}{middle}/{second}"));
                paths.push(format!("/{first}{middle}/{second}/7"));
                paths.push(format!("/{first}{middle}/{second}/7/8"));
            }
        }
    }
    // Empty segments, one and two trailing slashes, and a path deeper than any template.
    paths.extend(
        [
            "/a//v1",
            "/abcdefgh/users/",
            "/abcdefgh/users//",
            "/users/42/a/",
            "//a",
            // NULs pad a head as they end a short segment: the length tells them apart.
            "/v1/abcdefg\0",
            "/abcdefg\0/abcdefg",
            "/abcdefg\0\0/abcdefgh",
        ]
        .map(str::to_owned),
    );
    paths.push(format!("/a/abcdefg{}", "/x".repeat(100)));
    let mut matched = 0;
    for path in &paths {
        let rest = path.strip_prefix('/').unwrap();
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let segments: Vec<&[u8]> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').map(str::as_bytes).collect()
        };
        let expected = reference(&t.root, Method::Get, &segments);
        assert_eq!(
            t.resolve(Method::Get, path.as_bytes()).endpoint,
            expected,
            "{path}"
        );
        matched += usize::from(expected.is_some());
    }
    for (id, template) in templates.iter().enumerate() {
        let path = template.replace(":id", "42").replace("*rest", "x/y");
        let expected = Some(EndpointId::try_from(id).unwrap());
        assert_eq!(
            t.resolve(Method::Get, path.as_bytes()).endpoint,
            expected,
            "{path}"
        );
    }
    // The paths reach every kind of node, not only misses.
    assert_eq!(matched, 541);
}

/// A change after the matcher was made is seen by the next lookup.
#[test]
fn a_route_added_after_a_lookup_is_matched() {
    let mut t = table(&[("s", "/a/:id")]);
    t.prepare();
    assert_eq!(endpoint(&t, Method::Get, "/a/b/c"), None);
    let s = t.service_id("s").unwrap();
    t.add_route("/a/:id/c", s).unwrap();
    assert_eq!(
        endpoint(&t, Method::Get, "/a/b/c").as_deref(),
        Some("/a/:id/c")
    );
}

#[test]
fn a_head_is_the_first_eight_bytes_little_endian() {
    assert_eq!(head(b""), 0);
    assert_eq!(head(b"a"), 0x61);
    assert_eq!(head(b"v1"), u64::from_le_bytes(*b"v1\0\0\0\0\0\0"));
    assert_eq!(head(b"abcdefgh"), u64::from_le_bytes(*b"abcdefgh"));
    assert_eq!(head(b"abcdefghij"), u64::from_le_bytes(*b"abcdefgh"));
}

/// The word-at-a-time splits agree with `position` on bytes chosen to trip them: the
/// separators at every offset, the bytes next to them, NULs (the padding's value) and bytes
/// with the high bit set.
#[test]
fn the_word_splits_agree_with_position() {
    let alphabet = [b'/', b'?', b'#', 0, 1, b'.', b'0', b'a', 0x80, 0xaf, 0xff];
    let mut rng = fastrand::Rng::with_seed(7);
    // [query found][slash: none, in the first word, after it]
    let mut cases = [[0; 3]; 2];
    for _ in 0..200_000 {
        // `u32`, not `usize`: the same draws on wasm32 as natively.
        let len = rng.u32(0..40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.u32(..alphabet.len() as u32) as usize])
            .collect();
        let query = bytes.iter().position(|&b| b == b'?' || b == b'#');
        assert_eq!(
            strip_query(&bytes),
            &bytes[..query.unwrap_or(len)],
            "{bytes:?}"
        );
        // Every segment, from every offset a path reaches.
        let expected: Vec<&[u8]> = bytes.split(|&b| b == b'/').collect();
        let mut found = Vec::new();
        let mut at = Some(0);
        while let Some(start) = at {
            let (segment, word, next) = segment(&bytes, start);
            assert_eq!(word, head(segment), "{bytes:?} at {start}");
            found.push(segment);
            at = next;
        }
        assert_eq!(found, expected, "{bytes:?}");
        let slash = match expected[0].len() {
            _ if expected.len() == 1 => 0,
            0..=7 => 1,
            _ => 2,
        };
        cases[usize::from(query.is_some())][slash] += 1;
    }
    // Both separators found and missed, in the first word and after it.
    assert_eq!(cases, [[18270, 8341, 770], [35321, 87763, 49535]]);
}
