//! Every model of the shared corpus loads; selected facts about several; write→parse round trip.

use std::path::{Path, PathBuf};

use sluice_model::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../corpus");

fn no_vars(_: &str) -> Option<String> {
    None
}

fn test_vars(name: &str) -> Option<String> {
    (name == "ESPTESTDATA").then(|| "/data/esp".to_string())
}

/// All model files: esppy/*.xml except the event data file, plus ha-kafka/kafka1.xml.
fn model_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPUS).join("esppy"))
        .expect("corpus/esppy")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .filter(|p| !p.ends_with("xml_connector_publisher_data.xml"))
        .collect();
    files.sort();
    files.push(Path::new(CORPUS).join("ha-kafka/kafka1.xml"));
    files
}

fn load(rel: &str) -> ProjectSpec {
    let text = std::fs::read_to_string(Path::new(CORPUS).join(rel)).unwrap();
    match parse_project(&text, &test_vars) {
        Ok(p) => p,
        Err(d) => panic!("{rel}: {d:?}"),
    }
}

fn window<'a>(p: &'a ProjectSpec, name: &str) -> &'a WindowSpec {
    p.contqueries
        .iter()
        .flat_map(|c| &c.windows)
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no window {name}"))
}

fn strip_lines(n: &mut XmlNode) {
    n.line = 0;
    n.children.iter_mut().for_each(strip_lines);
}

#[test]
fn every_corpus_model_parses_and_round_trips() {
    let files = model_files();
    assert_eq!(files.len(), 26, "25 esppy models + kafka1.xml");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let projects =
            parse_models(&text, &no_vars).unwrap_or_else(|d| panic!("{}: {d:?}", f.display()));
        assert_eq!(projects.len(), 1, "{}", f.display());
        let p = &projects[0];
        assert!(validate(p).is_empty());
        for cq in &p.contqueries {
            assert_eq!(topo_order(cq).len(), cq.windows.len());
        }
        // Round trip: the written project re-parses to an equal node tree and equal specs
        // (lines aside).
        let written = write_xml(&p.node);
        let again = parse_project(&written, &no_vars)
            .unwrap_or_else(|d| panic!("{} (written): {d:?}\n{written}", f.display()));
        let (mut a, mut b) = (p.node.clone(), again.node.clone());
        strip_lines(&mut a);
        strip_lines(&mut b);
        assert_eq!(a, b, "{}", f.display());
        assert_eq!(write_xml(&again.node), written, "{}", f.display());
        assert_eq!(p.name, again.name);
        assert_eq!(p.contqueries.len(), again.contqueries.len());
        for (c1, c2) in p.contqueries.iter().zip(&again.contqueries) {
            let kinds = |c: &ContQuerySpec| -> Vec<WindowKind> {
                c.windows
                    .iter()
                    .map(|w| strip_kind(w.kind.clone()))
                    .collect()
            };
            assert_eq!(kinds(c1), kinds(c2), "{}", f.display());
            let ends = |c: &ContQuerySpec| -> Vec<(String, String, Option<i32>)> {
                c.edges
                    .iter()
                    .map(|e| (e.source.clone(), e.target.clone(), e.slot))
                    .collect()
            };
            assert_eq!(ends(c1), ends(c2));
        }
    }
}

fn strip_kind(k: WindowKind) -> WindowKind {
    match k {
        WindowKind::Filter { expression, .. } => WindowKind::Filter {
            expression,
            line: 0,
        },
        WindowKind::Compute { field_exprs } => WindowKind::Compute {
            field_exprs: field_exprs.into_iter().map(|(e, _)| (e, 0)).collect(),
        },
        WindowKind::Aggregate { field_exprs } => WindowKind::Aggregate {
            field_exprs: field_exprs.into_iter().map(|(e, _)| (e, 0)).collect(),
        },
        WindowKind::Join(mut j) => {
            for o in &mut j.outputs {
                match o {
                    JoinOutputSpec::Expr { line, .. }
                    | JoinOutputSpec::Selection { line, .. }
                    | JoinOutputSpec::Select { line, .. } => *line = 0,
                }
            }
            WindowKind::Join(j)
        }
        other => other,
    }
}

#[test]
fn event_data_file_is_not_a_model() {
    let text =
        std::fs::read_to_string(Path::new(CORPUS).join("esppy/xml_connector_publisher_data.xml"))
            .unwrap();
    let d = parse_models(&text, &no_vars).unwrap_err();
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message
            .contains("expected <engine> or <project> root, found <events>"),
        "{d:?}"
    );
    assert_eq!(d[0].line, 1);
}

#[test]
fn join_model() {
    let p = load("esppy/join_exp_model.xml");
    assert_eq!(p.name, "join_exp_xml");
    assert_eq!(p.pubsub.as_deref(), Some("auto"));
    assert_eq!(p.threads, Some(1));
    assert_eq!(p.heartbeat_interval_secs, 1);
    let cq = &p.contqueries[0];
    assert_eq!(cq.name, "contquery_01");
    assert_eq!(cq.windows.len(), 3);
    let s1 = window(&p, "sourceWindow_01");
    assert_eq!(s1.index, Some(IndexKind::Hash));
    assert_eq!(s1.pubsub, Some(true));
    assert!(s1.collapse_updates);
    assert_eq!(
        s1.schema.as_ref().unwrap().to_string(),
        "ID*:int32,symbol:string,quantity:int32,price:double,traderID:int32"
    );
    let c = &s1.connectors[0];
    assert_eq!(c.name, "pub1");
    assert_eq!(c.class, "fs");
    assert_eq!(c.direction, ConnectorDirection::Publish);
    assert!(c.active);
    assert_eq!(c.prop("fsname"), Some("/data/esp/join_exp_data1.csv"));
    assert!(c.flag("transactional", false));
    let j = window(&p, "joinWindow_01");
    assert_eq!(j.element, "window-join");
    assert!(j.schema.is_none());
    let WindowKind::Join(js) = &j.kind else {
        panic!("{:?}", j.kind)
    };
    assert_eq!(js.join_type, JoinType::LeftOuter);
    assert!(!js.no_regenerates);
    assert_eq!(
        js.conditions,
        vec![("traderID".to_string(), "traderID".to_string())]
    );
    assert_eq!(js.outputs.len(), 4);
    match &js.outputs[3] {
        JoinOutputSpec::Expr { name, ty, expr, .. } => {
            assert_eq!(name, "traderName");
            assert_eq!(*ty, sluice_event::FieldType::String);
            assert_eq!(expr, "r_name");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(j.connectors[0].direction, ConnectorDirection::Subscribe);
    assert_eq!(j.connectors[0].prop("fsname"), Some("output.csv"));
    assert_eq!(cq.edges.len(), 2);
    assert_eq!(cq.edges[0].source, "sourceWindow_01");
    assert_eq!(topo_order(cq), vec![0, 1, 2]);
    // project-connectors
    assert_eq!(p.connector_groups.len(), 2);
    assert_eq!(p.connector_groups[0].name, "pub");
    assert_eq!(
        p.connector_groups[0].entries[0],
        (
            "contquery_01/sourceWindow_01/pub1".to_string(),
            "finished".to_string()
        )
    );
    assert_eq!(
        p.connector_group_edges,
        vec![("sub".to_string(), "pub".to_string())]
    );
}

#[test]
fn placeholders_left_when_unresolved() {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("esppy/join_exp_model.xml")).unwrap();
    let p = parse_project(&text, &no_vars).unwrap();
    assert_eq!(
        window(&p, "sourceWindow_01").connectors[0].prop("fsname"),
        Some("@ESPTESTDATA@/join_exp_data1.csv")
    );
}

#[test]
fn splitter_udf_model_slots_and_init() {
    let p = load("esppy/splitter_udf_model.xml");
    let cq = &p.contqueries[0];
    assert_eq!(cq.windows.len(), 5);
    let slots: Vec<(&str, Option<i32>)> = cq
        .edges
        .iter()
        .map(|e| (e.target.as_str(), e.slot))
        .collect();
    assert_eq!(
        slots,
        vec![
            ("computeWindow", None),
            ("computeWindowSlot_01", Some(0)),
            ("computeWindowSlot_02", Some(1)),
            ("computeWindowSlot_03", Some(-1)),
        ]
    );
    let c = window(&p, "computeWindow");
    let sp = c.splitter.as_ref().unwrap();
    assert_eq!(sp.expression, "udf1(ID)");
    let udf = &sp.init.as_ref().unwrap().udfs[0];
    assert_eq!(udf.name, "udf1");
    assert_eq!(udf.ty, sluice_event::FieldType::Int32);
    assert!(udf.code.starts_with("private integer p"), "{}", udf.code);
    assert!(udf.code.ends_with("return p%2"), "{}", udf.code);
    let init = c.expr_init.as_ref().unwrap().initializer.as_ref().unwrap();
    assert_eq!(init.ty, Some(sluice_event::FieldType::Int32));
    assert!(init.code.starts_with("integer counter"));
    let WindowKind::Compute { field_exprs } = &c.kind else {
        panic!()
    };
    let exprs: Vec<&str> = field_exprs.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        exprs,
        vec!["counter=counter+1 return counter", "symbol", "price"]
    );
    assert_eq!(c.schema.as_ref().unwrap().key_indices(), &[0]);
    for n in ["computeWindowSlot_01", "computeWindowSlot_02"] {
        assert_eq!(window(&p, n).kind, WindowKind::Copy);
    }
    // Lines: the compute window element and its first field-expr.
    let text =
        std::fs::read_to_string(Path::new(CORPUS).join("esppy/splitter_udf_model.xml")).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1;
    assert_eq!(c.line, line_of("<window-compute name='computeWindow'"));
    assert_eq!(
        field_exprs[0].1,
        line_of("counter=counter+1 return counter")
    );
    assert_eq!(sp.line, line_of("<splitter-expr>"));
    assert_eq!(cq.edges[3].line, line_of("slot='-1'"));
}

#[test]
fn retention_amounts_in_microseconds() {
    let p = load("esppy/retention_model.xml");
    let r = window(&p, "copy_win").retention.clone().unwrap();
    assert_eq!(r.kind, RetentionKind::ByTimeSliding);
    assert_eq!(r.amount, 300_000_000);
    assert_eq!(r.field.as_deref(), Some("time"));
    let v = load("esppy/vwap_model.xml");
    let amounts: Vec<u64> = v.contqueries[0]
        .windows
        .iter()
        .filter_map(|w| w.retention.as_ref().map(|r| r.amount))
        .collect();
    assert_eq!(amounts, vec![300_000_000, 3_600_000_000, 86_400_000_000]);
    let f = load("esppy/filter_on_flag_model.xml");
    let r = f.contqueries[0]
        .windows
        .iter()
        .find_map(|w| w.retention.clone())
        .unwrap();
    assert_eq!(r.kind, RetentionKind::ByCountSliding);
    assert_eq!(r.amount, 2);
    assert_eq!(r.field, None);
    let k = load("ha-kafka/kafka1.xml");
    let r = window(&k, "Save_30_Min").retention.clone().unwrap();
    assert_eq!(
        (r.kind, r.amount),
        (RetentionKind::ByTimeSliding, 1_800_000_000)
    );
}

#[test]
fn kafka1_model() {
    let p = load("ha-kafka/kafka1.xml");
    assert_eq!(p.name, "kafka1");
    assert_eq!(p.threads, Some(2));
    assert_eq!(p.heartbeat_interval_secs, 1);
    let cq = &p.contqueries[0];
    assert_eq!(cq.windows.len(), 5);
    let src = window(&p, "kafka_incoming");
    assert_eq!(
        src.kind,
        WindowKind::Source {
            insert_only: true,
            autogen_key: true
        }
    );
    assert_eq!(src.index, Some(IndexKind::Empty));
    let c = &src.connectors[0];
    assert_eq!(c.class, "kafka");
    assert_eq!(c.direction, ConnectorDirection::Publish);
    assert_eq!(c.prop("kafkapartition"), Some("0"));
    assert_eq!(
        c.prop("kafkatopic"),
        Some("iotdemo.na.sas.com_61001.kafka1.cq1.kafka_incoming.I")
    );
    assert_eq!(c.prop("dateformat"), Some("'%Y-%m-%d %H:%M:%S"));
    let out = window(&p, "kafka_outgoing");
    let init = out
        .expr_init
        .as_ref()
        .unwrap()
        .initializer
        .as_ref()
        .unwrap();
    assert_eq!(init.ty, Some(sluice_event::FieldType::Int64));
    assert_eq!(init.code, "");
    assert!(out.connectors[0].flag("hotfailover", false));
    assert_eq!(
        window(&p, "sum20").kind,
        WindowKind::Unsupported {
            reason: "window-calculate is not supported".into()
        }
    );
    assert!(window(&p, "sum20").schema.is_some());
    assert_eq!(
        window(&p, "func_eventNumber").kind,
        WindowKind::Unsupported {
            reason: "window-functional is not supported".into()
        }
    );
    assert_eq!(cq.edges[3].role.as_deref(), Some("data"));
    let order: Vec<&str> = topo_order(cq)
        .into_iter()
        .map(|i| cq.windows[i].name.as_str())
        .collect();
    assert_eq!(
        order,
        vec![
            "kafka_incoming",
            "Save_30_Min",
            "func_eventNumber",
            "sum20",
            "kafka_outgoing"
        ]
    );
    // metadata kept in the node
    let meta = p.node.child("metadata").unwrap();
    assert_eq!(meta.children.len(), 5);
    assert_eq!(meta.children[0].attr("id"), Some("studioUploadedBy"));
    assert_eq!(
        p.node.child("description").unwrap().text,
        "Test incoming and outgoing msg to kafka"
    );
}

#[test]
fn window_kinds_across_corpus() {
    let u = load("esppy/union_model.xml");
    let uw = u.contqueries[0]
        .windows
        .iter()
        .find(|w| w.element == "window-union")
        .unwrap();
    assert_eq!(uw.kind, WindowKind::Union { strict: true });

    let s = load("esppy/sub_data_csv_model.xml");
    let cq = &s.contqueries[0];
    assert_eq!(
        window(&s, "count").kind,
        WindowKind::Unsupported {
            reason: "window-counter is not supported".into()
        }
    );
    assert_eq!(
        window(&s, "src_win").schema.as_ref().unwrap().len(),
        12,
        "schema-string"
    );
    assert_eq!(cq.edges.len(), 2);

    let f = load("esppy/filter_exp_model.xml");
    let fw = f.contqueries[0]
        .windows
        .iter()
        .find(|w| w.element == "window-filter")
        .unwrap();
    let WindowKind::Filter { expression, .. } = &fw.kind else {
        panic!("{:?}", fw.kind)
    };
    assert_eq!(expression, "quant > 1000");

    let a = load("esppy/aggregate_exp_model.xml");
    let aw = a.contqueries[0]
        .windows
        .iter()
        .find(|w| w.element == "window-aggregate")
        .unwrap();
    let WindowKind::Aggregate { field_exprs } = &aw.kind else {
        panic!()
    };
    assert!(field_exprs.iter().all(|(e, _)| e.starts_with("ESP_a")));

    let cw = load("esppy/compute_field_expression.xml");
    let conns: Vec<(&str, ConnectorDirection)> = cw.contqueries[0]
        .windows
        .iter()
        .flat_map(|w| &w.connectors)
        .map(|c| (c.name.as_str(), c.direction))
        .collect();
    assert!(conns.contains(&("sub", ConnectorDirection::Subscribe)));
    assert!(conns.contains(&("pub", ConnectorDirection::Publish)));
}
