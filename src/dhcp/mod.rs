//! DHCPv4 built from the inventory. The policy that decides a reply is a pure
//! function of the inventory snapshot, the packet and the time, so it can be
//! property-tested; the server around it only moves bytes.
