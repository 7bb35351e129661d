#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>

#include <fmt/format.h>

#include <vmha/config/units.h>

namespace vmha::config {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
    return s;
}

// Reads leading decimal digits (with an optional fraction) from s; returns chars consumed.
std::size_t read_number(std::string_view s, double& value) {
    std::size_t i = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) != 0) ++i;
    if (i < s.size() && s[i] == '.') {
        ++i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) != 0) ++i;
    }
    if (i == 0) return 0;
    const std::string digits(s.substr(0, i));
    value = std::strtod(digits.c_str(), nullptr);
    return i;
}

Error bad(std::string reason) { return Error(errc::invalid_argument, std::move(reason)); }

}  // namespace

Result<Duration> parse_duration(std::string_view text) {
    const std::string_view s = trim(text);
    if (s.empty()) return bad("a duration is required, e.g. \"500ms\", \"30s\", \"10m\"");
    double total_ms = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        double number = 0;
        const std::size_t n = read_number(s.substr(i), number);
        if (n == 0) {
            return bad(fmt::format("duration \"{}\" is not a number followed by a unit "
                                   "(ms, s, m, h, d), e.g. \"30s\"",
                                   s));
        }
        i += n;
        std::size_t u = i;
        while (u < s.size() && std::isalpha(static_cast<unsigned char>(s[u])) != 0) ++u;
        const std::string_view unit = s.substr(i, u - i);
        double scale = 0;
        if (unit == "ms") scale = 1;
        else if (unit == "s") scale = 1000;
        else if (unit == "m" || unit == "min") scale = 60'000;
        else if (unit == "h") scale = 3'600'000;
        else if (unit == "d") scale = 86'400'000;
        else if (unit.empty()) {
            return bad(fmt::format("duration \"{}\" has no unit; write it with one of ms, s, m, "
                                   "h, d, e.g. \"{}s\"",
                                   s, s.substr(0, i)));
        } else {
            return bad(fmt::format("duration \"{}\" has an unknown unit \"{}\"; use ms, s, m, h "
                                   "or d",
                                   s, unit));
        }
        total_ms += number * scale;
        i = u;
        while (i < s.size() && s[i] == ' ') ++i;
    }
    if (total_ms > static_cast<double>(std::numeric_limits<std::int64_t>::max() / 2)) {
        return bad(fmt::format("duration \"{}\" is too long", s));
    }
    return Duration(static_cast<std::int64_t>(total_ms + 0.5));
}

std::string format_duration(Duration d) {
    auto ms = d.count();
    if (ms == 0) return "0s";
    std::string out;
    if (ms < 0) {
        out = "-";
        ms = -ms;
    }
    const struct {
        std::int64_t scale;
        const char* unit;
    } units[] = {{86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}, {1, "ms"}};
    for (const auto& [scale, unit] : units) {
        if (ms >= scale) {
            out += fmt::format("{}{}", ms / scale, unit);
            ms %= scale;
        }
    }
    return out;
}

Result<std::uint64_t> parse_size(std::string_view text) {
    const std::string_view s = trim(text);
    double number = 0;
    const std::size_t n = read_number(s, number);
    if (n == 0) {
        return bad(fmt::format("size \"{}\" is not a number with an optional unit (B, KiB, MiB, "
                               "GiB, TiB, KB, MB, GB, TB), e.g. \"4MiB\"",
                               s));
    }
    std::string_view unit = trim(s.substr(n));
    double scale = 0;
    constexpr double kib = 1024.0;
    if (unit.empty() || unit == "B") scale = 1;
    else if (unit == "K" || unit == "KiB" || unit == "k") scale = kib;
    else if (unit == "M" || unit == "MiB") scale = kib * kib;
    else if (unit == "G" || unit == "GiB") scale = kib * kib * kib;
    else if (unit == "T" || unit == "TiB") scale = kib * kib * kib * kib;
    else if (unit == "KB" || unit == "kB") scale = 1e3;
    else if (unit == "MB") scale = 1e6;
    else if (unit == "GB") scale = 1e9;
    else if (unit == "TB") scale = 1e12;
    else {
        return bad(fmt::format("size \"{}\" has an unknown unit \"{}\"; use B, KiB, MiB, GiB, TiB "
                               "(or KB, MB, GB, TB)",
                               s, unit));
    }
    const double bytes = number * scale;
    if (bytes > 1.8e19) return bad(fmt::format("size \"{}\" is too large", s));
    if (bytes != static_cast<double>(static_cast<std::uint64_t>(bytes))) {
        return bad(fmt::format("size \"{}\" is not a whole number of bytes", s));
    }
    return static_cast<std::uint64_t>(bytes);
}

std::string format_size(std::uint64_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        ++u;
    }
    if (u == 0) return fmt::format("{} B", bytes);
    if (v == static_cast<double>(static_cast<std::uint64_t>(v))) return fmt::format("{} {}", v, units[u]);
    return fmt::format("{:.1f} {}", v, units[u]);
}

Result<std::uint64_t> parse_rate(std::string_view text) {
    const std::string_view s = trim(text);
    if (s == "0" || s == "unlimited") return std::uint64_t{0};
    const auto slash = s.rfind("/s");
    if (slash == std::string_view::npos || slash + 2 != s.size()) {
        return bad(fmt::format("rate \"{}\" must be a size per second, e.g. \"200MiB/s\" "
                               "(or \"unlimited\")",
                               s));
    }
    auto size = parse_size(s.substr(0, slash));
    if (!size) return bad(fmt::format("rate \"{}\": {}", s, size.error().message));
    return *size;
}

}  // namespace vmha::config
