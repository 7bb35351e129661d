#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include <vmha/config/address.h>

namespace vmha::config {
namespace {

Error bad(std::string reason) { return Error(errc::invalid_argument, std::move(reason)); }

bool valid_label(std::string_view label) {
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    return std::all_of(label.begin(), label.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-';
    });
}

}  // namespace

Result<Host> parse_host(std::string_view text) {
    if (text.empty()) return bad("an address is required");
    const std::string s(text);
    unsigned char buf[16];
    if (inet_pton(AF_INET, s.c_str(), buf) == 1) return Host{Host::Kind::ipv4, s};
    if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
        char canon[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, buf, canon, sizeof canon);
        return Host{Host::Kind::ipv6, canon};
    }
    const bool dotted_digits = std::all_of(s.begin(), s.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '.';
    });
    if (dotted_digits) return bad(fmt::format("\"{}\" is not a valid IPv4 address", s));
    if (s.find(':') != std::string::npos) {
        return bad(fmt::format("\"{}\" is not a valid IPv6 address or host name", s));
    }
    if (s.size() > 253) return bad(fmt::format("host name \"{}\" is longer than 253 characters", s));
    std::string_view rest = text;
    if (rest.back() == '.') rest.remove_suffix(1);
    while (true) {
        const auto dot = rest.find('.');
        if (!valid_label(rest.substr(0, dot))) {
            return bad(fmt::format("\"{}\" is neither an IP address nor a valid host name", s));
        }
        if (dot == std::string_view::npos) break;
        rest.remove_prefix(dot + 1);
    }
    std::string lower = s;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    return Host{Host::Kind::name, lower};
}

std::string HostPort::to_string() const {
    if (host.kind == Host::Kind::ipv6) return fmt::format("[{}]:{}", host.text, port);
    return fmt::format("{}:{}", host.text, port);
}

Result<std::uint16_t> check_port(long long value) {
    if (value < 1 || value > 65535) {
        return bad(fmt::format("port {} is out of range; a port is 1 to 65535", value));
    }
    return static_cast<std::uint16_t>(value);
}

Result<HostPort> parse_host_port(std::string_view text) {
    std::string_view host_part;
    std::string_view port_part;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return bad(fmt::format("\"{}\" is not of the form \"[IPv6]:PORT\"", text));
        }
        host_part = text.substr(1, close - 1);
        port_part = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return bad(fmt::format("\"{}\" has no port; write \"HOST:PORT\"", text));
        }
        host_part = text.substr(0, colon);
        port_part = text.substr(colon + 1);
        if (host_part.find(':') != std::string_view::npos) {
            return bad(fmt::format("\"{}\": write an IPv6 address in brackets, \"[ADDRESS]:PORT\"",
                                   text));
        }
    }
    long long port = -1;
    const auto [end, ec] = std::from_chars(port_part.data(), port_part.data() + port_part.size(), port);
    if (ec != std::errc() || end != port_part.data() + port_part.size()) {
        return bad(fmt::format("\"{}\": port \"{}\" is not a number", text, port_part));
    }
    auto p = check_port(port);
    if (!p) return bad(fmt::format("\"{}\": {}", text, p.error().message));
    auto h = parse_host(host_part);
    if (!h) return bad(fmt::format("\"{}\": {}", text, h.error().message));
    return HostPort{*h, *p};
}

Result<Cidr> parse_cidr(std::string_view text) {
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) {
        return bad(fmt::format("\"{}\" is not a network in CIDR form, e.g. \"10.0.0.0/24\"", text));
    }
    const std::string addr(text.substr(0, slash));
    const std::string_view prefix_text = text.substr(slash + 1);
    Cidr c;
    unsigned max_prefix = 32;
    if (inet_pton(AF_INET, addr.c_str(), c.address.data()) == 1) {
        c.ipv6 = false;
    } else if (inet_pton(AF_INET6, addr.c_str(), c.address.data()) == 1) {
        c.ipv6 = true;
        max_prefix = 128;
    } else {
        return bad(fmt::format("\"{}\": \"{}\" is not an IP address", text, addr));
    }
    unsigned prefix = 0;
    const auto [end, ec] =
        std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
    if (prefix_text.empty() || ec != std::errc() || end != prefix_text.data() + prefix_text.size() ||
        prefix > max_prefix) {
        return bad(fmt::format("\"{}\": prefix length \"{}\" must be 0 to {}", text, prefix_text,
                               max_prefix));
    }
    c.prefix = prefix;
    Cidr network = c;
    const unsigned bytes = max_prefix / 8;
    for (unsigned i = 0; i < bytes; ++i) {
        const unsigned bit0 = i * 8;
        std::uint8_t mask = 0;
        if (prefix >= bit0 + 8) mask = 0xff;
        else if (prefix > bit0) mask = static_cast<std::uint8_t>(0xff << (8 - (prefix - bit0)));
        network.address[i] = static_cast<std::uint8_t>(c.address[i] & mask);
    }
    if (network.address != c.address) {
        return bad(fmt::format("\"{}\" has host bits set; did you mean \"{}\"?", text,
                               network.to_string()));
    }
    return c;
}

std::string Cidr::to_string() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(ipv6 ? AF_INET6 : AF_INET, address.data(), buf, sizeof buf);
    return fmt::format("{}/{}", buf, prefix);
}

bool Cidr::contains(const Host& ip) const {
    std::array<std::uint8_t, 16> bytes{};
    if (ip.kind == Host::Kind::ipv4 && !ipv6) {
        inet_pton(AF_INET, ip.text.c_str(), bytes.data());
    } else if (ip.kind == Host::Kind::ipv6 && ipv6) {
        inet_pton(AF_INET6, ip.text.c_str(), bytes.data());
    } else {
        return false;
    }
    for (unsigned bit = 0; bit < prefix; ++bit) {
        const unsigned byte = bit / 8;
        const auto mask = static_cast<std::uint8_t>(0x80 >> (bit % 8));
        if ((bytes[byte] & mask) != (address[byte] & mask)) return false;
    }
    return true;
}

}  // namespace vmha::config
