//! The bad-events file (`--badevents FILE`): one line per refused event or unreadable input
//! line, with the reason, so nothing is lost quietly. Format (docs/formats/bad-events.md):
//!
//! ```text
//! window=p/cq/w reason="duplicate insert: key 10 already exists" event=I,N,10,ibm,2000,164.1
//! connector=p/cq/w/pub line=7 reason="field 'quant' (int32): cannot read 'x'" text=i,n,1,a,x,4
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use sluice_event::Event;

/// Where refused events go. Always counts; writes when a file is given.
#[derive(Default)]
pub struct BadEvents {
    file: Option<BufWriter<File>>,
    count: u64,
    /// The last few lines, for status reports.
    pub recent: std::collections::VecDeque<String>,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl BadEvents {
    /// Appends to `path` when given.
    pub fn open(path: Option<&Path>) -> std::io::Result<BadEvents> {
        let file = match path {
            Some(p) => Some(BufWriter::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(BadEvents {
            file,
            count: 0,
            recent: Default::default(),
        })
    }

    fn push(&mut self, line: String) {
        self.count += 1;
        if let Some(f) = &mut self.file {
            // A failing bad-events file must not stop processing; the count still moves.
            let _ = writeln!(f, "{line}");
        }
        if self.recent.len() == 100 {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Records an event a window refused.
    pub fn event(&mut self, window: &str, ev: &Event, reason: &str) {
        let mut text = String::new();
        sluice_event::csv::write_event(ev, None, &mut text);
        self.push(format!(
            "window={window} reason={} event={text}",
            quote(reason)
        ));
    }

    /// Records an input line that could not become an event.
    pub fn line(&mut self, connector: &str, line: u64, text: &str, reason: &str) {
        self.push(format!(
            "connector={connector} line={line} reason={} text={text}",
            quote(reason)
        ));
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes the file.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}
