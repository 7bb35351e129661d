// Journal: one module's history on this node, for `vmha log` — state transitions with their
// rule and reason, checker failures and recoveries, the runner's notes, and operator commands
// with who ran them. JSON lines in <state_dir>/<module>/journal.jsonl, each with a sequence
// number and a UTC time; past `max_bytes` the file is rotated to journal.jsonl.1 (one old file
// kept), so the journal is bounded at about twice that.
//
// Owned by the vmhad loop's thread. Writes are appended and flushed, not synced: the journal is
// for people, the module state (FileStore) is what recovery reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmha::daemon {

class Journal {
public:
    explicit Journal(std::filesystem::path path, std::uintmax_t max_bytes = 1u << 20);

    // Adds "seq" and "time" to `entry` (an object with at least "kind") and appends it.
    void append(nlohmann::json entry);
    // The entries with a sequence number above `after`, at most the last `n` of them, oldest first.
    std::vector<nlohmann::json> read(std::uint64_t after, std::size_t n) const;
    std::uint64_t last_seq() const { return seq_; }

private:
    void open();
    std::vector<nlohmann::json> read_file(const std::filesystem::path& p) const;

    std::filesystem::path path_;
    std::uintmax_t max_bytes_;
    std::ofstream out_;
    std::uint64_t seq_ = 0;
};

// The current UTC time as 2026-11-26T19:42:07.123Z.
std::string utc_now();

}  // namespace vmha::daemon
