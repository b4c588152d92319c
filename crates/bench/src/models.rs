//! The project models of the workloads, as ESP XML. `@TRADES@`, `@SYMBOLS@` (file paths) and
//! `@BLOCKSIZE@` are substituted at load time, so each model also runs under `sluice run`:
//! `sluice run bench.xml --var TRADES=trades.csv --var BLOCKSIZE=64 --window cq/bySymbol`.

/// The trades fact stream: insert-only and stateless (`pi_EMPTY`).
const TRADES_SOURCE: &str = r#"        <window-source name='trades' insert-only='true' index='pi_EMPTY'>
          <schema>
            <fields>
              <field name='id' type='int64' key='true'/>
              <field name='symbol' type='string'/>
              <field name='price' type='double'/>
              <field name='quantity' type='int32'/>
            </fields>
          </schema>
          <connectors>
            <connector class='fs' name='pub'>
              <properties>
                <property name='type'>pub</property>
                <property name='fstype'>csv</property>
                <property name='fsname'>@TRADES@</property>
                <property name='blocksize'>@BLOCKSIZE@</property>
              </properties>
            </connector>
          </connectors>
        </window-source>
"#;

const AGGREGATE: &str = r#"        <window-aggregate name='bySymbol'>
          <schema>
            <fields>
              <field name='symbol' type='string' key='true'/>
              <field name='totalQuantity' type='int64'/>
              <field name='trades' type='int64'/>
              <field name='avgPrice' type='double'/>
              <field name='maxPrice' type='double'/>
            </fields>
          </schema>
          <output>
            <field-expr>ESP_aSum(quantity)</field-expr>
            <field-expr>ESP_aCount()</field-expr>
            <field-expr>ESP_aAve(price)</field-expr>
            <field-expr>ESP_aMax(price)</field-expr>
          </output>
        </window-aggregate>
      </windows>
      <edges>
        <edge source='trades' target='bySymbol'/>
      </edges>
"#;

const FILTER: &str = r#"        <window-filter name='bigTrades' index='pi_EMPTY'>
          <expression>quantity > 500</expression>
        </window-filter>
      </windows>
      <edges>
        <edge source='trades' target='bigTrades'/>
      </edges>
"#;

const COMPUTE: &str = r#"        <window-compute name='notional' index='pi_EMPTY'>
          <schema>
            <fields>
              <field name='id' type='int64' key='true'/>
              <field name='usymbol' type='string'/>
              <field name='notional' type='double'/>
            </fields>
          </schema>
          <output>
            <field-expr>upper(symbol)</field-expr>
            <field-expr>price * quantity</field-expr>
          </output>
        </window-compute>
      </windows>
      <edges>
        <edge source='trades' target='notional'/>
      </edges>
"#;

/// The dimension table comes first in the document, so `sluice run` loads it first.
const SYMBOLS_SOURCE: &str = r#"        <window-source name='symbols' index='pi_HASH'>
          <schema>
            <fields>
              <field name='symbol' type='string' key='true'/>
              <field name='sector' type='string'/>
              <field name='lotSize' type='int32'/>
            </fields>
          </schema>
          <connectors>
            <connector class='fs' name='pubSymbols'>
              <properties>
                <property name='type'>pub</property>
                <property name='fstype'>csv</property>
                <property name='fsname'>@SYMBOLS@</property>
                <property name='blocksize'>@BLOCKSIZE@</property>
              </properties>
            </connector>
          </connectors>
        </window-source>
"#;

const JOIN: &str = r#"        <window-join name='enriched'>
          <join type='leftouter' left-index='pi_EMPTY'>
            <conditions>
              <fields left='symbol' right='symbol'/>
            </conditions>
          </join>
          <output>
            <field-expr name='symbol' type='string'>l_symbol</field-expr>
            <field-expr name='price' type='double'>l_price</field-expr>
            <field-expr name='quantity' type='int32'>l_quantity</field-expr>
            <field-expr name='sector' type='string'>r_sector</field-expr>
            <field-expr name='lotSize' type='int32'>r_lotSize</field-expr>
          </output>
        </window-join>
      </windows>
      <edges>
        <edge source='trades' target='enriched'/>
        <edge source='symbols' target='enriched'/>
      </edges>
"#;

const HEAD: &str = r#"<project name='bench' pubsub='none' threads='1'>
  <contqueries>
    <contquery name='cq'>
      <windows>
"#;

const TAIL: &str = r#"    </contquery>
  </contqueries>
</project>
"#;

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Aggregate,
    Filter,
    Compute,
    Join,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Aggregate,
        Workload::Filter,
        Workload::Compute,
        Workload::Join,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Aggregate => "aggregate",
            Workload::Filter => "filter",
            Workload::Compute => "compute",
            Workload::Join => "join",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s.trim())
    }

    /// The window whose output is counted.
    pub fn output_window(self) -> &'static str {
        match self {
            Workload::Aggregate => "bySymbol",
            Workload::Filter => "bigTrades",
            Workload::Compute => "notional",
            Workload::Join => "enriched",
        }
    }

    /// The project XML, placeholders unresolved.
    pub fn model_xml(self) -> String {
        let mut s = String::from(HEAD);
        if self == Workload::Join {
            s.push_str(SYMBOLS_SOURCE);
        }
        s.push_str(TRADES_SOURCE);
        s.push_str(match self {
            Workload::Aggregate => AGGREGATE,
            Workload::Filter => FILTER,
            Workload::Compute => COMPUTE,
            Workload::Join => JOIN,
        });
        s.push_str(TAIL);
        s
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
