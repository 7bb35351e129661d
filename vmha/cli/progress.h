// Progress of a resync or a verify for people and scripts: a bar redrawn in place on a
// terminal, a plain line every few seconds otherwise, one JSON object per line with --json.
#pragma once

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

namespace vmha::cli {

class Progress {
public:
    // On stdout; a bar when stdout is a terminal.
    Progress(std::string what, bool json);
    // On `out`, as a terminal or not (tests).
    Progress(std::string what, bool json, std::ostream& out, bool tty);
    // `done` of `total` bytes; `detail` is extra text (the ETA). `sample` is what --json prints.
    void show(std::uint64_t done, std::uint64_t total, const std::string& detail, const nlohmann::json& sample);
    // Ends the bar's line (terminal), before the result is printed.
    void finish();

private:
    std::string what_;
    bool json_;
    std::ostream& out_;
    bool tty_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point last_line_{};
};

}  // namespace vmha::cli
