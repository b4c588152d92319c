//! The hand-written baselines: what a single-purpose program does for each workload. They
//! parse the same CSV by hand and keep plain hash maps; every output row is materialised and
//! handed to `black_box`, so the optimiser cannot drop the work the engine has to do.

use std::hint::black_box;
use std::io::BufRead;
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::data::{symbol_rows, FILTER_QUANTITY};
use crate::models::Workload;

/// One workload's logic over parsed trades.
pub trait Kernel {
    /// Processes one trade; returns the number of output rows it produced.
    fn trade(&mut self, id: i64, symbol: &str, price: f64, quantity: i32) -> u64;
}

/// One group of the aggregate baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    pub sum_quantity: i64,
    pub count: i64,
    pub sum_price: f64,
    pub max_price: f64,
}

/// `FxHashMap<String, (sum, count, sum_price, max)>`; one update row out per trade.
#[derive(Default)]
pub struct Aggregate {
    pub groups: FxHashMap<String, Group>,
}

impl Kernel for Aggregate {
    #[inline]
    fn trade(&mut self, _id: i64, symbol: &str, price: f64, quantity: i32) -> u64 {
        let g = match self.groups.get_mut(symbol) {
            Some(g) => {
                g.sum_quantity += quantity as i64;
                g.count += 1;
                g.sum_price += price;
                if price > g.max_price {
                    g.max_price = price;
                }
                *g
            }
            None => {
                let g = Group {
                    sum_quantity: quantity as i64,
                    count: 1,
                    sum_price: price,
                    max_price: price,
                };
                self.groups.insert(symbol.to_owned(), g);
                g
            }
        };
        // The output row: symbol, total quantity, count, average price, max price.
        black_box((
            symbol,
            g.sum_quantity,
            g.count,
            g.sum_price / g.count as f64,
            g.max_price,
        ));
        1
    }
}

/// `quantity > 500`.
#[derive(Default)]
pub struct Filter;

impl Kernel for Filter {
    #[inline]
    fn trade(&mut self, id: i64, symbol: &str, price: f64, quantity: i32) -> u64 {
        if quantity > FILTER_QUANTITY {
            black_box((id, symbol, price, quantity));
            1
        } else {
            0
        }
    }
}

/// `upper(symbol)`, `price * quantity` (the upper-cased symbol goes to a reused buffer).
#[derive(Default)]
pub struct Compute {
    buf: String,
}

impl Kernel for Compute {
    #[inline]
    fn trade(&mut self, id: i64, symbol: &str, price: f64, quantity: i32) -> u64 {
        self.buf.clear();
        self.buf
            .extend(symbol.chars().map(|c| c.to_ascii_uppercase()));
        black_box((id, self.buf.as_str(), price * quantity as f64));
        1
    }
}

/// A hash lookup in the symbol table; a trade without a symbol row still goes out (left outer).
#[derive(Default)]
pub struct Join {
    pub dim: FxHashMap<String, (String, i32)>,
}

impl Join {
    pub fn add_symbol(&mut self, symbol: &str, sector: &str, lot_size: i32) {
        self.dim
            .insert(symbol.to_owned(), (sector.to_owned(), lot_size));
    }
}

impl Kernel for Join {
    #[inline]
    fn trade(&mut self, id: i64, symbol: &str, price: f64, quantity: i32) -> u64 {
        let d = self.dim.get(symbol).map(|(s, l)| (s.as_str(), *l));
        black_box((id, symbol, price, quantity, d));
        1
    }
}

/// Parses `i,n,id,symbol,price,quantity` by hand.
#[inline]
pub fn parse_trade(line: &str) -> Option<(i64, &str, f64, i32)> {
    let line = line.trim_end_matches(['\n', '\r']);
    let mut it = line.split(',');
    let op = it.next()?;
    let _flags = it.next()?;
    if !op.eq_ignore_ascii_case("i") {
        return None;
    }
    let id = it.next()?.parse().ok()?;
    let symbol = it.next()?;
    let price = it.next()?.parse().ok()?;
    let quantity = it.next()?.parse().ok()?;
    Some((id, symbol, price, quantity))
}

/// Counts of one baseline run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub outputs: u64,
}

/// Runs `kernel` over the trades CSV file.
pub fn over_csv<K: Kernel>(kernel: &mut K, trades: &Path) -> std::io::Result<Counts> {
    let file = std::fs::File::open(trades)?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut c = Counts::default();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let Some((id, symbol, price, quantity)) = parse_trade(&line) else {
            return Err(std::io::Error::other(format!("bad trade line: {line}")));
        };
        c.events += 1;
        c.outputs += kernel.trade(id, symbol, price, quantity);
    }
    Ok(c)
}

/// Loads the symbol CSV (`i,n,symbol,sector,lotSize`) into a join kernel.
pub fn load_symbols_csv(join: &mut Join, symbols: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(symbols)?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let [_, _, symbol, sector, lot] = f[..] else {
            return Err(std::io::Error::other(format!("bad symbol line: {line}")));
        };
        let lot = lot
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad lot size: {line}")))?;
        join.add_symbol(symbol, sector, lot);
    }
    Ok(())
}

/// A join kernel with the generated dimension table (in-memory mode).
pub fn join_with_symbols() -> Join {
    let mut j = Join::default();
    for r in symbol_rows() {
        j.add_symbol(&r.symbol, &r.sector, r.lot_size);
    }
    j
}

/// Runs workload `w`'s baseline over the CSV files (the join loads its symbols first).
pub fn run_csv(w: Workload, trades: &Path, symbols: &Path) -> std::io::Result<Counts> {
    match w {
        Workload::Aggregate => over_csv(&mut Aggregate::default(), trades),
        Workload::Filter => over_csv(&mut Filter, trades),
        Workload::Compute => over_csv(&mut Compute::default(), trades),
        Workload::Join => {
            let mut j = Join::default();
            load_symbols_csv(&mut j, symbols)?;
            over_csv(&mut j, trades)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_trade_line() {
        assert_eq!(
            parse_trade("i,n,7,SYM0001,12.50,300\n"),
            Some((7, "SYM0001", 12.5, 300))
        );
        assert_eq!(parse_trade("d,n,7,SYM0001,12.50,300"), None);
        assert_eq!(parse_trade("i,n,7,SYM0001,x,300"), None);
    }
}
