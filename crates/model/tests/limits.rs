//! Hostile models: limits that keep one request from crashing the process. Each input is
//! parsed on a thread with the 2 MiB stack of a server thread, so a test that passes proves no
//! stack overflow.

use sluice_model::*;

fn no_vars(_: &str) -> Option<String> {
    None
}

/// Runs `f` on a thread with a 2 MiB stack (what tokio and server threads get).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the parser thread died")
}

fn nested(depth: usize) -> String {
    let mut s = String::from("<project name='p' pubsub='auto'>\n<description>\n");
    for _ in 0..depth {
        s.push_str("<a>");
    }
    for _ in 0..depth {
        s.push_str("</a>");
    }
    s.push_str("\n</description>\n</project>\n");
    s
}

#[test]
fn a_model_nested_10000_elements_deep_is_refused_naming_the_limit_and_the_line() {
    let errs = on_small_stack(|| {
        let xml = nested(10_000);
        match parse_models(&xml, &no_vars) {
            Ok(_) => panic!("a 10,000-deep model was accepted"),
            Err(e) => e,
        }
    });
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert_eq!(e.line, 3, "{e}");
    assert!(
        e.message
            .contains(&format!("nested more than {MAX_XML_DEPTH} elements deep")),
        "{e}"
    );
    // The same through the bare tree reader, and a document just within the limit loads.
    let e = on_small_stack(|| parse_xml_node(&nested(10_000), &no_vars).unwrap_err());
    assert!(e.message.contains("64"), "{e}");
    let ok = nested(MAX_XML_DEPTH - 2);
    let p = on_small_stack(move || parse_project(&ok, &no_vars).map(|p| write_xml(&p.node)));
    assert!(p.is_ok(), "{p:?}");
    let e = parse_project(&nested(MAX_XML_DEPTH - 1), &no_vars).unwrap_err();
    assert!(e[0].message.contains("nested more than"), "{e:?}");
}

fn names_model(project: &str, cq: &str, window: &str) -> String {
    format!(
        "<project name='{project}' pubsub='auto'>\n<contqueries>\n<contquery name='{cq}'>\n<windows>\n\
         <window-source name='{window}'><schema-string>id*:int64</schema-string></window-source>\n\
         </windows>\n</contquery>\n</contqueries>\n</project>\n"
    )
}

#[test]
fn names_that_could_be_paths_are_refused_with_the_name_and_the_rule() {
    let rule = "a name is made of letters A-Z and a-z, digits, '_', '-' and '.', and does not start with '.'";
    for (project, cq, window, line, needle) in [
        (
            "p",
            "cq",
            "../../../escaped",
            5,
            "window name '../../../escaped'",
        ),
        (
            "p",
            "../../../../cqescape",
            "w",
            3,
            "contquery name '../../../../cqescape'",
        ),
        ("..", "cq", "w", 1, "project name '..'"),
        (".", "cq", "w", 1, "project name '.'"),
        (".hidden", "cq", "w", 1, "project name '.hidden'"),
        ("p", "a\\b", "w", 3, "contquery name 'a\\b'"),
        ("p", "cq", "a b", 5, "window name 'a b'"),
        ("p", "cq", "w/x", 5, "window name 'w/x'"),
        ("p", "cq", "w&#0;x", 5, "malformed XML"),
        ("p", "cq", "w&#9;x", 5, "contains the character U+0009"),
    ] {
        let xml = names_model(project, cq, window);
        let errs = parse_models(&xml, &no_vars).expect_err(&xml);
        let e = errs
            .iter()
            .find(|d| d.message.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {errs:?}"));
        assert_eq!(e.line, line, "{e}");
        if !needle.starts_with("malformed") {
            assert!(e.message.contains(rule), "{e}");
        }
    }
    // What ESP models use loads.
    for (project, cq, window) in [
        ("trades_1", "cq-2", "w.3"),
        ("P", "CQ", "a-b_c.d"),
        ("0", "1", "2"),
    ] {
        let xml = names_model(project, cq, window);
        assert!(parse_models(&xml, &no_vars).is_ok(), "{xml}");
    }
    assert_eq!(name_problem("ok.name-1_x"), None);
    assert!(name_problem("..").is_some());
}
