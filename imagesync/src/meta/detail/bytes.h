// Little-endian field encoding and checksums for imagesync's metadata files (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

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
