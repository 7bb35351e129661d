#include <vmha/services/imagesync_control.h>

#include <deque>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmha::services {

namespace asio = boost::asio;
using boost::system::error_code;
using Protocol = asio::local::stream_protocol;

namespace {
constexpr std::size_t max_reply = 1 << 20;  // a status with many exports stays far below
}

std::optional<vmha::errc> errc_from_name(std::string_view name) {
    for (int i = static_cast<int>(errc::invalid_argument); i <= static_cast<int>(errc::internal); ++i) {
        const auto e = static_cast<errc>(i);
        if (errc_name(e) == name) return e;
    }
    return std::nullopt;
}

std::chrono::milliseconds ImagesyncControl::default_timeout(const std::string& verb) {
    using namespace std::chrono_literals;
    if (verb == "demote") return 90s;
    if (verb == "verify") return std::chrono::hours(6);
    return 5s;
}

struct ImagesyncControl::Impl : std::enable_shared_from_this<Impl> {
    struct Pending {
        nlohmann::json request;
        Callback done;
        std::chrono::milliseconds timeout;
    };

    Impl(asio::io_context& io_context, std::filesystem::path path)
        : io(io_context), socket_path(std::move(path)) {}

    void pump() {
        if (running || queue.empty() || abandoned) return;
        running = true;
        Pending p = std::move(queue.front());
        queue.pop_front();
        asio::co_spawn(io, run(shared_from_this(), std::move(p)), asio::detached);
    }

    static asio::awaitable<void> run(std::shared_ptr<Impl> self, Pending p) {
        auto result = co_await self->exchange(p);
        if (self->abandoned) co_return;
        self->running = false;
        p.done(std::move(result));  // may destroy the owner: `self` keeps us alive
        self->pump();
    }

    asio::awaitable<vmha::Result<nlohmann::json>> exchange(const Pending& p) {
        const std::string verb = p.request.value("verb", "?");
        auto socket = std::make_shared<Protocol::socket>(io);
        active = socket;
        auto timed_out = std::make_shared<bool>(false);
        asio::steady_timer deadline(io);
        deadline.expires_after(p.timeout);
        deadline.async_wait([socket, timed_out](const error_code& ec) {
            if (ec) return;
            *timed_out = true;
            error_code ignored;
            socket->close(ignored);
        });
        auto fail = [&](const char* step, const error_code& ec) -> vmha::Error {
            if (*timed_out) {
                return vmha::Error(errc::timeout,
                                   fmt::format("imagesyncd control socket \"{}\": \"{}\" got no "
                                               "answer within {} ms",
                                               socket_path.string(), verb, p.timeout.count()));
            }
            const errc code = ec == asio::error::eof ? errc::connection_lost
                                                     : errc_from_errno(ec.value());
            return vmha::Error(code, fmt::format("imagesyncd control socket \"{}\": {} for \"{}\" "
                                                 "failed: {}",
                                                 socket_path.string(), step, verb, ec.message()));
        };
        error_code ec;
        co_await socket->async_connect(Protocol::endpoint(socket_path.string()),
                                       asio::redirect_error(asio::use_awaitable, ec));
        if (ec || *timed_out) co_return fail("connecting", ec);
        const std::string line = p.request.dump() + "\n";
        co_await asio::async_write(*socket, asio::buffer(line),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec || *timed_out) co_return fail("sending", ec);
        std::string in;
        const std::size_t n = co_await asio::async_read_until(
            *socket, asio::dynamic_buffer(in, max_reply), '\n',
            asio::redirect_error(asio::use_awaitable, ec));
        deadline.cancel();
        if (ec || *timed_out) co_return fail("reading the answer", ec);
        auto reply = nlohmann::json::parse(in.substr(0, n), nullptr, false);
        if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok") ||
            !reply["ok"].is_boolean()) {
            co_return vmha::Error(errc::protocol_error,
                                  fmt::format("imagesyncd control socket \"{}\": the answer to \"{}\" "
                                              "is not a JSON object with \"ok\"",
                                              socket_path.string(), verb));
        }
        if (!reply["ok"].get<bool>()) {
            const std::string name = reply.value("code", "");
            const std::string message =
                reply.contains("error") && reply["error"].is_string()
                    ? reply["error"].get<std::string>()
                    : fmt::format("imagesyncd refused \"{}\"", verb);
            co_return vmha::Error(errc_from_name(name).value_or(errc::protocol_error), message);
        }
        co_return reply;
    }

    asio::io_context& io;
    std::filesystem::path socket_path;
    std::deque<Pending> queue;
    std::weak_ptr<Protocol::socket> active;  // the running request's connection
    bool running = false;
    bool abandoned = false;
};

ImagesyncControl::ImagesyncControl(asio::io_context& io, std::filesystem::path socket_path)
    : impl_(std::make_shared<Impl>(io, std::move(socket_path))) {}

ImagesyncControl::~ImagesyncControl() {
    impl_->abandoned = true;
    impl_->queue.clear();
    if (auto socket = impl_->active.lock()) {  // ends the running request's coroutine now
        error_code ignored;
        socket->close(ignored);
    }
}

void ImagesyncControl::request(nlohmann::json request, Callback done,
                               std::optional<std::chrono::milliseconds> timeout) {
    if (!request.is_object() || !request.contains("verb") || !request["verb"].is_string()) {
        internal_error("an imagesyncd control request needs a string \"verb\"");
    }
    const auto t = timeout.value_or(default_timeout(request["verb"].get<std::string>()));
    impl_->queue.push_back({std::move(request), std::move(done), t});
    impl_->pump();
}

std::size_t ImagesyncControl::pending() const {
    return impl_->queue.size() + (impl_->running ? 1u : 0u);
}

const std::filesystem::path& ImagesyncControl::socket_path() const { return impl_->socket_path; }

}  // namespace vmha::services
