//! The `fs` connector: CSV and XML event files.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sluice_event::csv::{self, CsvOptions};
use sluice_event::time::DateFormat;
use sluice_event::{Event, EventBlock, MsgId, Schema};
use sluice_model::ConnectorSpec;

use crate::ConnectorError;

/// A line that could not become an event.
#[derive(Clone, Debug, PartialEq)]
pub struct BadLine {
    /// 1-based line number in the file (0 for XML input).
    pub line: u64,
    pub text: String,
    pub reason: String,
}

/// What one read from a publisher gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PubBatch {
    pub block: EventBlock,
    pub bad: Vec<BadLine>,
}

enum Input {
    Csv(Box<dyn BufRead + Send>),
    /// XML files are parsed whole; the remaining blocks.
    Xml(std::vec::IntoIter<(bool, Vec<Event>)>),
}

/// Reads a CSV or XML event file into event blocks.
pub struct FsPublisher {
    name: String,
    path: PathBuf,
    schema: Schema,
    opts: CsvOptions,
    blocksize: usize,
    transactional: bool,
    ignore_parse_errors: bool,
    max_events: Option<u64>,
    input: Input,
    /// Lines read so far (the input position).
    lines: u64,
    events: u64,
    blocks: u64,
    line_buf: String,
}

fn prop_u64(spec: &ConnectorSpec, name: &str) -> Result<Option<u64>, ConnectorError> {
    match spec.prop(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConnectorError::Bad {
            connector: spec.name.clone(),
            property: name.into(),
            value: v.into(),
            why: "expected a whole number".into(),
        }),
    }
}

/// The `dateformat` property, compiled.
pub fn dateformat_of(spec: &ConnectorSpec) -> Result<Option<DateFormat>, ConnectorError> {
    match spec.prop("dateformat") {
        None => Ok(None),
        Some(f) => DateFormat::new(f)
            .map(Some)
            .map_err(|e| ConnectorError::Bad {
                connector: spec.name.clone(),
                property: "dateformat".into(),
                value: f.into(),
                why: e.to_string(),
            }),
    }
}

/// Resolves `fsname` against `base` (the working directory of `sluice run`).
pub fn resolve_path(spec: &ConnectorSpec, base: &Path) -> Result<PathBuf, ConnectorError> {
    let name = spec.prop("fsname").ok_or_else(|| ConnectorError::Missing {
        connector: spec.name.clone(),
        property: "fsname".into(),
    })?;
    if name.contains('@') {
        return Err(ConnectorError::Bad {
            connector: spec.name.clone(),
            property: "fsname".into(),
            value: name.into(),
            why: "unresolved @NAME@ placeholder: pass --var NAME=VALUE or set the environment variable".into(),
        });
    }
    let p = Path::new(name);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

impl FsPublisher {
    /// Opens the publisher of `spec` for a source window of `schema`. `autogen_field` is the
    /// position of the autogen key (used with `noautogenfield`).
    pub fn open(
        spec: &ConnectorSpec,
        schema: &Schema,
        autogen_field: Option<usize>,
        base: &Path,
    ) -> Result<FsPublisher, ConnectorError> {
        let path = resolve_path(spec, base)?;
        let file = File::open(&path).map_err(|source| ConnectorError::Io {
            connector: spec.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        let fstype = spec
            .prop("fstype")
            .unwrap_or("csv")
            .trim()
            .to_ascii_lowercase();
        let opts = spec
            .csv_options(autogen_field)
            .map_err(|b| ConnectorError::Bad {
                connector: spec.name.clone(),
                property: b.property,
                value: b.value,
                why: b.why,
            })?;
        let blocksize = prop_u64(spec, "blocksize")?.unwrap_or(1).max(1) as usize;
        let header = prop_u64(spec, "header")?.unwrap_or(0);
        let mut reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, file));
        let input = match fstype.as_str() {
            "csv" => {
                let mut skip = String::new();
                for _ in 0..header {
                    skip.clear();
                    let _ = reader.read_line(&mut skip);
                }
                Input::Csv(reader)
            }
            "xml" => {
                let mut text = String::new();
                reader
                    .read_to_string(&mut text)
                    .map_err(|source| ConnectorError::Io {
                        connector: spec.name.clone(),
                        path: path.display().to_string(),
                        source,
                    })?;
                let blocks =
                    crate::xml_events::parse_events(&text, schema, opts.dateformat.as_ref())
                        .map_err(|e| ConnectorError::Other {
                            connector: spec.name.clone(),
                            message: format!("{}: {e}", path.display()),
                        })?;
                Input::Xml(blocks.into_iter())
            }
            other => {
                return Err(ConnectorError::Bad {
                    connector: spec.name.clone(),
                    property: "fstype".into(),
                    value: other.into(),
                    why: "supported: csv, xml".into(),
                })
            }
        };
        Ok(FsPublisher {
            name: spec.name.clone(),
            path,
            schema: schema.clone(),
            opts,
            blocksize,
            transactional: spec.flag("transactional", false),
            ignore_parse_errors: spec.flag("ignorecsvparseerrors", false),
            max_events: prop_u64(spec, "maxevents")?,
            input,
            lines: header,
            events: 0,
            blocks: 0,
            line_buf: String::new(),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input position a snapshot records: lines consumed for CSV (header lines
    /// included), blocks read for XML.
    pub fn position(&self) -> u64 {
        match self.input {
            Input::Csv(_) => self.lines,
            Input::Xml(_) => self.blocks,
        }
    }

    /// Skips input up to `position` (after a restore), without producing events. Fails when
    /// the file is shorter than the position.
    pub fn skip_to(&mut self, position: u64) -> std::io::Result<()> {
        match &mut self.input {
            Input::Csv(reader) => {
                while self.lines < position {
                    self.line_buf.clear();
                    if reader.read_line(&mut self.line_buf)? == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "{} has {} lines, the snapshot's position is line {position}",
                                self.path.display(),
                                self.lines
                            ),
                        ));
                    }
                    self.lines += 1;
                }
            }
            Input::Xml(it) => {
                while self.blocks < position {
                    if it.next().is_none() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "{} has {} blocks, the snapshot's position is block {position}",
                                self.path.display(),
                                self.blocks
                            ),
                        ));
                    }
                    self.blocks += 1;
                }
            }
        }
        Ok(())
    }

    /// Whether bad lines are dropped silently (`ignorecsvparseerrors`) rather than reported.
    pub fn ignores_parse_errors(&self) -> bool {
        self.ignore_parse_errors
    }

    /// Reads the next block; `None` at the end of the file (or `maxevents`). The block's
    /// message ID is the input position after it: the number of its last line for CSV, its
    /// 1-based index for XML.
    pub fn next_batch(&mut self) -> std::io::Result<Option<PubBatch>> {
        if self.max_events.is_some_and(|m| self.events >= m) {
            return Ok(None);
        }
        match &mut self.input {
            Input::Xml(it) => match it.next() {
                None => Ok(None),
                Some((transactional, events)) => {
                    self.blocks += 1;
                    self.events += events.len() as u64;
                    Ok(Some(PubBatch {
                        block: EventBlock {
                            id: MsgId(self.blocks),
                            transactional,
                            events,
                        },
                        bad: Vec::new(),
                    }))
                }
            },
            Input::Csv(reader) => {
                let mut batch = PubBatch::default();
                while batch.block.events.len() < self.blocksize {
                    if self.max_events.is_some_and(|m| self.events >= m) {
                        break;
                    }
                    self.line_buf.clear();
                    if reader.read_line(&mut self.line_buf)? == 0 {
                        break;
                    }
                    self.lines += 1;
                    let line = self.line_buf.trim_end_matches(['\n', '\r']);
                    if line.trim().is_empty() {
                        continue;
                    }
                    match csv::parse_event(line, &self.schema, &self.opts) {
                        Ok(ev) => {
                            self.events += 1;
                            batch.block.events.push(ev);
                        }
                        Err(e) => {
                            if !self.ignore_parse_errors {
                                batch.bad.push(BadLine {
                                    line: self.lines,
                                    text: line.to_string(),
                                    reason: e.to_string(),
                                });
                            }
                        }
                    }
                }
                if batch.block.events.is_empty() && batch.bad.is_empty() {
                    return Ok(None);
                }
                self.blocks += 1;
                // The ID is the input position after the block (its last line): it survives a
                // restore, which resumes from that position.
                batch.block.id = MsgId(self.lines);
                batch.block.transactional = self.transactional;
                Ok(Some(batch))
            }
        }
    }
}

/// Writes a window's output to a CSV file.
pub struct FsSubscriber {
    name: String,
    out: BufWriter<File>,
    dateformat: Option<DateFormat>,
    /// `snapshot=true`: the window's current rows are written first, as inserts.
    pub snapshot: bool,
    rmretdel: bool,
    buf: String,
    /// `fstype=xml`: the field names; events are written as `<event>` elements.
    xml: Option<Vec<String>>,
}

impl Drop for FsSubscriber {
    fn drop(&mut self) {
        if self.xml.is_some() {
            // Closes the document; a write error here has nowhere to go.
            let _ = self.out.write_all(b"</events>\n");
            let _ = self.out.flush();
        }
    }
}

fn xml_escape(text: &str, out: &mut String) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// One event as an XML element (the form `xml_events::parse_events` reads back).
pub fn write_xml_event(ev: &Event, names: &[String], fmt: Option<&DateFormat>, out: &mut String) {
    out.push_str("<event opcode=\"");
    out.push_str(ev.opcode.name());
    out.push_str("\" flags=\"");
    out.push(ev.flags.letter().to_ascii_lowercase());
    out.push_str("\">");
    for (name, v) in names.iter().zip(&ev.row) {
        if v.is_null() {
            continue;
        }
        out.push('<');
        out.push_str(name);
        out.push('>');
        match v {
            sluice_event::Value::String(t) => xml_escape(t, out),
            other => {
                let mut text = String::new();
                csv::write_value(other, fmt, &mut text);
                xml_escape(&text, out);
            }
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
    out.push_str("</event>");
}

impl FsSubscriber {
    /// Creates (truncates) the output file of `spec`.
    pub fn open(
        spec: &ConnectorSpec,
        schema: &Schema,
        base: &Path,
    ) -> Result<FsSubscriber, ConnectorError> {
        let path = resolve_path(spec, base)?;
        let file = File::create(&path).map_err(|source| ConnectorError::Io {
            connector: spec.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        let mut out = BufWriter::new(file);
        let xml = match spec
            .prop("fstype")
            .unwrap_or("csv")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "csv" => None,
            "xml" => Some(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>(),
            ),
            other => {
                return Err(ConnectorError::Bad {
                    connector: spec.name.clone(),
                    property: "fstype".into(),
                    value: other.into(),
                    why: "supported for subscribers: csv, xml".into(),
                })
            }
        };
        let header = spec.prop("header").map(|h| h.trim().to_ascii_lowercase());
        let io_err = |source| ConnectorError::Io {
            connector: spec.name.clone(),
            path: path.display().to_string(),
            source,
        };
        if xml.is_some() {
            writeln!(out, "<events>").map_err(io_err)?;
        }
        match header.as_deref() {
            _ if xml.is_some() => {}
            Some("true") | Some("1") => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
                writeln!(out, "{}", names.join(",")).map_err(io_err)?;
            }
            Some("full") => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
                writeln!(out, "opcode,flags,{}", names.join(",")).map_err(io_err)?;
            }
            _ => {}
        }
        Ok(FsSubscriber {
            name: spec.name.clone(),
            out,
            dateformat: dateformat_of(spec)?,
            snapshot: spec.flag("snapshot", false),
            rmretdel: spec.flag("rmretdel", false),
            buf: String::new(),
            xml,
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes events: one CSV line each (an update is a single `U` line), or one `<event>`
    /// element per line inside `<events>` with `fstype=xml`.
    pub fn write(&mut self, events: &[Event]) -> std::io::Result<()> {
        for ev in events {
            if self.rmretdel
                && ev.flags == sluice_event::Flags::Retention
                && ev.opcode == sluice_event::Opcode::Delete
            {
                continue;
            }
            self.buf.clear();
            match &self.xml {
                Some(names) => write_xml_event(ev, names, self.dateformat.as_ref(), &mut self.buf),
                None => csv::write_event(ev, self.dateformat.as_ref(), &mut self.buf),
            }
            self.buf.push('\n');
            self.out.write_all(self.buf.as_bytes())?;
        }
        Ok(())
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
