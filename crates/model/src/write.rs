//! An [`XmlNode`] back to XML text (for `GET projectXml`).

use crate::spec::XmlNode;

/// XML text of `node`: well-formed, attributes in order, text escaped, indented by two spaces
/// where that does not change the text content (elements with both text and child elements are
/// written without added whitespace). Parsing the result gives an equal tree (lines aside).
pub fn write_xml(node: &XmlNode) -> String {
    let mut out = String::new();
    write_node(node, 0, true, &mut out);
    out.push('\n');
    out
}

fn write_node(node: &XmlNode, depth: usize, pretty: bool, out: &mut String) {
    out.push('<');
    out.push_str(&node.name);
    for (k, v) in &node.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        escape(v, true, out);
        out.push('"');
    }
    if node.children.is_empty() && node.text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    escape(&node.text, false, out);
    // Indentation is whitespace text, dropped on re-parse only when the element's own text
    // is empty.
    let indent = pretty && node.text.is_empty();
    for c in &node.children {
        if indent {
            newline(depth + 1, out);
        }
        write_node(c, depth + 1, indent, out);
    }
    if indent && !node.children.is_empty() {
        newline(depth, out);
    }
    out.push_str("</");
    out.push_str(&node.name);
    out.push('>');
}

fn newline(depth: usize, out: &mut String) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn escape(s: &str, attr: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_escaped_and_indented() {
        let n = XmlNode {
            name: "a".into(),
            attrs: vec![("x".into(), "1 < \"2\"".into())],
            children: vec![
                XmlNode {
                    name: "b".into(),
                    text: "p > q && r".into(),
                    ..XmlNode::default()
                },
                XmlNode {
                    name: "c".into(),
                    ..XmlNode::default()
                },
            ],
            ..XmlNode::default()
        };
        assert_eq!(
            write_xml(&n),
            "<a x=\"1 &lt; &quot;2&quot;\">\n  <b>p &gt; q &amp;&amp; r</b>\n  <c/>\n</a>\n"
        );
    }
}
