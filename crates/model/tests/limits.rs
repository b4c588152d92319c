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
