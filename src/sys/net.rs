//! Addresses, routes, links, forwarding and NAT.
