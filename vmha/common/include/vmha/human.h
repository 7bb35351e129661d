// Numbers for people, shared by the tools' human output.
#pragma once

#include <cstdint>
#include <string>

namespace vmha {

// "512 B", "1.5 KiB", "3.2 GiB" (binary units, one decimal).
std::string human_bytes(std::uint64_t bytes);

}  // namespace vmha
