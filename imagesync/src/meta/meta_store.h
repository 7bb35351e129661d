// The durable record of a node's copy: generations, data state, flags and resync cursor.
//
// One small file, "<meta dir>/node.meta", replaced atomically on every change: the new
// contents go to "node.meta.tmp", which is fsynced, renamed over node.meta, and the directory
// is fsynced. A reader therefore sees the old record or the new one, never a mix.
//
// Format (version 1, little-endian, 96 bytes):
//   0  magic "vmhameta"         8  version u32 (1)        12  flags u32 (reserved, 0)
//  16  length u32 (96)         20  history count u32 (4)  24  current u64   32  bitmap u64
//  40  history[4] u64         72  data state u8          73  node flags u8 (bit 0 was_primary,
//  bit 1 crashed_primary)     74  resync kind u8         75  zero padding  80  resync cursor u64
//  88  XXH3-64 of bytes 0..87
// A file that is not this (wrong magic, bad checksum, torn) or that a newer imagesync wrote
// (higher version, unknown flags) is an error that names the file and why, and save() refuses
// to replace it: the operator moves it aside deliberately. It is never silently re-created.
//
// Threading: blocking file I/O. Saves are rare (a generation or state change), so the daemon's
// loop may call it directly or hand it to a worker; one owner at a time.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include <vmha/error.h>

#include "meta/generations.h"

namespace imagesync::meta {

inline constexpr std::uint32_t kNodeMetaVersion = 1;
inline constexpr std::size_t kNodeMetaSize = 96;

// Pure encoding, for tests and tools. `name` is used in messages.
std::vector<std::byte> encode_node_meta(const NodeMeta& meta);
vmha::Result<NodeMeta> decode_node_meta(std::span<const std::byte> bytes, std::string_view name);

class MetaStore {
public:
    explicit MetaStore(std::filesystem::path meta_dir);

    const std::filesystem::path& path() const { return path_; }

    // The stored record; nullopt when there is none yet (a new node). A missing directory is
    // an error, not a new node.
    vmha::Result<std::optional<NodeMeta>> load() const;
    // Durably replaces the record (see above). Refuses when the existing file is unreadable.
    vmha::Status save(const NodeMeta& meta);

private:
    std::filesystem::path dir_;
    std::filesystem::path path_;
    std::filesystem::path tmp_path_;
};

}  // namespace imagesync::meta
