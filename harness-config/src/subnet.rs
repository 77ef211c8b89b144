//! IPv4 subnets of `wireguard` networks: parsing, overlap, and the member addresses (the network
//! and broadcast addresses are never handed out).

use std::net::Ipv4Addr;

/// An IPv4 `ADDRESS/PREFIX`, normalised to its network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `10.10.0.0/24`; the host bits are cleared. IPv6 is refused (not supported for meshes).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "no `/PREFIX`".to_owned())?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address (meshes are IPv4 only)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| "the prefix must be 0 to 32".to_owned())?;
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// How many member addresses it holds (not the network or broadcast address).
    pub fn capacity(&self) -> u64 {
        match self.prefix {
            31 | 32 => 0,
            p => (1u64 << (32 - p)) - 2,
        }
    }

    /// The `index`-th member address (0 = the first after the network address).
    pub fn host(&self, index: u32) -> Option<Ipv4Addr> {
        if u64::from(index) >= self.capacity() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + index + 1))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_network_and_broadcast() {
        let s = Subnet::parse("10.9.0.7/30").unwrap();
        assert_eq!(s.to_string(), "10.9.0.4/30");
        assert_eq!(s.capacity(), 2);
        assert_eq!(s.host(0), Some(Ipv4Addr::new(10, 9, 0, 5)));
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 9, 0, 6)));
        assert_eq!(s.host(2), None);
        assert_eq!(Subnet::parse("10.0.0.1/31").unwrap().capacity(), 0);
        assert!(
            Subnet::parse("10.0.0.0/16")
                .unwrap()
                .overlaps(&Subnet::parse("10.0.5.0/24").unwrap())
        );
        assert!(
            !Subnet::parse("10.0.0.0/24")
                .unwrap()
                .overlaps(&Subnet::parse("10.0.1.0/24").unwrap())
        );
        assert!(Subnet::parse("fd00::/64").is_err());
    }
}
