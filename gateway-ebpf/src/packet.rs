//! Bounds-checked reads from packet memory, and the header constants the programs use.

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Minimal IPv4 header length.
pub const IPV4_MIN_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// Minimal TCP header length (ports are all we read, but a shorter segment is malformed).
pub const TCP_MIN_HLEN: usize = 20;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const ICMP_ECHO_REQUEST: u8 = 8;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DNS_PORT: u16 = 53;

/// A view of packet memory `[start, end)` with checked reads, as the verifier demands.
#[derive(Clone, Copy)]
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Packet { start, end }
    }

    /// Length of the frame in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether `len` bytes at `offset` are inside the packet.
    #[inline(always)]
    pub fn has(&self, offset: usize, len: usize) -> bool {
        self.start + offset + len <= self.end
    }

    /// The `T` at `offset`, if all of it is inside the packet. The load is volatile so that it
    /// happens right behind its bounds check: left to itself LLVM sinks loads past later
    /// branches and re-derives the pointer, which the verifier then rejects as unchecked.
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let ptr = self.start + offset;
        if ptr + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [ptr, ptr + size_of::<T>()) was checked to lie inside the packet above.
        Some(unsafe { core::ptr::read_volatile(ptr as *const T) })
    }

    #[inline(always)]
    pub fn u8_at(&self, offset: usize) -> Option<u8> {
        self.read::<u8>(offset)
    }

    /// A big-endian `u16`, returned in host order.
    #[inline(always)]
    pub fn be16_at(&self, offset: usize) -> Option<u16> {
        self.read::<[u8; 2]>(offset).map(u16::from_be_bytes)
    }

    /// Two consecutive big-endian `u16`s (a TCP or UDP port pair), in host order.
    #[inline(always)]
    pub fn ports_at(&self, offset: usize) -> Option<(u16, u16)> {
        self.read::<[u8; 4]>(offset).map(|b| {
            (
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
        })
    }

    /// The 8-byte ICMP header.
    #[inline(always)]
    pub fn icmp_header_at(&self, offset: usize) -> Option<[u8; 8]> {
        self.read::<[u8; 8]>(offset)
    }

    /// Four bytes as stored on the wire, reinterpreted as a native `u32` (the encoding of
    /// addresses in the maps).
    #[inline(always)]
    pub fn addr_at(&self, offset: usize) -> Option<u32> {
        self.read::<[u8; 4]>(offset).map(u32::from_ne_bytes)
    }

    /// Whether the MACs at offsets `a` and `b` are equal, compared as a 4-byte and a 2-byte
    /// word: comparing two `[u8; 6]` compiles to byte shuffles the verifier rejects.
    #[inline(always)]
    pub fn same_mac(&self, a: usize, b: usize) -> Option<bool> {
        let (a_hi, a_lo) = (self.read::<[u8; 4]>(a)?, self.read::<[u8; 2]>(a + 4)?);
        let (b_hi, b_lo) = (self.read::<[u8; 4]>(b)?, self.read::<[u8; 2]>(b + 4)?);
        Some(
            u32::from_ne_bytes(a_hi) == u32::from_ne_bytes(b_hi)
                && u16::from_ne_bytes(a_lo) == u16::from_ne_bytes(b_lo),
        )
    }

    #[inline(always)]
    pub fn mac_at(&self, offset: usize) -> Option<[u8; 6]> {
        self.read::<[u8; 6]>(offset)
    }
}
