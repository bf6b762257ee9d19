//! The registers of a `[[modbus.slave]]`: each `{ field, kind, address, type, order, bit,
//! scale, offset }` validated into a [`Field`] of the register plan.
//!
//! **Invariant:** a field fits the address space (its last register at most 65535), names
//! a type its table can hold (coils and discrete inputs are booleans; `bit` takes one bit
//! of a 16-bit register), and is named once per slave.

use super::modbus::RawSlave;
use super::{limits, ConfigError, Cx};
use crate::input::modbus::plan::{Decode, Field, Order, Table, Type};
use std::collections::HashSet;
use std::sync::Arc;

/// The fields of slave `s` of `[[modbus]]` number `i`.
pub(super) fn validate(
    cx: &Cx,
    i: usize,
    s: usize,
    raw: &RawSlave,
) -> Result<Vec<Field>, ConfigError> {
    if raw.registers.get_ref().is_empty() {
        return Err(cx.at(
            &raw.registers,
            &format!("modbus[{i}].slave[{s}].registers"),
            "lists no register: the slave would give nothing",
        ));
    }
    let mut names = HashSet::new();
    let mut fields = Vec::new();
    for (r, reg) in raw.registers.get_ref().iter().enumerate() {
        let key = |k: &str| format!("modbus[{i}].slave[{s}].registers[{r}].{k}");
        let reg = reg.get_ref();
        let name = reg.field.get_ref();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(cx.at(
                &reg.field,
                &key("field"),
                "must name the value, e.g. \"voltage\"",
            ));
        }
        cx.bytes_at_most(&reg.field, &key("field"), limits::NAME_BYTES)?;
        if !names.insert(name.clone()) {
            return Err(cx.at(
                &reg.field,
                &key("field"),
                &format!("`{name}` names two registers of this slave"),
            ));
        }
        let table = Table::parse(reg.kind.get_ref()).ok_or_else(|| {
            cx.at(
                &reg.kind,
                &key("kind"),
                &format!(
                    "`{}` is not one of {}",
                    reg.kind.get_ref(),
                    Table::NAMES.join(", ")
                ),
            )
        })?;
        let not_for = |v: Option<std::ops::Range<usize>>, k: &str, why: &str| match v {
            Some(at) => Err(cx.error(at, &key(k), why)),
            None => Ok(()),
        };
        let decode = if table.is_bits() {
            let why = "coils and discrete inputs are booleans: leave it out";
            not_for(reg.ty.as_ref().map(|v| v.span()), "type", why)?;
            not_for(reg.order.as_ref().map(|v| v.span()), "order", why)?;
            not_for(reg.bit.as_ref().map(|v| v.span()), "bit", why)?;
            not_for(reg.scale.as_ref().map(|v| v.span()), "scale", why)?;
            not_for(reg.offset.as_ref().map(|v| v.span()), "offset", why)?;
            Decode::Bit
        } else {
            let ty = match &reg.ty {
                None => Type::U16,
                Some(t) => Type::parse(t.get_ref()).ok_or_else(|| {
                    cx.at(
                        t,
                        &key("type"),
                        &format!("`{}` is not one of {}", t.get_ref(), Type::NAMES.join(", ")),
                    )
                })?,
            };
            let order = match &reg.order {
                None => Order::Abcd,
                Some(o) => Order::parse(o.get_ref()).ok_or_else(|| {
                    cx.at(
                        o,
                        &key("order"),
                        &format!(
                            "`{}` is not one of {}",
                            o.get_ref(),
                            Order::NAMES.join(", ")
                        ),
                    )
                })?,
            };
            match &reg.bit {
                Some(b) => {
                    if ty.words() != 1 {
                        let at = reg.ty.as_ref().expect("u16 is the default");
                        return Err(cx.at(
                            at,
                            &key("type"),
                            "`bit` reads one bit of a 16-bit register: use type \"u16\"",
                        ));
                    }
                    let why = "a bit is a boolean: leave it out";
                    not_for(reg.order.as_ref().map(|v| v.span()), "order", why)?;
                    not_for(reg.scale.as_ref().map(|v| v.span()), "scale", why)?;
                    not_for(reg.offset.as_ref().map(|v| v.span()), "offset", why)?;
                    match *b.get_ref() {
                        n @ 0..=15 => Decode::RegisterBit(n as u8),
                        _ => return Err(cx.at(b, &key("bit"), "must be between 0 and 15")),
                    }
                }
                None => {
                    let scale = reg.scale.as_ref().map(|v| (v, *v.get_ref()));
                    if let Some((at, v)) = scale {
                        if !v.is_finite() || v == 0.0 {
                            return Err(cx.at(
                                at,
                                &key("scale"),
                                "must be a finite number other than 0",
                            ));
                        }
                    }
                    let offset = reg.offset.as_ref().map(|v| (v, *v.get_ref()));
                    if let Some((at, v)) = offset {
                        if !v.is_finite() {
                            return Err(cx.at(at, &key("offset"), "must be a finite number"));
                        }
                    }
                    Decode::Number {
                        ty,
                        order,
                        scale: scale.map_or(1.0, |s| s.1),
                        offset: offset.map_or(0.0, |o| o.1),
                        scaled: scale.is_some() || offset.is_some(),
                    }
                }
            }
        };
        let address = *reg.address.get_ref();
        let len = match decode {
            Decode::Number { ty, .. } => i64::from(ty.words()),
            _ => 1,
        };
        if address < 0 || address + len > 65_536 {
            let what = if len == 1 {
                "must be between 0 and 65535".to_string()
            } else {
                format!("must be between 0 and 65535, and the {len} registers of its type must end by 65535")
            };
            return Err(cx.at(&reg.address, &key("address"), &what));
        }
        fields.push(Field {
            name: Arc::from(name.as_str()),
            table,
            address: address as u16,
            decode,
        });
    }
    Ok(fields)
}
