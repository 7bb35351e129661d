// Network addresses as configuration files spell them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <vmha/error.h>

namespace vmha::config {

// An IPv4 or IPv6 literal, or a DNS host name (RFC 1123 labels). Not resolved here.
struct Host {
    enum class Kind { ipv4, ipv6, name };
    Kind kind = Kind::name;
    std::string text;  // canonical form: IPv6 without brackets, names lower-cased

    bool operator==(const Host&) const = default;
};
Result<Host> parse_host(std::string_view text);

// "host:port" or "[v6]:port"; the port is required.
struct HostPort {
    Host host;
    std::uint16_t port = 0;

    bool operator==(const HostPort&) const = default;
    std::string to_string() const;
};
Result<HostPort> parse_host_port(std::string_view text);

// A network in CIDR form, e.g. "10.0.0.0/24" or "fd00::/64". Host bits must be zero.
struct Cidr {
    bool ipv6 = false;
    std::array<std::uint8_t, 16> address{};  // network-order bytes; IPv4 uses the first 4
    unsigned prefix = 0;

    bool operator==(const Cidr&) const = default;
    std::string to_string() const;
    // True when the IP literal `ip` lies inside this network (false for names).
    bool contains(const Host& ip) const;
};
Result<Cidr> parse_cidr(std::string_view text);

// A TCP/UDP port 1..65535 from an integer.
Result<std::uint16_t> check_port(long long value);

}  // namespace vmha::config
