// The witness's durable lease records: one JSON file, replaced atomically (write a temporary
// file, fsync it, rename it over the old one, fsync the directory) before any reply that
// depends on it. A missing file is an empty table; a damaged one stops the witness from
// starting (it must not forget a grant it made).
#pragma once

#include <filesystem>
#include <vector>

#include <vmha/error.h>

#include "lease_table.h"

namespace vmha::witness {

Result<std::vector<Record>> load_state(const std::filesystem::path& file);
Status save_state(const std::filesystem::path& file, const std::vector<Record>& records);

}  // namespace vmha::witness
