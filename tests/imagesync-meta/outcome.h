// Test support shared by the metadata tests: byte units, and a recorder for the outcome of a
// DoneCallback (how often it ran, and with what).
#pragma once

#include <cstdint>
#include <string>

#include "meta/meta_file.h"

namespace imagesync::meta::testing {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

struct Outcome {
    int calls = 0;
    bool ok = false;
    std::string message;
    DoneCallback callback() {
        return [this](vmha::Status st) {
            ++calls;
            ok = st.ok();
            if (!st) message = st.error().message;
        };
    }
};

}  // namespace imagesync::meta::testing
