// The CLI's side of vmhad's admin socket (docs/admin-protocol.md): one request, one reply,
// with a deadline. A tool, so it blocks.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

namespace vmha::cli {

inline constexpr const char* default_admin_socket = "/run/vmha/admin.sock";

struct AdminReply {
    bool reached = false;  // false: `problem` says why vmhad could not be asked
    std::string problem;
    nlohmann::json body;   // the reply object when reached
};

// Sends {"version":1, "verb":..., ...request} and reads one reply line.
AdminReply ask_vmhad(const std::string& socket_path, nlohmann::json request,
                     std::chrono::milliseconds timeout);

}  // namespace vmha::cli
