//! Address blocks of `FLEETGATE_TRUSTED_PROXIES` (`10.0.0.0/8`, `::1/128`, or a bare address),
//! parsed by `ipnet`. Addresses are compared in one canonical form: an IPv4-mapped IPv6 address
//! (`::ffff:1.2.3.4`, what a dual-stack socket reports for an IPv4 peer) is the IPv4 address, so
//! one client has one key and an IPv4 block matches it.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it denotes.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// Why a block did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR {0:?} (expected e.g. 10.0.0.0/8, ::1/128 or 127.0.0.1)")]
pub struct CidrError(String);

/// One block: `a.b.c.d/n`, `v6/n`, or a bare address (a block of one). Host bits are cleared
/// (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse(s: &str) -> Result<IpNet, CidrError> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| CidrError(s.to_string()))?,
    };
    Ok(canonical_net(net.trunc()))
}

/// Parses a comma-separated list (empty entries ignored).
pub fn parse_list(list: &str) -> Result<Vec<IpNet>, CidrError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_parse() {
        assert_eq!(
            parse_list("127.0.0.1").unwrap(),
            parse_list("127.0.0.1/32").unwrap()
        );
        assert_eq!(
            parse_list("::ffff:192.168.0.0/112").unwrap(),
            parse_list("192.168.0.0/16").unwrap()
        );
        assert!(parse("fd00::/8").is_ok());
        assert_eq!(
            parse_list("10.1.2.3/8").unwrap(),
            parse_list("10.0.0.0/8").unwrap()
        );
        assert!(parse("10.0.0.0/33").is_err());
        assert!(parse("nonsense").is_err());
        assert!(parse("10.0.0.0/8/8").is_err());
        assert_eq!(parse_list(" 10.0.0.0/8, ,::1 ").unwrap().len(), 2);
    }
}
