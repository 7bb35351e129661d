// imagesyncd's control socket: how vmhad (and the `imagesync` tool) ask for status and give
// commands — status, promote, demote, connect, disconnect.
//
// Protocol: a unix stream socket; the client sends one JSON object on one line, e.g.
//   {"verb": "promote", "force": false}
// and gets one JSON object on one line back: {"ok": true, ...} or
//   {"ok": false, "code": "not_up_to_date", "error": "the data here is Inconsistent; ..."}.
// A request line is at most 64 KiB; anything malformed gets {"ok": false, "code":
// "invalid_argument"} and the connection closes. Documented in docs/imagesync.md.
//
// Owned by the io_context's single thread.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include <vmha/error.h>

#include "asio.h"

namespace imagesync {

class ControlServer {
public:
    // Answers a request; `reply` must be called exactly once (possibly later).
    using Handler = std::function<void(const nlohmann::json& request,
                                       std::function<void(nlohmann::json reply)> reply)>;

    ControlServer(asio::io_context& io, std::filesystem::path path, Handler handler);
    ~ControlServer();

    vmha::Status listen();
    void start();
    void stop();

private:
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> serve(std::shared_ptr<asio::local::stream_protocol::socket> socket);
    nlohmann::json answer(const std::string& line, std::function<void(nlohmann::json)> reply);

    asio::io_context& io_;
    std::filesystem::path path_;
    Handler handler_;
    asio::local::stream_protocol::acceptor acceptor_;
    // Clients being served, closed by stop() so that an idle client cannot hold up shutdown.
    std::set<std::shared_ptr<asio::local::stream_protocol::socket>> clients_;
    bool stopped_ = false;
};

// Builds the error reply for `error`.
nlohmann::json error_reply(const vmha::Error& error);

}  // namespace imagesync
