// ImagesyncControl: vmhad's client of one imagesyncd's control socket.
//
// The protocol is imagesyncd's (docs/imagesync.md): one JSON object on one line each way per
// connection, e.g. {"verb":"promote","force":false} -> {"ok":true,...} or
// {"ok":false,"code":"not_up_to_date","error":"..."}. imagesyncd answers one request per
// connection, so every request opens its own connection: a control socket that went away
// (imagesyncd restarted) costs nothing but that request.
//
// Requests run one at a time, in the order given, each with its own deadline; a request whose
// deadline passes completes with errc::timeout and the next one starts. Completions run on the
// io_context. A reply with "ok": false becomes an Error with the daemon's code and sentence;
// a successful reply is passed on whole (including "ok").
//
// Owned by the io_context's single thread (the vmhad loop): construct, call and destroy it
// there. Destroying it abandons queued and running requests: their callbacks are never called.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include <vmha/error.h>
#include <vmha/services/asio.h>

namespace vmha::services {

class ImagesyncControl {
public:
    using Callback = std::function<void(vmha::Result<nlohmann::json>)>;

    ImagesyncControl(boost::asio::io_context& io, std::filesystem::path socket_path);
    ~ImagesyncControl();
    ImagesyncControl(const ImagesyncControl&) = delete;
    ImagesyncControl& operator=(const ImagesyncControl&) = delete;

    // Any request object with a "verb"; `timeout` defaults to default_timeout(verb).
    void request(nlohmann::json request, Callback done,
                 std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    void status(Callback done) { request({{"verb", "status"}}, std::move(done)); }
    void promote(bool force, Callback done) {
        request({{"verb", "promote"}, {"force", force}}, std::move(done));
    }
    void demote(Callback done) { request({{"verb", "demote"}}, std::move(done)); }
    void connect(Callback done) { request({{"verb", "connect"}}, std::move(done)); }
    void disconnect(Callback done) { request({{"verb", "disconnect"}}, std::move(done)); }
    void verify(bool mark, Callback done) {
        request({{"verb", "verify"}, {"mark", mark}}, std::move(done));
    }
    void resync(bool full, Callback done) {
        request({{"verb", "resync"}, {"full", full}}, std::move(done));
    }
    // Secondary, not connected: mark this copy Outdated durably (the peer went on alone).
    void outdate(Callback done) { request({{"verb", "outdate"}}, std::move(done)); }

    // Requests queued or running.
    std::size_t pending() const;
    const std::filesystem::path& socket_path() const;

    // 5 s for status and quick commands; demote drains writes (imagesyncd gives up after 60 s):
    // 90 s; verify compares whole disks: 6 h.
    static std::chrono::milliseconds default_timeout(const std::string& verb);

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

// The errc whose errc_name() is `name`; nullopt for names this build does not know.
std::optional<vmha::errc> errc_from_name(std::string_view name);

}  // namespace vmha::services
