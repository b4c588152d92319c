//! Reply bodies of the REST API (reference 4.3): `<message>…</message>` on success,
//! `<response><message>…</message><details><detail>…</detail></details></response>` with a
//! status ≥ 400 on failure; JSON (`{"message": …}`) on request.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The representation a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// Detail lines a reply lists at most; the rest are counted (`and N more`).
pub const MAX_DETAILS: usize = 20;

/// A failed request: status, a message that says what to do, and optional detail lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub details: Vec<String>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
    /// 400: bad parameters, XML or events.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    /// 404: unknown project, window or logger.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    /// 409: an illegal state transition or an existing name.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    /// Adds detail lines.
    pub fn with_details(mut self, details: Vec<String>) -> ApiError {
        self.details = details;
        self
    }

    /// The detail lines a reply shows: the first [`MAX_DETAILS`], then how many more.
    pub fn shown_details(&self) -> Vec<String> {
        let mut v: Vec<String> = self.details.iter().take(MAX_DETAILS).cloned().collect();
        if self.details.len() > MAX_DETAILS {
            v.push(format!(
                "and {} more not listed",
                self.details.len() - MAX_DETAILS
            ));
        }
        v
    }

    /// The error in the requested representation.
    pub fn render(&self, fmt: Format) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let details = self.shown_details();
        match fmt {
            Format::Xml => {
                let mut s = String::from("<response><message>");
                escape(&self.message, &mut s);
                s.push_str("</message>");
                if !details.is_empty() {
                    s.push_str("<details>");
                    for d in &details {
                        s.push_str("<detail>");
                        escape(d, &mut s);
                        s.push_str("</detail>");
                    }
                    s.push_str("</details>");
                }
                s.push_str("</response>\n");
                xml_response(status, s)
            }
            Format::Json => {
                let v = json!({"message": self.message, "details": details});
                json_response(status, v.to_string())
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        for d in &self.shown_details() {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// A successful reply, built once and rendered in either representation.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `<message>text</message>` / `{"message": text}`.
    Message(String),
    /// An XML element tree (JSON is derived from it).
    Tree(Elem),
    /// A body already in its final form, with its content type.
    Raw(&'static str, String),
}

impl Reply {
    /// Renders with status 200.
    pub fn render(self, fmt: Format) -> Response {
        match (self, fmt) {
            (Reply::Message(m), Format::Xml) => {
                let mut s = String::from("<message>");
                escape(&m, &mut s);
                s.push_str("</message>\n");
                xml_response(StatusCode::OK, s)
            }
            (Reply::Message(m), Format::Json) => {
                json_response(StatusCode::OK, json!({ "message": m }).to_string())
            }
            (Reply::Tree(e), Format::Xml) => {
                let mut s = String::new();
                e.write_xml(&mut s);
                s.push('\n');
                xml_response(StatusCode::OK, s)
            }
            (Reply::Tree(e), Format::Json) => {
                let v = json!({ e.name.clone(): e.to_json() });
                json_response(StatusCode::OK, v.to_string())
            }
            (Reply::Raw(ct, body), _) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        }
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A small XML element used to build replies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Elem {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Elem>,
    pub text: Option<String>,
    /// Pre-rendered XML placed inside the element (projectXml); JSON shows it as text.
    pub raw: Option<String>,
}

impl Elem {
    /// An element without attributes.
    pub fn new(name: impl Into<String>) -> Elem {
        Elem {
            name: name.into(),
            ..Elem::default()
        }
    }
    /// Adds an attribute.
    pub fn attr(mut self, k: impl Into<String>, v: impl ToString) -> Elem {
        self.attrs.push((k.into(), v.to_string()));
        self
    }
    /// Adds a child.
    pub fn child(mut self, c: Elem) -> Elem {
        self.children.push(c);
        self
    }
    /// Sets the text.
    pub fn text(mut self, t: impl Into<String>) -> Elem {
        self.text = Some(t.into());
        self
    }

    /// Writes the element as XML.
    pub fn write_xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape_attr(v, out);
            out.push('"');
        }
        if self.children.is_empty() && self.text.is_none() && self.raw.is_none() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(t) = &self.text {
            escape(t, out);
        }
        if let Some(r) = &self.raw {
            out.push_str(r);
        }
        for c in &self.children {
            c.write_xml(out);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// The JSON form: attributes as members, children grouped by name into arrays, text as
    /// `"text"` (or the value itself for a leaf without attributes).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        if self.attrs.is_empty() && self.children.is_empty() {
            if let Some(t) = &self.text {
                return Value::String(t.clone());
            }
            if let Some(r) = &self.raw {
                return Value::String(r.clone());
            }
        }
        let mut m = Map::new();
        for (k, v) in &self.attrs {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        for c in &self.children {
            let entry = m
                .entry(c.name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = entry {
                a.push(c.to_json());
            }
        }
        if let Some(t) = &self.text {
            m.insert("text".into(), Value::String(t.clone()));
        }
        if let Some(r) = &self.raw {
            m.insert("xml".into(), Value::String(r.clone()));
        }
        Value::Object(m)
    }
}

/// Request input quoted in a reply: at most `max` characters, then `…` and how many more.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}… ({} more characters)", &s[..i], s[i..].chars().count()),
    }
}

/// Escapes element text.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_render_as_xml_and_json() {
        let e = Elem::new("projects")
            .child(Elem::new("project").attr("name", "a&b"))
            .child(Elem::new("project").attr("name", "c"));
        let mut s = String::new();
        e.write_xml(&mut s);
        assert_eq!(
            s,
            "<projects><project name=\"a&amp;b\"/><project name=\"c\"/></projects>"
        );
        assert_eq!(
            e.to_json().to_string(),
            r#"{"project":[{"name":"a&b"},{"name":"c"}]}"#
        );
    }

    #[test]
    fn details_are_capped() {
        let e =
            ApiError::bad("m").with_details((0..100_000).map(|i| format!("line {i}")).collect());
        let d = e.shown_details();
        assert_eq!(d.len(), MAX_DETAILS + 1);
        assert_eq!(d[MAX_DETAILS], "and 99980 more not listed");
    }
}
