// One admin request from a verb's point of view: ask vmhad, and print a refusal once, the same
// way for every verb (a sentence on stderr; with --json also {"ok":false,...} on stdout).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.h"

namespace vmha::cli {

struct Answer {
    int exit = exit_ok;     // exit_ok, exit_refused or exit_unreachable
    nlohmann::json result;  // the reply's result object when exit_ok
    std::string code;       // vmha::errc name of a refusal ("unreachable" when not reached)
    std::string error;      // the sentence
};

// Asks without printing anything.
Answer call(const AdminOptions& options, nlohmann::json request, std::chrono::milliseconds default_timeout);
// Prints a failed answer (stderr; and stdout as JSON with --json) and returns its exit status.
int report(const AdminOptions& options, const Answer& answer);
// Prints a result object: JSON with --json, else `message` when it has one.
void print_result(const AdminOptions& options, const nlohmann::json& result);

// Small readers of reply objects (tolerant: a missing key gives the fallback).
std::string str(const nlohmann::json& j, const char* key, const char* fallback = "-");
std::uint64_t num(const nlohmann::json& j, const char* key);

inline constexpr std::chrono::seconds status_timeout{10};
inline constexpr std::chrono::minutes command_timeout{15};
inline constexpr std::chrono::hours verify_timeout{6};

}  // namespace vmha::cli
