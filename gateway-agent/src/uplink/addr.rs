//! The uplink's IPv4 address and default route, through rtnetlink. Every call is idempotent
//! and converges on the wanted state, replacing what an earlier run (or crash) left behind.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

/// The kernel's "forever" for address lifetimes.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// Makes `address/prefix_len` the only IPv4 address on the device. With a `lifetime` the
/// kernel removes the address by itself when it runs out, so a lease never outlives a
/// crashed agent; `None` is permanent (static configuration).
pub async fn set_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
    lifetime: Option<Duration>,
) -> Result<()> {
    for stale in ipv4_addresses(handle, index).await? {
        if address_of(&stale) != Some(address) || stale.header.prefix_len != prefix_len {
            delete_address(handle, stale).await?;
        }
    }
    let mut request = handle
        .address()
        .add(index, IpAddr::V4(address), prefix_len)
        .replace();
    let seconds = lifetime.map_or(INFINITY_LIFE_TIME, |l| {
        // At least a second: a zero lifetime would be refused.
        u32::try_from(l.as_secs())
            .unwrap_or(INFINITY_LIFE_TIME)
            .max(1)
    });
    let mut cache = CacheInfo::default();
    cache.ifa_valid = seconds;
    cache.ifa_preferred = seconds;
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::CacheInfo(cache));
    request
        .execute()
        .await
        .with_context(|| format!("adding {address}/{prefix_len} to the uplink"))
}

/// Removes every IPv4 address from the device (the kernel takes their routes with them).
pub async fn flush_addresses(handle: &Handle, index: u32) -> Result<()> {
    for stale in ipv4_addresses(handle, index).await? {
        delete_address(handle, stale).await?;
    }
    Ok(())
}

/// Removes `address` from the device if it is there.
pub async fn remove_address(handle: &Handle, index: u32, address: Ipv4Addr) -> Result<()> {
    for found in ipv4_addresses(handle, index).await? {
        if address_of(&found) == Some(address) {
            delete_address(handle, found).await?;
        }
    }
    Ok(())
}

/// Makes `gateway` the device's one default route in the main table. Fails, rather than
/// replacing it, if another interface already has a default route of the same metric.
pub async fn set_default_route(handle: &Handle, index: u32, gateway: Ipv4Addr) -> Result<()> {
    let mut present = false;
    for route in default_routes(handle, index).await? {
        if gateway_of(&route) == Some(gateway) && !present {
            present = true;
        } else {
            delete_route(handle, route).await?;
        }
    }
    if present {
        return Ok(());
    }
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .protocol(RouteProtocol::Dhcp)
        // A router outside the leased subnet (some ISPs do that) is still reachable on-link.
        .onlink()
        .build();
    handle.route().add(route).execute().await.with_context(|| {
        format!(
            "adding the default route via {gateway} on the uplink (does another interface \
                 already have a default route?)"
        )
    })
}

/// Removes the device's default routes from the main table.
pub async fn remove_default_routes(handle: &Handle, index: u32) -> Result<()> {
    for route in default_routes(handle, index).await? {
        delete_route(handle, route).await?;
    }
    Ok(())
}

async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<AddressMessage>> {
    let all: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .context("listing the uplink's addresses")?;
    Ok(all
        .into_iter()
        .filter(|a| a.header.family == AddressFamily::Inet)
        .collect())
}

async fn delete_address(handle: &Handle, message: AddressMessage) -> Result<()> {
    let shown = address_of(&message).map_or_else(|| "?".to_owned(), |a| a.to_string());
    let prefix_len = message.header.prefix_len;
    match handle.address().del(message).execute().await {
        // Gone already (it expired, or something raced us): that is the wanted state.
        Err(rtnetlink::Error::NetlinkError(err))
            if err.code.map(|c| c.get()) == Some(-libc::EADDRNOTAVAIL) =>
        {
            Ok(())
        }
        other => other.with_context(|| format!("removing {shown}/{prefix_len} from the uplink")),
    }
}

fn address_of(message: &AddressMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

/// Default routes through the device in the main table.
async fn default_routes(handle: &Handle, index: u32) -> Result<Vec<RouteMessage>> {
    let all: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .context("listing IPv4 routes")?;
    Ok(all
        .into_iter()
        .filter(|r| {
            r.header.address_family == AddressFamily::Inet
                && r.header.destination_prefix_length == 0
                && r.header.table == RouteHeader::RT_TABLE_MAIN
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(oif) if *oif == index))
        })
        .collect())
}

async fn delete_route(handle: &Handle, route: RouteMessage) -> Result<()> {
    let via = gateway_of(&route).map_or_else(|| "?".to_owned(), |g| g.to_string());
    match handle.route().del(route).execute().await {
        Err(rtnetlink::Error::NetlinkError(err))
            if err.code.map(|c| c.get()) == Some(-libc::ESRCH) =>
        {
            Ok(())
        }
        other => other.with_context(|| format!("removing the default route via {via}")),
    }
}

fn gateway_of(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}
