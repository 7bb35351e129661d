// AdminServer: vmhad's admin socket, which the `vmha` CLI talks to (docs/admin-protocol.md).
//
// A unix stream socket, mode 0600 (root only; a client whose SO_PEERCRED uid is neither 0 nor
// vmhad's own is refused). Newline-delimited JSON, several requests per connection, answered
// in order, one at a time:
//   -> {"version":1,"verb":"status","module":"web1"}
//   <- {"version":1,"ok":true,"result":{...}}
//   <- {"version":1,"ok":false,"code":"not_found","error":"module \"x\" is not configured on hv1"}
// A request of another version is answered with code "version_mismatch" (the connection stays
// open); a line that is not a JSON object, or longer than 64 KiB, is answered with
// "invalid_argument" and the connection is closed. A client idle for 5 minutes between
// requests is closed. Several clients are served at once.
//
// Verbs are not interpreted here: every well-formed request goes to the injected AdminHandler,
// which answers asynchronously (`swap` completes when the VM runs on the peer).
//
// Owned by the io_context's single thread (the vmhad loop); the handler is called there and
// `done` must be called there, exactly once.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include <vmha/error.h>
#include <vmha/services/asio.h>

namespace vmha::services {

inline constexpr int admin_protocol_version = 1;
inline constexpr std::size_t admin_max_line = 64 * 1024;

class AdminHandler {
public:
    virtual ~AdminHandler() = default;
    // `request` is the whole request object (verb, module, options); `done` gets the result
    // object (sent as "result") or the Error (sent as "code" and "error").
    virtual void handle(const std::string& verb, const nlohmann::json& request,
                        std::function<void(vmha::Result<nlohmann::json>)> done) = 0;
};

class AdminServer {
public:
    AdminServer(boost::asio::io_context& io, std::filesystem::path socket_path, AdminHandler& handler);
    ~AdminServer();  // stop()
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    // Binds the socket (mode 0600). A socket file nobody accepts on is replaced; one that a live
    // server accepts on is refused (errc::busy), as is a path that is not a socket.
    vmha::Status listen();
    void start();
    // Stops accepting, closes every connection, removes the socket file.
    void stop();

    const std::filesystem::path& socket_path() const;
    std::size_t connections() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

// The reply line objects, shared with the CLI's tests.
nlohmann::json admin_ok_reply(nlohmann::json result);
nlohmann::json admin_error_reply(const vmha::Error& error);

}  // namespace vmha::services
