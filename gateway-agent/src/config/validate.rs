//! Rules that span tables, run only over values that passed their own rules (so a bad value
//! never causes a second, misleading error here).

use std::collections::hash_map::{Entry, HashMap};

use super::error::Errors;
use super::types::{same_subnet, Inside, Outside, OutsideAddress, PortRule};

/// A static outside subnet must not overlap the inside subnet: the gateway could not tell the
/// LAN from the uplink, and the egress guard drops inside-sourced packets on the outside.
pub(crate) fn subnets_disjoint(inside: &Inside, outside: &Outside, errors: &mut Errors) {
    let OutsideAddress::Static {
        address,
        prefix_len,
        ..
    } = outside.address
    else {
        return;
    };
    // Two subnets overlap exactly when they agree on the shorter of the two prefixes.
    if same_subnet(address, inside.address, prefix_len.min(inside.prefix_len)) {
        errors.push(
            "outside.address",
            format!(
                "{address}/{prefix_len} overlaps the inside subnet {} (inside.address); the uplink and the LAN must be different networks",
                inside.subnet()
            ),
        );
    }
}

/// Each (protocol, port) on the inside address has one user; every later user is an error that
/// names the first.
pub(crate) fn unique_ports(users: &[(String, PortRule)], errors: &mut Errors) {
    let mut first: HashMap<PortRule, &str> = HashMap::new();
    for (key, rule) in users {
        match first.entry(*rule) {
            Entry::Occupied(owner) => {
                errors.push(key, format!("{rule} is already used by {}", owner.get()));
            }
            Entry::Vacant(slot) => {
                slot.insert(key);
            }
        }
    }
}
