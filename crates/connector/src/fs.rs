//! The `fs` connector: CSV and XML event files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sluice_event::csv::{self, CsvParser};
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
    Csv(LineReader),
    /// XML files are parsed whole; the remaining blocks.
    Xml(std::vec::IntoIter<(bool, Vec<Event>)>),
}

/// Reads a CSV or XML event file into event blocks.
pub struct FsPublisher {
    name: String,
    path: PathBuf,
    blocksize: usize,
    transactional: bool,
    ignore_parse_errors: bool,
    max_events: Option<u64>,
    input: Input,
    /// Lines read so far (the input position).
    lines: u64,
    events: u64,
    blocks: u64,
    parser: CsvParser,
}

/// The error `BufRead::read_line` gives for a line that is not UTF-8.
fn not_utf8() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "stream did not contain valid UTF-8",
    )
}

/// Reads a file line by line into one large buffer and hands out the lines in place (no copy
/// per line). Lines are split as `BufRead::read_line` splits them: after each `\n`, the last
/// one ending at the end of the file.
struct LineReader {
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` holds no `\n`.
    scanned: usize,
}

/// The position of the first `\n` in `b`.
#[inline]
fn find_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

impl LineReader {
    fn new(src: Box<dyn Read + Send>, capacity: usize) -> LineReader {
        LineReader {
            src,
            buf: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
            scanned: 0,
        }
    }

    /// The next line with its `\n` (absent on a last line without one); `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        loop {
            if let Some(p) = find_newline(&self.buf[self.scanned..self.end]) {
                let line = self.start..self.scanned + p + 1;
                self.start = line.end;
                self.scanned = line.end;
                return Ok(Some(&self.buf[line]));
            }
            // No line end buffered: keep the partial line, move it to the front and read more.
            self.scanned = self.end - self.start;
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.src.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                self.scanned = self.end;
                return Ok(Some(&self.buf[line]));
            }
            self.end += n;
        }
    }
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
        let input = match fstype.as_str() {
            "csv" => {
                let mut reader = LineReader::new(Box::new(file), 64 << 10);
                for _ in 0..header {
                    // As before: a header line that cannot be read is skipped all the same.
                    if let Ok(None) = reader.next_line() {
                        break;
                    }
                }
                Input::Csv(reader)
            }
            "xml" => {
                let mut text = String::new();
                BufReader::with_capacity(1 << 20, file)
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
        let parser = CsvParser::new(schema, &opts);
        Ok(FsPublisher {
            name: spec.name.clone(),
            path,
            blocksize,
            transactional: spec.flag("transactional", false),
            ignore_parse_errors: spec.flag("ignorecsvparseerrors", false),
            max_events: prop_u64(spec, "maxevents")?,
            input,
            lines: header,
            events: 0,
            blocks: 0,
            parser,
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
                    let Some(line) = reader.next_line()? else {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "{} has {} lines, the snapshot's position is line {position}",
                                self.path.display(),
                                self.lines
                            ),
                        ));
                    };
                    if std::str::from_utf8(line).is_err() {
                        return Err(not_utf8());
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
                // Room for the whole block up front (at most 1024 events: a huge blocksize
                // grows the vector as it fills). The batch is built from its parts at the end
                // (a batch built first and filled in was copied out of the loop with narrow
                // stores read back as wide loads, which stalled at blocksize 1).
                let mut events = Vec::with_capacity(self.blocksize.min(1024));
                let mut bad = Vec::new();
                while events.len() < self.blocksize {
                    if self.max_events.is_some_and(|m| self.events >= m) {
                        break;
                    }
                    let Some(bytes) = reader.next_line()? else {
                        break;
                    };
                    // Fast path: a line that starts with a visible ASCII character (so it is
                    // not blank) and parses plainly (which checks that it is UTF-8).
                    let end = bytes
                        .iter()
                        .rposition(|&c| c != b'\n' && c != b'\r')
                        .map_or(0, |p| p + 1);
                    if bytes.first().is_some_and(|c| c.is_ascii_graphic())
                        && self.parser.parse_plain_into(&bytes[..end], &mut events)
                    {
                        self.lines += 1;
                        self.events += 1;
                        continue;
                    }
                    // As `read_line` did: a line that is not UTF-8 is an error of the read.
                    let text = std::str::from_utf8(bytes).map_err(|_| not_utf8())?;
                    self.lines += 1;
                    let line = text.trim_end_matches(['\n', '\r']);
                    if line.trim().is_empty() {
                        continue;
                    }
                    match self.parser.parse(line) {
                        Ok(ev) => {
                            self.events += 1;
                            events.push(ev);
                        }
                        Err(e) => {
                            if !self.ignore_parse_errors {
                                bad.push(BadLine {
                                    line: self.lines,
                                    text: line.to_string(),
                                    reason: e.to_string(),
                                });
                            }
                        }
                    }
                }
                if events.is_empty() && bad.is_empty() {
                    return Ok(None);
                }
                self.blocks += 1;
                Ok(Some(PubBatch {
                    block: EventBlock {
                        // The ID is the input position after the block (its last line): it
                        // survives a restore, which resumes from that position.
                        id: MsgId(self.lines),
                        transactional: self.transactional,
                        events,
                    },
                    bad,
                }))
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

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicU64, Ordering};

    use sluice_event::csv::CsvOptions;
    use sluice_model::ConnectorDirection;

    use super::*;

    fn spec(path: &Path, props: &[(&str, &str)]) -> ConnectorSpec {
        let mut properties = vec![
            ("type".to_string(), "pub".to_string()),
            ("fsname".to_string(), path.display().to_string()),
        ];
        properties.extend(props.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ConnectorSpec {
            class: "fs".into(),
            name: "pub".into(),
            direction: ConnectorDirection::Publish,
            active: true,
            properties,
            line: 0,
        }
    }

    fn temp_file(bytes: &[u8]) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-fs-test-{}-{}.csv",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    type Outcome = Result<(u64, Vec<Event>, Vec<BadLine>), String>;

    /// What the publisher read before its line scanner: `read_line` into a `String` and
    /// `csv::parse_event` on each line.
    fn reference(
        bytes: &[u8],
        schema: &Schema,
        opts: &CsvOptions,
        header: u64,
        blocksize: usize,
    ) -> Vec<Outcome> {
        let mut reader = std::io::BufReader::with_capacity(7, bytes);
        let mut skip = String::new();
        for _ in 0..header {
            skip.clear();
            let _ = reader.read_line(&mut skip);
        }
        let mut lines = header;
        let mut out = Vec::new();
        let mut buf = String::new();
        'blocks: loop {
            let mut events = Vec::new();
            let mut bad = Vec::new();
            while events.len() < blocksize {
                buf.clear();
                match reader.read_line(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        out.push(Err(format!("{:?}: {e}", e.kind())));
                        continue 'blocks;
                    }
                }
                lines += 1;
                let line = buf.trim_end_matches(['\n', '\r']);
                if line.trim().is_empty() {
                    continue;
                }
                match csv::parse_event(line, schema, opts) {
                    Ok(ev) => events.push(ev),
                    Err(e) => bad.push(BadLine {
                        line: lines,
                        text: line.to_string(),
                        reason: e.to_string(),
                    }),
                }
            }
            if events.is_empty() && bad.is_empty() {
                return out;
            }
            out.push(Ok((lines, events, bad)));
        }
    }

    fn published(path: &Path, schema: &Schema, props: &[(&str, &str)]) -> Vec<Outcome> {
        let mut p = FsPublisher::open(&spec(path, props), schema, None, Path::new("/")).unwrap();
        let mut out = Vec::new();
        loop {
            match p.next_batch() {
                Ok(None) => return out,
                Ok(Some(b)) => {
                    assert_eq!(b.block.id, MsgId(p.position()));
                    out.push(Ok((b.block.id.0, b.block.events, b.bad)))
                }
                Err(e) => out.push(Err(format!("{:?}: {e}", e.kind()))),
            }
        }
    }

    fn same_as_reference(bytes: &[u8], schema: &Schema) {
        let path = temp_file(bytes);
        for (header, blocksize) in [(0, 1), (0, 3), (1, 1), (2, 64)] {
            let (h, b) = (header.to_string(), blocksize.to_string());
            let got = published(&path, schema, &[("header", &h), ("blocksize", &b)]);
            let want = reference(bytes, schema, &CsvOptions::new(), header, blocksize);
            assert_eq!(
                got,
                want,
                "header {header}, blocksize {blocksize}: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        std::fs::remove_file(path).unwrap();
    }

    fn trades() -> Schema {
        Schema::parse_schema_string("id*:int64,symbol:string,price:double,quantity:int32").unwrap()
    }

    #[test]
    fn csv_lines_read_as_read_line_read_them() {
        let s = trades();
        for text in [
            &b""[..],
            b"\n",
            b"\n\n\r\n",
            b"i,n,1,A,1.5,2",
            b"i,n,1,A,1.5,2\n",
            b"i,n,1,A,1.5,2\r\n",
            b"i,n,1,A,1.5,2\r\ni,n,2,B,2.5,3\r\n",
            b"i,n,1,A,1.5,2\ni,n,2,B,2.5,3",
            b"i,n,1,A,1.5,2\r\r\n\r\ni,n,2,B,2.5,3\r",
            b"id,symbol,price,quantity\ni,n,1,A,1.5,2\n   \n\t\ni,n,2,B,2.5,3\n",
            b"i,n,1,A,1.5,2\ni,n,x,B,2.5,3\ni,n,3,C,3.5\ni,n,4,\"D,E\",4.5,5\n",
            b"i,n,1,A,1.5,2\n i,n,2,B,2.5,3\ni,n,3,\xc3\xa9t\xc3\xa9,3.5,4\n",
            b"i,n,1,A,1.5,2\ni,n,2,\xff,2.5,3\ni,n,3,C,3.5,4\n",
            b"i,n,1,A,1.5,2\ni,n,\xff2,B,2.5,3\ni,n,3,C,3.5,4\n",
            b"\xff\ni,n,1,A,1.5,2\n",
            b"i,n,1,A,1.5,2\n\xc2\xa0\ni,n,3,C,3.5,4\n",
            b"i,n,1,A,1.5,2\ni,n,2,B,2.5,3\ni,n,3,C,3.5,4\ni,n,4,D,4.5,5\ni,n,5,E,5.5,6\n",
        ] {
            same_as_reference(text, &s);
        }
    }

    #[test]
    fn random_files_read_as_read_line_read_them() {
        let s = trades();
        let pieces: [&[u8]; 14] = [
            b"i,n,1,A,1.5,2",
            b"i,n,22,SYM0042,123.45,300",
            b"d,n,3",
            b"i,n,x,A,1,2",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
            b",",
            b"\"",
            b"\xc3\xa9",
            b"\xff",
            b"\xc3",
            b"i,n,",
        ];
        let mut x = 11u64;
        for _ in 0..300 {
            let mut text = Vec::new();
            for _ in 0..40 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.extend_from_slice(pieces[(x >> 33) as usize % pieces.len()]);
            }
            same_as_reference(&text, &s);
        }
    }

    #[test]
    fn lines_longer_than_the_buffer_are_read_whole() {
        let long = "x".repeat(100);
        let text = format!("a\n{long}\n\nb{long}\r\nlast");
        let mut r = LineReader::new(Box::new(std::io::Cursor::new(text.clone().into_bytes())), 4);
        let mut got = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            got.push(String::from_utf8(l.to_vec()).unwrap());
        }
        let want: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_newline_search_finds_the_first_at_any_length() {
        for len in 0..200usize {
            for p in (0..len).step_by(3).map(Some).chain([None]) {
                let mut text = vec![b'a'; len];
                if let Some(p) = p {
                    text[p] = b'\n';
                    if p + 5 < len {
                        text[p + 5] = b'\n';
                    }
                }
                assert_eq!(find_newline(&text), p, "{len} {p:?}");
            }
        }
    }

    #[test]
    fn the_line_scanner_splits_as_split_inclusive() {
        let mut x = 5u64;
        for _ in 0..2000 {
            let mut text = Vec::new();
            for _ in 0..(x >> 60) * 8 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.push(b"ab\n\r,\x8a\x0a\xff"[(x >> 33) as usize % 8]);
            }
            assert_eq!(
                find_newline(&text),
                text.iter().position(|&c| c == b'\n'),
                "{text:?}"
            );
            let capacity = 1 + (x >> 40) as usize % 20;
            let mut r = LineReader::new(Box::new(std::io::Cursor::new(text.clone())), capacity);
            let mut got = Vec::new();
            while let Some(l) = r.next_line().unwrap() {
                got.push(l.to_vec());
            }
            let want: Vec<Vec<u8>> = text
                .split_inclusive(|&c| c == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            assert_eq!(got, want, "{text:?} with a buffer of {capacity}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error_and_the_position_stays() {
        let s = trades();
        let path = temp_file(b"i,n,1,A,1.5,2\ni,n,2,B\xff,2.5,3\ni,n,3,C,3.5,4\n");
        let mut p = FsPublisher::open(&spec(&path, &[]), &s, None, Path::new("/")).unwrap();
        assert_eq!(p.next_batch().unwrap().unwrap().block.events.len(), 1);
        let e = p.next_batch().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "stream did not contain valid UTF-8");
        assert_eq!(p.position(), 1);
        let b = p.next_batch().unwrap().unwrap();
        assert_eq!(b.block.id, MsgId(2));
        assert_eq!(b.block.events[0].row[0], sluice_event::Value::Int64(3));
        // Skipping over it fails the same way.
        let mut q = FsPublisher::open(&spec(&path, &[]), &s, None, Path::new("/")).unwrap();
        assert_eq!(
            q.skip_to(2).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn skip_to_and_maxevents() {
        let s = trades();
        let path = temp_file(b"h\ni,n,1,A,1.5,2\n\ni,n,3,C,3.5,4\ni,n,4,D,4.5,5\n");
        let mut p = FsPublisher::open(
            &spec(&path, &[("header", "1"), ("maxevents", "1")]),
            &s,
            None,
            Path::new("/"),
        )
        .unwrap();
        p.skip_to(3).unwrap();
        let b = p.next_batch().unwrap().unwrap();
        assert_eq!(b.block.id, MsgId(4));
        assert_eq!(b.block.events[0].row[0], sluice_event::Value::Int64(3));
        assert!(p.next_batch().unwrap().is_none());
        let mut q = FsPublisher::open(&spec(&path, &[]), &s, None, Path::new("/")).unwrap();
        let e = q.skip_to(6).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("has 5 lines"), "{e}");
        std::fs::remove_file(path).unwrap();
    }
}
