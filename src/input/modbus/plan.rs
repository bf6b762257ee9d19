//! Modbus register plans, pure: which reads cover a slave's fields, and how the words or
//! bits a read returns become [`Value`]s. No I/O; the config validates into these types and
//! the running input (`input::modbus`) only sends the reads and hands back their answers.
//!
//! **Invariant:** a read covers only registers (or coils) that some field names, never a
//! gap between them (a register no field names may not exist on the slave and would make
//! the whole read fail), and at most [`MAX_REGISTERS`] registers or [`MAX_BITS`] bits, the
//! protocol's limits; within that, the fewest reads that hold every field whole.
//!
//! **Invariant:** decoding cannot fail or panic: a read that returned fewer words than asked
//! leaves its fields out, it does not shift them.
//!
//! Word and byte order, for 32- and 64-bit types, with registers `R0 R1 ...` as the slave
//! numbers them (R0 at the field's address) and each register's high byte first on the wire:
//! - `abcd`: big-endian words and bytes: R0 holds the most significant 16 bits (the default).
//! - `cdab`: word-swapped: R0 holds the least significant 16 bits, bytes big-endian within.
//! - `badc`: byte-swapped: words big-endian, the two bytes of each register swapped.
//! - `dcba`: little-endian: word-swapped and byte-swapped.
//!
//! A 64-bit value generalises the same way: `abcd` reads R0..R3 most significant first,
//! `cdab` least significant first, `badc`/`dcba` swap the bytes within each register. On a
//! 16-bit type only the byte swap applies (`badc`, `dcba`).
//!
//! Values: 16- to 64-bit integers become `Int`; a `u64` above `i64::MAX` becomes `Float`
//! (JSON consumers read numbers as doubles anyway); `f32`/`f64` become `Float` (NaN and
//! infinities are written as `null`). A field with `scale` or `offset` is
//! `raw * scale + offset` as a `Float`. A `bit` field and coils and discrete inputs are
//! `Bool`.

use crate::reading::Value;
use std::sync::Arc;

/// Registers one read may ask for (function codes 3 and 4).
pub const MAX_REGISTERS: u16 = 125;
/// Coils or discrete inputs one read may ask for (function codes 1 and 2).
pub const MAX_BITS: u16 = 2000;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    pub const NAMES: [&str; 4] = ["holding", "input", "coil", "discrete"];

    pub fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "holding" => Table::Holding,
            "input" => Table::Input,
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }

    /// Whether the table holds bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The most one read of this table may ask for.
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        }
    }
}

/// The type of a register field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Type {
    pub const NAMES: [&str; 8] = ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"];

    pub fn parse(s: &str) -> Option<Type> {
        Some(match s {
            "u16" => Type::U16,
            "i16" => Type::I16,
            "u32" => Type::U32,
            "i32" => Type::I32,
            "u64" => Type::U64,
            "i64" => Type::I64,
            "f32" => Type::F32,
            "f64" => Type::F64,
            _ => return None,
        })
    }

    /// Registers the type takes.
    pub fn words(self) -> u16 {
        match self {
            Type::U16 | Type::I16 => 1,
            Type::U32 | Type::I32 | Type::F32 => 2,
            Type::U64 | Type::I64 | Type::F64 => 4,
        }
    }
}

/// Word and byte order (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl Order {
    pub const NAMES: [&str; 4] = ["abcd", "cdab", "badc", "dcba"];

    pub fn parse(s: &str) -> Option<Order> {
        Some(match s {
            "abcd" => Order::Abcd,
            "cdab" => Order::Cdab,
            "badc" => Order::Badc,
            "dcba" => Order::Dcba,
            _ => return None,
        })
    }

    fn word_swap(self) -> bool {
        matches!(self, Order::Cdab | Order::Dcba)
    }

    fn byte_swap(self) -> bool {
        matches!(self, Order::Badc | Order::Dcba)
    }
}

/// What a field decodes as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decode {
    /// A coil or discrete input.
    Bit,
    /// One bit (0 = least significant) of a 16-bit register.
    RegisterBit(u8),
    /// A number of `Type`, then `raw * scale + offset` when `scaled`.
    Number {
        ty: Type,
        order: Order,
        scale: f64,
        offset: f64,
        scaled: bool,
    },
}

/// One field of a slave: where it lives and how it decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: Arc<str>,
    pub table: Table,
    pub address: u16,
    pub decode: Decode,
}

impl Field {
    /// Registers (or bits) the field spans.
    pub fn span(&self) -> u16 {
        match self.decode {
            Decode::Bit | Decode::RegisterBit(_) => 1,
            Decode::Number { ty, .. } => ty.words(),
        }
    }

    /// One past the last register (or bit) the field spans; at most 65,536.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.span())
    }
}

/// One request: `count` registers or bits of `table` from `address`, holding the fields
/// whose indices are in `fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    pub fields: Vec<usize>,
}

/// The reads that cover `fields`: per table, in address order, the fewest reads within the
/// protocol's limits that hold every field whole and read no register no field names.
/// Fields must end at or before 65,536 (the config checks it).
pub fn plan(fields: &[Field]) -> Vec<Read> {
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| (fields[i].table, fields[i].address, fields[i].end()));
    let mut reads = Vec::new();
    let mut rest: &[usize] = &order;
    while let Some(&first) = rest.first() {
        // A block: fields of one table whose registers touch or overlap.
        let table = fields[first].table;
        let mut end = fields[first].end();
        let mut n = 1;
        while n < rest.len() {
            let f = &fields[rest[n]];
            if f.table != table || u32::from(f.address) > end {
                break;
            }
            end = end.max(f.end());
            n += 1;
        }
        cover_block(fields, &rest[..n], table, &mut reads);
        rest = &rest[n..];
    }
    reads
}

/// Covers one block (fields sorted by address, no gaps) with windows of at most the
/// table's limit: each starts at the lowest field not yet held and takes every field that
/// fits whole; that is the fewest windows (a window holding the lowest field can start no
/// later, and starting it earlier holds nothing more).
fn cover_block(fields: &[Field], block: &[usize], table: Table, reads: &mut Vec<Read>) {
    let max = u32::from(table.max_read());
    let mut left: Vec<usize> = block.to_vec();
    while let Some(&first) = left.first() {
        let start = u32::from(fields[first].address);
        let (mut held, mut rest) = (Vec::new(), Vec::new());
        let mut end = start;
        for &i in &left {
            if fields[i].end() <= start + max {
                end = end.max(fields[i].end());
                held.push(i);
            } else {
                rest.push(i);
            }
        }
        reads.push(Read {
            table,
            address: start as u16,
            count: (end - start) as u16,
            fields: held,
        });
        left = rest;
    }
}

/// The value of `field` in the registers a read of `read_address` returned, or `None` if
/// they do not reach it.
pub fn decode_words(field: &Field, read_address: u16, words: &[u16]) -> Option<Value> {
    let at = usize::from(field.address.checked_sub(read_address)?);
    let words = words.get(at..at + usize::from(field.span()))?;
    Some(match field.decode {
        Decode::Bit => Value::Bool(words[0] != 0),
        Decode::RegisterBit(b) => Value::Bool(words[0] >> b & 1 == 1),
        Decode::Number {
            ty,
            order,
            scale,
            offset,
            scaled,
        } => {
            let raw = number(ty, order, words);
            match (scaled, raw) {
                (false, n) => n,
                (true, Value::Int(i)) => Value::Float(i as f64 * scale + offset),
                (true, Value::Float(f)) => Value::Float(f * scale + offset),
                (true, other) => other,
            }
        }
    })
}

/// The value of a coil or discrete input in the bits a read of `read_address` returned.
pub fn decode_bits(field: &Field, read_address: u16, bits: &[bool]) -> Option<Value> {
    let at = usize::from(field.address.checked_sub(read_address)?);
    bits.get(at).map(|&b| Value::Bool(b))
}

/// The big-endian bytes of `words` in `order`, as one number of `ty`.
fn number(ty: Type, order: Order, words: &[u16]) -> Value {
    let mut bytes = [0u8; 8];
    let n = words.len();
    for (k, &w) in words.iter().enumerate() {
        // With a word swap, R0 is the least significant word: it goes last.
        let slot = if order.word_swap() { n - 1 - k } else { k };
        let w = if order.byte_swap() { w.swap_bytes() } else { w };
        bytes[slot * 2..slot * 2 + 2].copy_from_slice(&w.to_be_bytes());
    }
    let b2 = [bytes[0], bytes[1]];
    let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
    match ty {
        Type::U16 => Value::Int(i64::from(u16::from_be_bytes(b2))),
        Type::I16 => Value::Int(i64::from(i16::from_be_bytes(b2))),
        Type::U32 => Value::Int(i64::from(u32::from_be_bytes(b4))),
        Type::I32 => Value::Int(i64::from(i32::from_be_bytes(b4))),
        Type::F32 => Value::Float(f64::from(f32::from_be_bytes(b4))),
        Type::U64 => {
            let v = u64::from_be_bytes(bytes);
            i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
        }
        Type::I64 => Value::Int(i64::from_be_bytes(bytes)),
        Type::F64 => Value::Float(f64::from_be_bytes(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg(name: &str, table: Table, address: u16, ty: Type) -> Field {
        Field {
            name: Arc::from(name),
            table,
            address,
            decode: Decode::Number {
                ty,
                order: Order::Abcd,
                scale: 1.0,
                offset: 0.0,
                scaled: false,
            },
        }
    }

    fn with_order(mut f: Field, o: Order) -> Field {
        if let Decode::Number { order, .. } = &mut f.decode {
            *order = o;
        }
        f
    }

    /// The registers of `bytes` (big-endian, as `abcd` sends them) in `order`.
    fn words_in(order: Order, bytes: &[u8]) -> Vec<u16> {
        let mut w: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        if order.word_swap() {
            w.reverse();
        }
        if order.byte_swap() {
            w.iter_mut().for_each(|x| *x = x.swap_bytes());
        }
        w
    }

    #[test]
    fn the_four_orders_of_a_32_bit_value() {
        // 0x11223344 as the letters: a=11 b=22 c=33 d=44.
        let f = reg("x", Table::Holding, 0, Type::U32);
        let cases = [
            (Order::Abcd, [0x1122, 0x3344]),
            (Order::Cdab, [0x3344, 0x1122]),
            (Order::Badc, [0x2211, 0x4433]),
            (Order::Dcba, [0x4433, 0x2211]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_words(&with_order(f.clone(), order), 0, &words),
                Some(Value::Int(0x1122_3344)),
                "{order:?}"
            );
        }
    }

    #[test]
    fn the_four_orders_of_a_64_bit_value() {
        let f = reg("x", Table::Holding, 0, Type::I64);
        let v: i64 = -0x0102_0304_0506_0708;
        let cases = [
            (Order::Abcd, v.to_be_bytes()),
            (Order::Dcba, v.to_le_bytes()),
        ];
        for (order, wire) in cases {
            let words: Vec<u16> = wire
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            assert_eq!(
                decode_words(&with_order(f.clone(), order), 0, &words),
                Some(Value::Int(v))
            );
        }
        let be = v.to_be_bytes();
        assert_eq!(
            decode_words(
                &with_order(f.clone(), Order::Cdab),
                0,
                &words_in(Order::Cdab, &be)
            ),
            Some(Value::Int(v))
        );
    }

    #[test]
    fn types_scale_bits_and_big_unsigned_values() {
        let i16f = reg("t", Table::Holding, 10, Type::I16);
        assert_eq!(decode_words(&i16f, 10, &[0xfff6]), Some(Value::Int(-10)));
        let scaled = Field {
            decode: Decode::Number {
                ty: Type::I16,
                order: Order::Abcd,
                scale: 0.5,
                offset: -40.0,
                scaled: true,
            },
            ..i16f.clone()
        };
        assert_eq!(
            decode_words(&scaled, 9, &[0, 100]),
            Some(Value::Float(10.0))
        );
        let big = reg("e", Table::Input, 0, Type::U64);
        assert_eq!(
            decode_words(&big, 0, &[0xffff; 4]),
            Some(Value::Float(u64::MAX as f64))
        );
        let bit = Field {
            decode: Decode::RegisterBit(3),
            ..i16f.clone()
        };
        assert_eq!(decode_words(&bit, 10, &[0b1000]), Some(Value::Bool(true)));
        assert_eq!(decode_words(&bit, 10, &[0b0111]), Some(Value::Bool(false)));
        let f32f = reg("v", Table::Input, 0, Type::F32);
        let w = words_in(Order::Abcd, &230.5f32.to_be_bytes());
        assert_eq!(decode_words(&f32f, 0, &w), Some(Value::Float(230.5)));
        // Short answers leave the field out rather than shift it.
        assert_eq!(decode_words(&f32f, 0, &w[..1]), None);
        assert_eq!(decode_words(&i16f, 11, &[1, 2]), None);
    }

    #[test]
    fn contiguous_fields_share_a_read_and_gaps_split_them() {
        let fields = vec![
            reg("a", Table::Holding, 0, Type::U32),
            reg("b", Table::Holding, 2, Type::U16),
            reg("c", Table::Holding, 10, Type::U16),
            reg("d", Table::Input, 3, Type::F32),
            Field {
                decode: Decode::Bit,
                ..reg("e", Table::Coil, 0, Type::U16)
            },
            Field {
                decode: Decode::Bit,
                ..reg("f", Table::Coil, 1, Type::U16)
            },
        ];
        let reads = plan(&fields);
        let got: Vec<_> = reads
            .iter()
            .map(|r| (r.table, r.address, r.count, r.fields.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (Table::Coil, 0, 2, vec![4, 5]),
                (Table::Input, 3, 2, vec![3]),
                (Table::Holding, 0, 3, vec![0, 1]),
                (Table::Holding, 10, 1, vec![2]),
            ]
        );
    }

    #[test]
    fn a_long_run_is_cut_at_125_registers_without_splitting_a_field() {
        // 100 f32s: 200 registers in one block.
        let fields: Vec<Field> = (0..100)
            .map(|i| reg("x", Table::Holding, i * 2, Type::F32))
            .collect();
        let reads = plan(&fields);
        assert_eq!(reads.len(), 2);
        assert_eq!((reads[0].address, reads[0].count), (0, 124));
        assert_eq!((reads[1].address, reads[1].count), (124, 76));
    }

    fn any_field() -> impl Strategy<Value = Field> {
        let ty = prop::sample::select(vec![Type::U16, Type::U32, Type::U64, Type::F32]);
        let table = prop::sample::select(vec![Table::Holding, Table::Input, Table::Coil]);
        (table, 0u16..400, ty).prop_map(|(table, address, ty)| {
            let f = reg("x", table, address, ty);
            if table.is_bits() {
                Field {
                    decode: Decode::Bit,
                    ..f
                }
            } else {
                f
            }
        })
    }

    proptest! {
        /// Every field is held whole by exactly one read of its table; no read exceeds the
        /// limit or covers a register no field names; and no table takes fewer reads than
        /// it has blocks.
        #[test]
        fn a_plan_covers_every_field_within_the_limits(fields in prop::collection::vec(any_field(), 0..80)) {
            let reads = plan(&fields);
            let mut held = vec![0; fields.len()];
            for r in &reads {
                prop_assert!(r.count >= 1 && r.count <= r.table.max_read());
                let (start, end) = (u32::from(r.address), u32::from(r.address) + u32::from(r.count));
                for &i in &r.fields {
                    held[i] += 1;
                    let f = &fields[i];
                    prop_assert_eq!(f.table, r.table);
                    prop_assert!(u32::from(f.address) >= start && f.end() <= end);
                }
                for reg in start..end {
                    prop_assert!(fields.iter().any(|f| f.table == r.table
                        && u32::from(f.address) <= reg && reg < f.end()), "register {} of {:?} named by no field", reg, r);
                }
            }
            prop_assert!(held.iter().all(|&n| n == 1));
            // Lower bound: a block of n registers needs at least ceil(n / max) reads.
            for table in [Table::Holding, Table::Input, Table::Coil] {
                let mut regs: Vec<u32> = fields.iter().filter(|f| f.table == table)
                    .flat_map(|f| u32::from(f.address)..f.end()).collect();
                regs.sort();
                regs.dedup();
                let n = reads.iter().filter(|r| r.table == table).count();
                let blocks = regs.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!regs.is_empty());
                prop_assert!(n >= blocks);
                if table.is_bits() {
                    prop_assert_eq!(n, blocks, "bits never need more than one read per block here");
                }
            }
        }

        /// Every order decodes what the same value encodes in it, for every type.
        #[test]
        fn every_order_round_trips(v in any::<u64>(), order in prop::sample::select(vec![Order::Abcd, Order::Cdab, Order::Badc, Order::Dcba])) {
            let f = with_order(reg("x", Table::Holding, 0, Type::U64), order);
            let want = i64::try_from(v).map_or(Value::Float(v as f64), Value::Int);
            prop_assert_eq!(decode_words(&f, 0, &words_in(order, &v.to_be_bytes())), Some(want));
            let f = with_order(reg("x", Table::Holding, 0, Type::I32), order);
            let x = v as i32;
            prop_assert_eq!(decode_words(&f, 0, &words_in(order, &x.to_be_bytes())), Some(Value::Int(i64::from(x))));
            let f = with_order(reg("x", Table::Holding, 0, Type::F64), order);
            let x = f64::from_bits(v);
            let got = decode_words(&f, 0, &words_in(order, &x.to_be_bytes()));
            prop_assert!(matches!(got, Some(Value::Float(g)) if g.to_bits() == x.to_bits()));
        }

        /// Decoding never panics, whatever the slave returned.
        #[test]
        fn decoding_never_panics(f in any_field(), at in 0u16..400, words in prop::collection::vec(any::<u16>(), 0..10)) {
            let _ = decode_words(&f, at, &words);
            let bits: Vec<bool> = words.iter().map(|w| w & 1 == 1).collect();
            let _ = decode_bits(&f, at, &bits);
        }
    }
}
