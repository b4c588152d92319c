//! Deterministic generated data: trades over 1,000 symbols and the symbol dimension table.
//!
//! The same seed gives the same trades in memory and in the CSV file, so the engine-alone,
//! end-to-end and baseline measurements all see identical input.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use sluice_event::{Event, EventBlock, MsgId, Value};

/// Number of distinct symbols.
pub const SYMBOLS: usize = 1000;
/// Seed of the trade generator.
pub const SEED: u64 = 0x5EED_2026_1126;
/// Trades with a quantity above this pass the filter workload.
pub const FILTER_QUANTITY: i32 = 500;

/// SplitMix64: small, fast, and good enough for benchmark data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One generated trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    pub id: i64,
    /// Index into the symbol table.
    pub sym: u16,
    /// Price in cents (the CSV carries two decimals).
    pub price_cents: u32,
    pub quantity: i32,
}

impl Trade {
    /// The price as the engine and the baselines read it (`"123.45"` parses to the same double).
    pub fn price(&self) -> f64 {
        self.price_cents as f64 / 100.0
    }
}

/// The trades `1..=n`, in order.
#[derive(Clone, Debug)]
pub struct Trades {
    rng: Rng,
    next: i64,
    n: u64,
}

impl Trades {
    pub fn new(n: u64) -> Trades {
        Trades {
            rng: Rng::new(SEED),
            next: 1,
            n,
        }
    }
}

impl Iterator for Trades {
    type Item = Trade;

    fn next(&mut self) -> Option<Trade> {
        if self.next as u64 > self.n {
            return None;
        }
        let id = self.next;
        self.next += 1;
        let sym = self.rng.below(SYMBOLS as u64) as u16;
        let price_cents = 1_000 + self.rng.below(99_000) as u32;
        let quantity = 1 + self.rng.below(1_000) as i32;
        Some(Trade {
            id,
            sym,
            price_cents,
            quantity,
        })
    }
}

/// The name of symbol `i` (`SYM0042`).
pub fn symbol_name(i: usize) -> String {
    format!("SYM{i:04}")
}

/// One row of the symbol dimension table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolRow {
    pub symbol: String,
    pub sector: String,
    pub lot_size: i32,
}

/// The dimension table: every symbol, with a sector and a lot size.
pub fn symbol_rows() -> Vec<SymbolRow> {
    (0..SYMBOLS)
        .map(|i| SymbolRow {
            symbol: symbol_name(i),
            sector: format!("SECTOR{:02}", i % 20),
            lot_size: 100 * (1 + (i % 10) as i32),
        })
        .collect()
}

/// Appends `i,n,id,symbol,price,quantity` (no newline).
pub fn trade_line(t: &Trade, out: &mut String) {
    let _ = write!(
        out,
        "i,n,{},SYM{:04},{}.{:02},{}",
        t.id,
        t.sym,
        t.price_cents / 100,
        t.price_cents % 100,
        t.quantity
    );
}

/// Writes the first `n` trades as fs-connector CSV; returns the file size in bytes.
pub fn write_trades_csv(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = String::new();
    let mut bytes = 0u64;
    for t in Trades::new(n) {
        line.clear();
        trade_line(&t, &mut line);
        line.push('\n');
        bytes += line.len() as u64;
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(bytes)
}

/// Writes the symbol dimension table as fs-connector CSV.
pub fn write_symbols_csv(path: &Path) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for r in symbol_rows() {
        writeln!(out, "i,n,{},{},{}", r.symbol, r.sector, r.lot_size)?;
    }
    out.flush()
}

/// The symbol names as shared string values (the in-memory events reuse them).
pub fn symbol_values() -> Vec<Arc<str>> {
    (0..SYMBOLS).map(|i| Arc::from(symbol_name(i))).collect()
}

/// A trade as an insert event of the trades schema `id*:int64,symbol:string,price:double,quantity:int32`.
pub fn trade_event(t: &Trade, symbols: &[Arc<str>]) -> Event {
    Event::insert(vec![
        Value::Int64(t.id),
        Value::String(symbols[t.sym as usize].clone()),
        Value::Double(t.price()),
        Value::Int32(t.quantity),
    ])
}

/// The dimension table as one block of insert events (`symbol*:string,sector:string,lotSize:int32`).
pub fn symbol_block() -> EventBlock {
    let events = symbol_rows()
        .into_iter()
        .map(|r| {
            Event::insert(vec![
                Value::str(&r.symbol),
                Value::str(&r.sector),
                Value::Int32(r.lot_size),
            ])
        })
        .collect();
    EventBlock::new(MsgId(0), events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_price_parses_to_the_in_memory_double() {
        for t in Trades::new(10_000) {
            let mut s = String::new();
            trade_line(&t, &mut s);
            let price: f64 = s.split(',').nth(4).unwrap().parse().unwrap();
            assert_eq!(price, t.price(), "{s}");
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let a: Vec<Trade> = Trades::new(100).collect();
        let b: Vec<Trade> = Trades::new(100).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(|t| (1..=1000).contains(&t.quantity)));
    }
}
