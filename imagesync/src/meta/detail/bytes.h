// Little-endian field encoding and checksums for imagesync's metadata files (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <vmha/error.h>

#include <xxhash.h>

namespace imagesync::meta::detail {

inline void put_le(std::span<std::byte> out, std::size_t at, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) {
        out[at + i] = static_cast<std::byte>(static_cast<std::uint8_t>(value >> (8 * i)));
    }
}
inline std::uint64_t get_le(std::span<const std::byte> in, std::size_t at, std::size_t width) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i) {
        value |= static_cast<std::uint64_t>(std::to_integer<std::uint8_t>(in[at + i])) << (8 * i);
    }
    return value;
}
inline void put_u64(std::span<std::byte> out, std::size_t at, std::uint64_t v) { put_le(out, at, v, 8); }
inline void put_u32(std::span<std::byte> out, std::size_t at, std::uint32_t v) { put_le(out, at, v, 4); }
inline void put_u16(std::span<std::byte> out, std::size_t at, std::uint16_t v) { put_le(out, at, v, 2); }
inline void put_u8(std::span<std::byte> out, std::size_t at, std::uint8_t v) { put_le(out, at, v, 1); }
inline std::uint64_t get_u64(std::span<const std::byte> in, std::size_t at) { return get_le(in, at, 8); }
inline std::uint32_t get_u32(std::span<const std::byte> in, std::size_t at) {
    return static_cast<std::uint32_t>(get_le(in, at, 4));
}
inline std::uint16_t get_u16(std::span<const std::byte> in, std::size_t at) {
    return static_cast<std::uint16_t>(get_le(in, at, 2));
}
inline std::uint8_t get_u8(std::span<const std::byte> in, std::size_t at) {
    return static_cast<std::uint8_t>(get_le(in, at, 1));
}

// An 8-byte magic from an 8-character string literal, stored in file order.
inline std::uint64_t magic(const char (&text)[9]) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        value |= static_cast<std::uint64_t>(static_cast<unsigned char>(text[i])) << (8 * i);
    }
    return value;
}

inline std::uint64_t checksum(std::span<const std::byte> bytes) {
    return XXH3_64bits(bytes.data(), bytes.size());
}

// The common start of a metadata file's header page: u64 magic, u32 version, u32 flags
// (reserved), ..., and at `checksum_at` the XXH3-64 of the bytes before it. Checks all of it
// and says what is wrong, naming the file: `what` is e.g. "dirty map", `magic_text` the magic
// as it reads in the file. A torn or foreign header is errc::unreadable (corrupt); a newer
// version or unknown flags errc::version_mismatch.
inline vmha::Status check_header(std::span<const std::byte> h, std::uint64_t expected_magic,
                                 std::string_view magic_text, std::uint32_t max_version,
                                 std::size_t checksum_at, std::string_view what,
                                 std::string_view name) {
    auto corrupt = [&](std::string why) {
        return vmha::Error(vmha::errc::unreadable,
                           fmt::format("{} \"{}\" is corrupt: {}", what, name, why));
    };
    if (h.size() < checksum_at + 8) {
        return corrupt(fmt::format("its header is {} bytes long (torn or never written)", h.size()));
    }
    if (get_u64(h, 0) != expected_magic) {
        return corrupt(fmt::format("it does not start with the magic \"{}\"", magic_text));
    }
    const std::uint32_t version = get_u32(h, 8);
    if (version > max_version) {
        return vmha::Error(vmha::errc::version_mismatch,
                           fmt::format("{} \"{}\" has format version {}, newer than the version {} "
                                       "this imagesync understands",
                                       what, name, version, max_version));
    }
    const std::uint64_t stored = get_u64(h, checksum_at);
    const std::uint64_t actual = checksum(h.first(checksum_at));
    if (version == 0 || stored != actual) {
        return corrupt(fmt::format("its header checksum is {:016x} but the header hashes to {:016x} "
                                   "(version {})",
                                   stored, actual, version));
    }
    if (const std::uint32_t flags = get_u32(h, 12); flags != 0) {
        return vmha::Error(vmha::errc::version_mismatch,
                           fmt::format("{} \"{}\" sets flags {:#x} that this imagesync does not know",
                                       what, name, flags));
    }
    return {};
}

// "64 KiB", "1 GiB", or "12345 bytes" when not a whole number of a binary unit.
inline std::string human_size(std::uint64_t bytes) {
    static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    std::string unit;
    std::uint64_t value = bytes;
    for (const char* u : units) {
        if (value == 0 || value % 1024 != 0) break;
        value /= 1024;
        unit = u;
    }
    if (unit.empty()) return std::to_string(bytes) + " bytes";
    return std::to_string(value) + " " + unit;
}

inline bool is_power_of_two(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace imagesync::meta::detail
