//! Bad events through the runner (reference 2.7, docs/formats/bad-events.md): unreadable CSV
//! lines and refused events each reach the bad-events file with a reason, the rest of the
//! input goes on, and a transactional block with one bad event is refused whole.

use std::path::Path;

use sluice_runtime::{BadEvents, Runner};

const MODEL: &str = "<project name='p' pubsub='none'><contqueries><contquery name='cq'><windows>
<window-source name='s'><schema-string>k*:int64,x:int32</schema-string>
 <connectors><connector class='fs' name='pub'><properties>
  <property name='type'>pub</property><property name='fsname'>plain.csv</property>
 </properties></connector></connectors>
</window-source>
<window-source name='t'><schema-string>k*:int64,x:int32</schema-string>
 <connectors><connector class='fs' name='tpub'><properties>
  <property name='type'>pub</property><property name='fsname'>trans.csv</property>
  <property name='blocksize'>3</property><property name='transactional'>true</property>
 </properties></connector></connectors>
</window-source>
</windows><edges></edges></contquery></contqueries></project>";

/// Normal blocks of one event: a parse failure, a duplicate insert, an update and a delete
/// of missing keys, each between good lines.
const PLAIN: &str = "i,n,1,10
i,n,2,notanumber
i,n,1,11
u,n,5,50
i,n,3,30
d,n,6,
u,n,3,31
";

/// Blocks of three, transactional: the second block holds a delete of a missing key.
const TRANS: &str = "i,n,1,1
i,n,2,2
i,n,3,3
i,n,4,4
d,n,9,
i,n,5,5
i,n,6,6
";

fn rows(r: &Runner, w: &str) -> Vec<String> {
    let e = &r.engine;
    let id = e.window_by_path(w).expect("window");
    e.rows_sorted(id)
        .into_iter()
        .map(|row| {
            let mut s = String::new();
            sluice_event::csv::write_row(&row, None, &mut s);
            s
        })
        .collect()
}

fn run(dir: &Path) -> (Runner, u64, Vec<String>) {
    std::fs::write(dir.join("plain.csv"), PLAIN).unwrap();
    std::fs::write(dir.join("trans.csv"), TRANS).unwrap();
    let spec = sluice_model::parse_project(MODEL, &|_| None).expect("model parses");
    let bad_file = dir.join("bad.txt");
    let bad = BadEvents::open(Some(&bad_file)).unwrap();
    let mut r = Runner::new(&spec, dir, bad).expect("runner");
    let stats = r.run_to_end(&mut || 0).expect("run");
    let lines = std::fs::read_to_string(&bad_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (r, stats.bad, lines)
}

#[test]
fn every_bad_event_reaches_the_file_with_a_reason_and_the_input_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, bad, lines) = run(tmp.path());
    let plain: Vec<&String> = lines.iter().filter(|l| l.contains("p/cq/s")).collect();
    let expected_plain = [
        "connector=p/cq/s/pub line=2 reason=",
        "window=p/cq/s reason=\"duplicate insert: key 1 already exists\" event=I,N,1,11",
        "window=p/cq/s reason=\"update of missing key 5\" event=U,N,5,50",
        "window=p/cq/s reason=\"delete of missing key 6\" event=D,N,6,",
    ];
    assert_eq!(plain.len(), expected_plain.len(), "{lines:#?}");
    for (got, want) in plain.iter().zip(expected_plain) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
    assert!(
        plain[0].contains("notanumber"),
        "the parse failure names the text: {}",
        plain[0]
    );
    assert!(plain[0].ends_with("text=i,n,2,notanumber"), "{}", plain[0]);
    // The good events went in.
    assert_eq!(rows(&r, "cq/s"), vec!["1,10", "3,31"]);
    assert_eq!(bad as usize, lines.len(), "the run counts what it writes");
}

#[test]
fn a_transactional_block_with_a_bad_event_is_refused_whole_through_the_runner() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, _, lines) = run(tmp.path());
    let trans: Vec<&String> = lines.iter().filter(|l| l.contains("p/cq/t ")).collect();
    assert_eq!(trans.len(), 3, "the whole second block: {lines:#?}");
    for (l, ev) in trans.iter().zip(["I,N,4,4", "D,N,9,", "I,N,5,5"]) {
        assert!(
            l.contains("transactional block refused whole: event 2 of the block"),
            "{l}"
        );
        assert!(l.ends_with(&format!("event={ev}")), "{l}");
    }
    // Blocks one and three went in; block two not at all.
    assert_eq!(rows(&r, "cq/t"), vec!["1,1", "2,2", "3,3", "6,6"]);
}
