//! Steering inside traffic to local sockets: the policy route that delivers everything from
//! the inside NIC locally (so the kernel never forwards it), and the `STEER_SOCKETS` slots the
//! `inside_steer` program redirects to.
//!
//! The route is `ip rule iif <inside> lookup STEER_TABLE` with `local 0.0.0.0/0 dev lo` in that
//! table. It stays when the agent stops (the slots are then empty and the program drops), and
//! only `dataplane detach` removes it.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, SockMap};
use futures::TryStreamExt;
use gateway_common::maps::steer;
use rtnetlink::packet_route::route::{RouteAttribute, RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

/// The routing table of the steering route ("gw" in ASCII: unlikely to be anyone else's).
pub const STEER_TABLE: u32 = 0x6777;
/// The rule's priority: before the main table (32766).
const RULE_PRIORITY: u32 = 100;

/// The slots steered traffic goes to, shared with the services that fill them.
#[derive(Clone)]
pub struct SteerSlots(Arc<Mutex<SockMap<MapData>>>);

impl SteerSlots {
    /// The slots of `map` (`STEER_SOCKETS`, taken out of the loaded object).
    pub fn new(map: SockMap<MapData>) -> Self {
        SteerSlots(Arc::new(Mutex::new(map)))
    }

    /// Puts the transparent TCP listener into its slot (after `listen()`).
    pub fn set_tcp(&self, listener: &impl AsRawFd) -> Result<()> {
        self.set(steer::TCP, listener, "the transparent listener")
    }

    /// Puts the DNS server's transparent UDP socket and TCP listener into their slots.
    pub fn set_dns(&self, udp: &impl AsRawFd, tcp: &impl AsRawFd) -> Result<()> {
        self.set(
            steer::DNS_UDP,
            udp,
            "the DNS server's transparent UDP socket",
        )?;
        self.set(
            steer::DNS_TCP,
            tcp,
            "the DNS server's transparent TCP listener",
        )
    }

    fn set(&self, slot: u32, socket: &impl AsRawFd, what: &str) -> Result<()> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| anyhow!("the steering map lock is poisoned"))?;
        map.set(slot, socket, 0)
            .with_context(|| format!("putting {what} into STEER_SOCKETS"))
    }
}

/// Installs the policy route for `inside` unless it is there.
pub async fn install_route(inside: &str) -> Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
    tokio::spawn(connection);
    if !rule_present(&handle, inside).await? {
        handle
            .rule()
            .add()
            .v4()
            .input_interface(inside.to_owned())
            .table_id(STEER_TABLE)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable)
            .execute()
            .await
            .with_context(|| format!("adding the steering rule (iif {inside})"))?;
    }
    let lo = loopback_index(&handle).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .output_interface(lo)
        .table_id(STEER_TABLE)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .context("adding the steering route (local 0.0.0.0/0 dev lo)")?;
    Ok(())
}

/// Removes the policy route and rule (`dataplane detach`).
pub async fn remove_route() -> Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
    tokio::spawn(connection);
    for rule in rules(&handle).await? {
        if rule_table(&rule) == Some(STEER_TABLE) {
            handle
                .rule()
                .del(rule)
                .execute()
                .await
                .context("removing the steering rule")?;
        }
    }
    let routes: Vec<_> = handle
        .route()
        .get(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(STEER_TABLE)
                .build(),
        )
        .execute()
        .try_collect()
        .await
        .context("listing routes")?;
    for route in routes {
        let table = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        });
        if table == Some(STEER_TABLE) {
            handle
                .route()
                .del(route)
                .execute()
                .await
                .context("removing the steering route")?;
        }
    }
    Ok(())
}

async fn rules(handle: &Handle) -> Result<Vec<RuleMessage>> {
    handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .context("listing rules")
}

async fn rule_present(handle: &Handle, inside: &str) -> Result<bool> {
    Ok(rules(handle).await?.iter().any(|rule| {
        rule_table(rule) == Some(STEER_TABLE)
            && rule
                .attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::Iifname(name) if name == inside))
    }))
}

fn rule_table(rule: &RuleMessage) -> Option<u32> {
    rule.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .or(Some(u32::from(rule.header.table)))
}

async fn loopback_index(handle: &Handle) -> Result<u32> {
    let link = handle
        .link()
        .get()
        .match_name("lo".to_owned())
        .execute()
        .try_next()
        .await
        .context("looking up lo")?
        .ok_or_else(|| anyhow!("there is no lo"))?;
    Ok(link.header.index)
}
