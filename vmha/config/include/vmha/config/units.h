// Typed values that configuration files spell as text: durations ("500ms", "1m30s"),
// sizes ("4MiB", "1G"), rates ("200MiB/s"). Each parser returns the value or an Error whose
// message is the reason, ready to be prefixed with the file location and key.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <vmha/error.h>

namespace vmha::config {

using Duration = std::chrono::milliseconds;

// "500ms", "30s", "10m", "2h", "1d", or a sum such as "1m30s". A bare number is refused:
// a unit is always required. Units: ms, s, m, h, d.
Result<Duration> parse_duration(std::string_view text);
std::string format_duration(Duration d);  // "1m30s", "500ms", "0s"

// Byte counts: "4096", "512B", "4KiB", "1MiB", "1GiB", "2TiB" (binary) or "1KB", "1MB",
// "1GB", "1TB" (decimal); "4K", "1M", "1G" are binary, as in qemu-img.
Result<std::uint64_t> parse_size(std::string_view text);
std::string format_size(std::uint64_t bytes);  // "4 KiB", "1.5 GiB", "512 B"

// Bytes per second: a size followed by "/s", e.g. "200MiB/s". "0" or "unlimited" mean no limit
// (returned as 0).
Result<std::uint64_t> parse_rate(std::string_view text);

}  // namespace vmha::config
