//! One small bad model per rule: the message and the line of each problem.

use sluice_model::*;

fn no_vars(_: &str) -> Option<String> {
    None
}

const SRC: &str =
    "<window-source name='s'><schema-string>id*:int64,v:double</schema-string></window-source>";

/// A project with one contquery `cq`; each window and edge on its own line.
fn model(windows: &[&str], edges: &[&str]) -> String {
    let mut s = String::from(
        "<project name='p' pubsub='auto'>\n<contqueries>\n<contquery name='cq'>\n<windows>\n",
    );
    for w in windows {
        s.push_str(w);
        s.push('\n');
    }
    s.push_str("</windows>\n<edges>\n");
    for e in edges {
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("</edges>\n</contquery>\n</contqueries>\n</project>\n");
    s
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in model")) as u32
        + 1
}

fn errors(xml: &str) -> Vec<Diagnostic> {
    match parse_models(xml, &no_vars) {
        Ok(p) => panic!("expected errors, got {} project(s)", p.len()),
        Err(d) => d,
    }
}

/// Exactly one diagnostic, containing `msg`, at the line containing `at`.
fn one_error(xml: &str, msg: &str, at: &str) -> Diagnostic {
    let d = errors(xml);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains(msg),
        "{:?} lacks {msg:?}",
        d[0].message
    );
    assert_eq!(d[0].line, line_of(xml, at), "{:?}", d[0]);
    d[0].clone()
}

fn ok(xml: &str) -> ProjectSpec {
    parse_project(xml, &no_vars).unwrap_or_else(|d| panic!("{d:#?}"))
}

#[test]
fn duplicate_window_names() {
    let x = model(
        &[
            SRC,
            "<window-copy name='c'/>",
            "<window-copy name='c' index='pi_HASH'/>",
        ],
        &["<edge source='s' target='c'/>"],
    );
    let d = one_error(&x, "duplicate window name 'c'", "name='c' index=");
    assert!(d
        .message
        .contains(&format!("line {}", line_of(&x, "<window-copy name='c'/>"))));
    assert_eq!(d.path.as_deref(), Some("cq/c"));
}

#[test]
fn edge_to_unknown_window_lists_windows() {
    let x = model(
        &[SRC, "<window-copy name='c'/>"],
        &[
            "<edge source='s' target='c'/>",
            "<edge source='s' target='nope'/>",
        ],
    );
    let d = one_error(
        &x,
        "edge target 'nope' is not a window of contquery 'cq' (windows: s, c)",
        "target='nope'",
    );
    assert_eq!(d.path.as_deref(), Some("cq"));
}

#[test]
fn cycles_name_the_windows() {
    let x = model(
        &[
            SRC,
            "<window-union name='u'/>",
            "<window-copy name='a'/>",
            "<window-copy name='b'/>",
        ],
        &[
            "<edge source='s' target='u'/>",
            "<edge source='u' target='a'/>",
            "<edge source='a' target='b'/>",
            "<edge source='b' target='u'/>",
        ],
    );
    one_error(&x, "cycle: u -> a -> b -> u", "name='u'");
}

#[test]
fn join_needs_two_inputs() {
    let join = "<window-join name='j'><join type='inner'><conditions><fields left='id' right='id'/></conditions></join><output><field-selection name='v' source='l_v'/></output></window-join>";
    let x = model(&[SRC, join], &["<edge source='s' target='j'/>"]);
    one_error(
        &x,
        "join window 'j' has 1 input(s); a join needs exactly two",
        "name='j'",
    );
    let x = model(
        &[SRC, "<window-copy name='c'/>", join],
        &[
            "<edge source='s c' target='j'/>",
            "<edge source='s' target='c'/>",
        ],
    );
    let p = ok(&x);
    let WindowKind::Join(j) = &p.contqueries[0].windows[2].kind else {
        panic!()
    };
    assert_eq!(j.join_type, JoinType::Inner);
    assert_eq!(
        p.contqueries[0].edges.len(),
        3,
        "cross product of source list"
    );
}

#[test]
fn source_with_input() {
    let src2 = "<window-source name='t'><schema-string>id*:int64</schema-string></window-source>";
    let x = model(&[SRC, src2], &["<edge source='s' target='t'/>"]);
    one_error(
        &x,
        "source window 't' cannot have inputs",
        "<edge source='s' target='t'/>",
    );
}

#[test]
fn derived_window_without_input() {
    let x = model(&[SRC, "<window-copy name='c'/>"], &[]);
    one_error(&x, "window 'c' has no input", "name='c'");
}

#[test]
fn missing_schema() {
    let x = model(&["<window-source name='s'/>"], &[]);
    one_error(&x, "window-source 's' has no schema", "name='s'");
    let x = model(
        &[SRC, "<window-aggregate name='a'><output><field-expr>ESP_aSum(v)</field-expr></output></window-aggregate>"],
        &["<edge source='s' target='a'/>"],
    );
    one_error(&x, "window-aggregate 'a' has no schema", "name='a'");
}

#[test]
fn missing_keys() {
    let x = model(
        &["<window-source name='s'><schema><fields><field name='a' type='int32'/></fields></schema></window-source>"],
        &[],
    );
    let d = one_error(
        &x,
        "missing keys: mark at least one field key=\"true\" or ID*",
        "name='s'",
    );
    assert_eq!(d.path.as_deref(), Some("cq/s"));
}

#[test]
fn field_expr_count_must_match_non_key_fields() {
    let compute = "<window-compute name='c'><schema-string>id*:int64,a:double,b:string</schema-string><output><field-expr>v</field-expr></output></window-compute>";
    let x = model(&[SRC, compute], &["<edge source='s' target='c'/>"]);
    one_error(
        &x,
        "1 <field-expr> for 2 non-key field(s) (a, b)",
        "name='c'",
    );
}

#[test]
fn retention_only_on_source_and_copy() {
    let x = model(
        &[
            SRC,
            "<window-union name='u'>",
            "<retention type='bycount_sliding'>5</retention>",
            "</window-union>",
        ],
        &["<edge source='s' target='u'/>"],
    );
    one_error(
        &x,
        "retention is only allowed on window-source and window-copy",
        "<retention",
    );
}

#[test]
fn autogen_key_rules() {
    let x = model(
        &["<window-source name='s' autogen-key='true'><schema-string>id*:int64,v:double</schema-string></window-source>"],
        &[],
    );
    one_error(
        &x,
        "autogen-key=\"true\" requires insert-only=\"true\"",
        "name='s'",
    );
    let x = model(
        &["<window-source name='s' autogen-key='true' insert-only='true'><schema-string>id*:int32,v:double</schema-string></window-source>"],
        &[],
    );
    one_error(
        &x,
        "exactly one key field, of type int64 or string",
        "name='s'",
    );
    let x = model(
        &["<window-source name='s' autogen-key='true' insert-only='true'><schema-string>id*:string,v:double</schema-string></window-source>"],
        &[],
    );
    ok(&x);
}

#[test]
fn unknown_index() {
    let x = model(
        &["<window-source name='s' index='pi_BTREE'><schema-string>id*:int64</schema-string></window-source>"],
        &[],
    );
    one_error(&x, "unknown index 'pi_BTREE'", "name='s'");
}

#[test]
fn retention_type_and_value() {
    let w = |r: &str| {
        model(
            &[SRC, "<window-copy name='c'>", r, "</window-copy>"],
            &["<edge source='s' target='c'/>"],
        )
    };
    one_error(
        &w("<retention type='bytime_rolling'>5 minutes</retention>"),
        "unknown retention type 'bytime_rolling'",
        "<retention",
    );
    one_error(
        &w("<retention type='bytime_sliding'>5 fortnights</retention>"),
        "retention value '5 fortnights' is not a positive time",
        "<retention",
    );
    one_error(
        &w("<retention type='bycount_jumping'>ten</retention>"),
        "retention value 'ten' is not a positive event count",
        "<retention",
    );
    one_error(
        &w("<retention type='bytime_jumping_lookback'>5 minutes</retention>"),
        "'bytime_jumping_lookback' is not supported",
        "<retention",
    );
    let p = ok(&w(
        "<retention type='bytime_jumping'><![CDATA[ 2 hours ]]></retention>",
    ));
    let r = p.contqueries[0].windows[1].retention.clone().unwrap();
    assert_eq!(r.kind, RetentionKind::ByTimeJumping);
    assert_eq!(r.amount, 2 * 3600 * 1_000_000);
    assert_eq!(r.line, line_of(&w("<retention"), "<retention"));
}

#[test]
fn unknown_join_type() {
    let x = model(
        &[
            SRC,
            "<window-copy name='c'/>",
            "<window-join name='j'>",
            "<join type='outer'><conditions><fields left='id' right='id'/></conditions></join>",
            "</window-join>",
        ],
        &[
            "<edge source='s' target='c'/>",
            "<edge source='s c' target='j'/>",
        ],
    );
    one_error(&x, "unknown join type 'outer'", "<join type");
}

#[test]
fn connector_without_type() {
    let x = model(
        &[
            "<window-source name='s'><schema-string>id*:int64</schema-string><connectors>",
            "<connector class='fs' name='in'><properties><property name='fsname'>x.csv</property></properties></connector>",
            "</connectors></window-source>",
        ],
        &[],
    );
    one_error(&x, "connector 'in' has no type", "<connector class");
}

#[test]
fn connector_forms() {
    let x = model(
        &[
            "<window-source name='s'><schema-string>id*:int64</schema-string><connectors>",
            "<connector class='fs' name='a' type='publish' active='false'><properties><property name='fsname'>@D@/x.csv</property></properties></connector>",
            "<connector class='fs' name='b'><properties><property name='type'><![CDATA[ sub ]]></property><property name='snapshot'>true</property></properties></connector>",
            "</connectors></window-source>",
        ],
        &[],
    );
    let vars = |n: &str| (n == "D").then(|| "/tmp/d".to_string());
    let p = parse_project(&x, &vars).unwrap();
    let c = &p.contqueries[0].windows[0].connectors;
    assert_eq!(c[0].direction, ConnectorDirection::Publish);
    assert!(!c[0].active);
    assert_eq!(c[0].prop("fsname"), Some("/tmp/d/x.csv"));
    assert_eq!(c[1].direction, ConnectorDirection::Subscribe);
    assert_eq!(c[1].prop("type"), Some("sub"));
    assert!(c[1].flag("snapshot", false));
    assert_eq!(c[1].line, line_of(&x, "name='b'"));
}

#[test]
fn unsupported_field_types() {
    // In an executed window: an error naming the field and the window.
    let x = model(
        &[
            "<window-source name='s'><schema><fields>",
            "<field name='id' type='int64' key='true'/>",
            "<field name='img' type='blob'/>",
            "</fields></schema></window-source>",
        ],
        &[],
    );
    let d = one_error(
        &x,
        "field 'img' of window 's' has type 'blob'",
        "name='img'",
    );
    assert_eq!(d.path.as_deref(), Some("cq/s"));
    let x = model(
        &["<window-source name='s'><schema-string>id*:int64,a:array(dbl)</schema-string></window-source>"],
        &[],
    );
    one_error(&x, "'a'", "name='s'");
    // In a window the engine does not execute: loads.
    let x = model(
        &[
            SRC,
            "<window-calculate name='k' algorithm='Summary'><schema-string>id*:int64,img:blob</schema-string></window-calculate>",
        ],
        &["<edge source='s' target='k' role='data'/>"],
    );
    let p = ok(&x);
    let k = &p.contqueries[0].windows[1];
    assert_eq!(
        k.kind,
        WindowKind::Unsupported {
            reason: "window-calculate is not supported".into()
        }
    );
    assert!(k.schema.is_none());
}

#[test]
fn plugins_load_as_unsupported() {
    let x = model(
        &[
            SRC,
            "<window-filter name='f'><plugin name='lib' function='fn'/></window-filter>",
            "<window-compute name='c'><schema-string>id*:int64,a:double</schema-string><output><field-plug plugin='p' function='f'/></output></window-compute>",
            "<window-copy name='k'><splitter-plug name='lib' function='fn'/></window-copy>",
            "<window-pattern name='pt'><schema-string>id*:int64</schema-string><patterns/></window-pattern>",
        ],
        &[
            "<edge source='s' target='f c k'/>",
            "<edge source='k' target='pt'/>",
        ],
    );
    let p = ok(&x);
    let reasons: Vec<String> = p.contqueries[0].windows[1..]
        .iter()
        .map(|w| match &w.kind {
            WindowKind::Unsupported { reason } => reason.clone(),
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            "filter plugins are not supported",
            "field-plug plugins are not supported",
            "splitter-plug plugins are not supported",
            "window-pattern is not supported",
        ]
    );
}

#[test]
fn malformed_xml_is_one_diagnostic() {
    let x =
        "<project name='p'>\n<contqueries>\n<contquery name='cq'>\n</contqueries>\n</project>\n";
    let d = errors(x);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.starts_with("malformed XML"), "{:?}", d[0]);
    assert_eq!(d[0].line, 4);
    let x = "<project name='p'>\n<contqueries>\n<contquery name=cq>\n</contquery></contqueries>\n</project>\n";
    let d = errors(x);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].line, 3, "{:?}", d[0]);
    let d = errors("<project name='p'>\n<contqueries>\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("not closed"), "{:?}", d[0]);
}

#[test]
fn wrong_root() {
    let d = errors("<?xml version='1.0'?>\n<foo><project name='p'/></foo>");
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].message,
        "expected <engine> or <project> root, found <foo>"
    );
    assert_eq!(d[0].line, 2);
}

#[test]
fn many_problems_at_once() {
    let x = model(
        &[
            "<window-source name='s' index='pi_NOPE'><schema-string>a:int32</schema-string></window-source>",
            "<window-copy name='c'/>",
            "<window-filter name='f'/>",
        ],
        &["<edge source='s' target='c'/>", "<edge source='x' target='c'/>"],
    );
    let d = errors(&x);
    let msgs: Vec<(u32, &str)> = d.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(d.len(), 5, "{msgs:#?}");
    let has = |line: &str, m: &str| {
        assert!(
            d.iter()
                .any(|d| d.line == line_of(&x, line) && d.message.contains(m)),
            "{m} at {line}: {msgs:#?}"
        )
    };
    has("name='s'", "unknown index 'pi_NOPE'");
    has("name='s'", "missing keys");
    has("name='f'", "needs an <expression>");
    has("name='f'", "window 'f' has no input");
    has("source='x'", "edge source 'x' is not a window");
    // Sorted by line.
    assert!(d.windows(2).all(|w| w[0].line <= w[1].line));
}

#[test]
fn engine_with_two_projects() {
    let x = "<engine><projects>\n<project name='a'><contqueries><contquery name='q'><windows>\
             <window-source name='s'><schema-string>id*:int64</schema-string></window-source>\
             </windows></contquery></contqueries></project>\n<project name='b'/>\n</projects></engine>";
    let ps = parse_models(x, &no_vars).unwrap();
    assert_eq!(
        ps.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(ps[1].line, 3);
    let d = parse_project(x, &no_vars).unwrap_err();
    assert!(d[0].message.contains("exactly one <project>, found 2"));
}

#[test]
fn project_attributes() {
    let x = "<project name='p' pubsub='manual' threads='4' heartbeat-interval='5' restore='/snap' index='pi_LN_HASH'/>";
    let p = ok(x);
    assert_eq!(p.pubsub.as_deref(), Some("manual"));
    assert_eq!(p.threads, Some(4));
    assert_eq!(p.heartbeat_interval_secs, 5);
    assert_eq!(p.restore.as_deref(), Some("/snap"));
    assert_eq!(p.index, Some(IndexKind::LnHash));
}

#[test]
fn validate_and_topo_order_on_edited_spec() {
    let x = model(
        &[SRC, "<window-copy name='b'/>", "<window-copy name='a'/>"],
        &[
            "<edge source='b' target='a'/>",
            "<edge source='s' target='b'/>",
        ],
    );
    let mut p = ok(&x);
    assert_eq!(topo_order(&p.contqueries[0]), vec![0, 1, 2]);
    let first = p.contqueries[0].edges[0].clone();
    p.contqueries[0].edges.push(EdgeSpec {
        source: "a".into(),
        target: "b".into(),
        ..first
    });
    let d = validate(&p);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("cycle: b -> a -> b"), "{:?}", d[0]);
    assert_eq!(topo_order(&p.contqueries[0]), vec![0, 1, 2]);
}

#[test]
fn expressions_keep_text_and_decode_entities() {
    let x = model(
        &[
            SRC,
            "<window-filter name='f'><expression>",
            "  v &gt; 10 and v &lt;= 20",
            "</expression></window-filter>",
        ],
        &["<edge source='s' target='f'/>"],
    );
    let p = ok(&x);
    let WindowKind::Filter { expression, line } = &p.contqueries[0].windows[1].kind else {
        panic!()
    };
    assert_eq!(expression, "v > 10 and v <= 20");
    assert_eq!(*line, line_of(&x, "<expression>"));
}
