//! Which IP addresses are public: webhook targets, and document hosts other than the source's
//! own, may only be reached on public addresses unless private ones are allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of a non-public address (`"loopback"`, `"private"`, `"link-local"`, …), or `None`
/// for an address that is public and globally routable.
///
/// IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded address; an IPv4-mapped or
/// IPv4-compatible address is refused even when the embedded address is public, since a
/// genuine target never needs that spelling. Teredo, and anything outside global unicast
/// `2000::/3`, is refused.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// "a" or "an", to go before a kind returned by [`classify`].
pub fn article(kind: &str) -> &'static str {
    match kind {
        "unspecified" | "IETF protocol" | "IPv4-mapped" | "IPv4-compatible" => "an",
        _ => "a",
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip == Ipv4Addr::BROADCAST => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(kind)
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(classify_v4(v4).unwrap_or("IPv4-mapped"));
    }
    let kind = match s {
        // IPv4-compatible ::a.b.c.d (deprecated by RFC 4291).
        [0, 0, 0, 0, 0, 0, hi, lo] => classify_v4(embedded(hi, lo)).unwrap_or("IPv4-compatible"),
        // NAT64 well-known prefix: as public as the IPv4 address it translates to.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return classify_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => "local-use NAT64",
        // 6to4: the relay's IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => return classify_v4(embedded(hi, lo)),
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x3fff, x, ..] if x < 0x1000 => "documentation",
        [0x2001, 0x0002, 0, ..] => "benchmarking",
        [0x2001, x, ..] if x < 0x200 => "IETF protocol",
        [0x100, 0, 0, 0, ..] => "discard-only",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique-local",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        [x, ..] if x & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.255", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.0.8", "IETF protocol"),
        ];
        for (ip, want) in cases {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "223.255.255.255",
            "11.0.0.1",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        let cases = [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fdff:ffff::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:93.184.215.14", "IPv4-mapped"),
            ("::127.0.0.1", "loopback"),
            ("::93.184.215.14", "IPv4-compatible"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::", "cloud metadata"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "IETF protocol"),
            ("100::1", "discard-only"),
            ("4000::1", "reserved"),
            ("::ffff:0:7f00:1", "reserved"),
        ];
        for (ip, want) in cases {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for public in [
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "64:ff9b::93.184.215.14",
            "2002:5db8:d70e::1",
            "2001:200::1",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn articles() {
        assert_eq!(article("loopback"), "a");
        assert_eq!(article("unique-local"), "a");
        assert_eq!(article("unspecified"), "an");
        assert_eq!(article("IPv4-mapped"), "an");
    }
}
