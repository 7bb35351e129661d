// Logging for vmha daemons and tools (spdlog).
//
// Daemons log, tools print: daemons call init_logging() and log every state change with its
// reason; tools print their results on stdout and use the log only for diagnostics.
// Under a terminal, lines are coloured; otherwise they are plain, one event per line, with an
// ISO-8601 timestamp, so that log collectors can read them.
//
// Level meanings: error = something failed that an operator must look at; warn = degraded but
// handled (peer lost, checker failed); info = every state transition with its reason and every
// operator command; debug = protocol-level detail; trace = per-request detail.
#pragma once

#include <optional>
#include <string_view>

#include <spdlog/common.h>

namespace vmha {

// "error", "warn" (or "warning"), "info", "debug", "trace", "off". nullopt when unknown.
std::optional<spdlog::level::level_enum> parse_log_level(std::string_view text);

// Sets the default logger: stderr, named after the program, at the given level.
void init_logging(std::string_view program, spdlog::level::level_enum level);

}  // namespace vmha
