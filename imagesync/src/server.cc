// The acceptor and the process lifecycle of imagesyncd: open everything, listen on the unix
// socket (which makes the daemon ready), serve until SIGTERM/SIGINT, drain, exit.
#include <unistd.h>

#include <csignal>
#include <optional>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <imagesync/server.h>

#include "asio.h"
#include "connection.h"
#include "control/control_server.h"
#include "replication/replicator.h"
#include "export.h"
#include "uring.h"

namespace imagesync {

namespace {

using boost::system::error_code;
using Protocol = asio::local::stream_protocol;

constexpr unsigned kRingEntries = 256;
constexpr std::chrono::seconds kDrainTimeout{30};

// Removes a socket file left behind by a dead imagesyncd; refuses to touch a live one or a
// file that is not a socket.
vmha::Status clear_stale_socket(asio::io_context& io, const std::filesystem::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return {};  // nothing there
    if (!S_ISSOCK(st.st_mode)) {
        return vmha::Error(
            vmha::errc::already_exists,
            fmt::format("socket path \"{}\" exists and is not a socket", path.string()));
    }
    Protocol::socket probe(io);
    error_code ec;
    probe.connect(Protocol::endpoint(path.string()), ec);
    if (!ec) {
        return vmha::Error(
            vmha::errc::busy,
            fmt::format("socket \"{}\" is served by another running process", path.string()));
    }
    std::error_code remove_error;
    std::filesystem::remove(path, remove_error);
    if (remove_error) {
        return vmha::Error(vmha::errc_from_errno(remove_error.value()),
                           fmt::format("cannot remove stale socket \"{}\": {}", path.string(),
                                       remove_error.message()));
    }
    spdlog::info("removed stale socket \"{}\"", path.string());
    return {};
}

class Server {
  public:
    Server(asio::io_context& io, const ServerConfig& config)
        : io_(io),
          config_(config),
          acceptor_(io),
          signals_(io, SIGTERM, SIGINT),
          drain_deadline_(io),
          retry_timer_(io) {}

    vmha::Status open() {
        auto uring = Uring::create(io_, kRingEntries);
        if (!uring) return std::move(uring).error();
        uring_ = std::move(*uring);

        if (!config_.meta_dir.empty()) {
            std::error_code ec;
            std::filesystem::create_directories(config_.meta_dir, ec);
            if (ec) {
                return vmha::Error(vmha::errc_from_errno(ec.value()),
                                   fmt::format("cannot create meta directory \"{}\": {}",
                                               config_.meta_dir.string(), ec.message()));
            }
        }
        if (config_.exports.empty()) {
            return vmha::Error(vmha::errc::invalid_argument, "no export given (use --image)");
        }
        std::set<std::string> names;
        for (const ExportSpec& spec : config_.exports) {
            if (!names.insert(spec.name).second) {
                return vmha::Error(vmha::errc::invalid_argument,
                                   fmt::format("export \"{}\" is given twice", spec.name));
            }
            auto e =
                Export::open(*uring_, io_.get_executor(), spec, config_.role, config_.growable,
                             config_.inline_writes);
            if (!e) return std::move(e).error();
            // One file, one export: ordering of overlapping writes (and, later, replication)
            // is kept per export, so two exports must never share a file.
            struct stat st {};
            if (::stat(spec.path.c_str(), &st) == 0) {
                const auto [it, fresh] =
                    files_.emplace(std::make_pair(st.st_dev, st.st_ino), spec.name);
                if (!fresh) {
                    return vmha::Error(vmha::errc::invalid_argument,
                                       fmt::format("exports \"{}\" and \"{}\" are the same file "
                                                   "\"{}\"",
                                                   it->second, spec.name, spec.path.string()));
                }
            }
            export_pointers_.push_back(e->get());
            exports_.push_back(std::move(*e));
        }
        if (auto s = open_replication(); !s) return s;
        if (!config_.control_socket.empty()) {
            control_.emplace(io_, config_.control_socket,
                             [this](const nlohmann::json& request, auto reply) {
                                 on_control(request, std::move(reply));
                             });
            if (auto s = control_->listen(); !s) return s;
        }
        return listen();
    }

    void start() {
        signals_.async_wait([this](const error_code& ec, int signo) {
            if (ec) return;
            spdlog::info("received signal {} ({}): stopping", signo,
                         signo == SIGTERM ? "SIGTERM" : "SIGINT");
            begin_shutdown();
        });
        asio::co_spawn(io_, accept_loop(), asio::detached);
        if (replicator_) replicator_->start();
        if (control_) control_->start();
        spdlog::info("imagesyncd ready: {} export(s) on socket \"{}\", role {}", exports_.size(),
                     config_.socket_path.string(), role_name(config_.role));
    }

  private:
    vmha::Status open_replication() {
        if (config_.listen.empty() && config_.peer.empty()) return {};
        replication::ReplicatorConfig rc;
        rc.module = config_.module;
        rc.node = config_.node;
        rc.role = config_.role;
        rc.timeout = config_.timeout;
        rc.meta_dir = config_.meta_dir;
        rc.start_disconnected = config_.start_disconnected;
        rc.fence = config_.fence;
        rc.resync_rate = config_.resync_rate;
        rc.resync_min_rate = config_.resync_min_rate;
        rc.zero_copy_min_bytes = config_.zero_copy_min_bytes;
        rc.chunk_size = config_.chunk_size;
        rc.activity_log_extent = config_.activity_log_extent;
        rc.tcp_congestion = config_.tcp_congestion;
        auto policy = replication::parse_split_brain_policy(config_.split_brain);
        if (!policy) return vmha::Error(policy.error().code, "--split-brain: " + policy.error().message);
        rc.split_brain = *policy;
        if (!config_.listen.empty()) {
            auto e = replication::parse_endpoint(config_.listen);
            if (!e) return vmha::Error(e.error().code, "--listen: " + e.error().message);
            rc.listen = *e;
        }
        if (!config_.peer.empty()) {
            auto e = replication::parse_endpoint(config_.peer);
            if (!e) return vmha::Error(e.error().code, "--peer: " + e.error().message);
            rc.peer = *e;
        }
        auto r = replication::Replicator::open(io_, *uring_, rc, export_pointers_);
        if (!r) return std::move(r).error();
        replicator_ = std::move(*r);
        for (std::size_t i = 0; i < exports_.size(); ++i) {
            exports_[i]->add_sink(replicator_->sink(i));
            exports_[i]->set_gate(replicator_->gate(i));
        }
        return {};
    }

    void on_control(const nlohmann::json& request, std::function<void(nlohmann::json)> reply) {
        const std::string verb = request.value("verb", "");
        const bool force = request.value("force", false);
        spdlog::info("control: {}{}", verb, force ? " --force" : "");
        auto ok = [](nlohmann::json j) {
            j["ok"] = true;
            return j;
        };
        if (verb == "status") {
            nlohmann::json j = replicator_ ? replicator_->status() : nlohmann::json{
                {"role", std::string(role_name(config_.role))},
                {"connection", "none"},
                {"data_state", "Unknown"},
                {"dirty_bytes", 0},
                {"in_flight", 0}};
            std::size_t clients = connections_.size();
            j["nbd_connections"] = clients;
            // How each image's writes and flushes were done (image_file.h): where inline I/O
            // stalled and went back to io_uring, and whether early write-back is engaged.
            nlohmann::json io = nlohmann::json::array();
            for (const auto& e : exports_) {
                const ImageFile::WriteCounts& c = e->file().write_counts();
                io.push_back({{"export", e->info().name},
                              {"inline_writes", c.inline_writes},
                              {"ring_writes", c.ring_writes},
                              {"direct_writes", c.direct_writes},
                              {"inline_flushes", c.inline_flushes},
                              {"ring_flushes", c.ring_flushes},
                              {"early_writebacks", c.early_writebacks},
                              {"stalls", c.stalls},
                              {"direct_reads", c.direct_reads}});
            }
            j["image_io"] = std::move(io);
            j["pid"] = ::getpid();
            reply(ok(std::move(j)));
            return;
        }
        if (!replicator_) {
            reply(error_reply(vmha::Error(vmha::errc::unsupported,
                                          fmt::format("\"{}\" needs replication (--listen or --peer)",
                                                      verb))));
            return;
        }
        if (verb == "promote") {
            auto s = replicator_->promote(force);
            reply(s ? ok(replicator_->status()) : error_reply(s.error()));
        } else if (verb == "demote") {
            replicator_->demote([this, reply, ok](vmha::Status s) {
                reply(s ? ok(replicator_->status()) : error_reply(s.error()));
            });
        } else if (verb == "resync") {
            auto s = replicator_->resync(request.value("full", false));
            reply(s ? ok(replicator_->status()) : error_reply(s.error()));
        } else if (verb == "verify") {
            replicator_->verify(request.value("mark", false),
                                [reply, ok](vmha::Result<nlohmann::json> r) {
                                    reply(r ? ok(std::move(*r)) : error_reply(r.error()));
                                });
        } else if (verb == "connect") {
            replicator_->connect();
            reply(ok(replicator_->status()));
        } else if (verb == "disconnect") {
            replicator_->disconnect();
            reply(ok(replicator_->status()));
        } else if (verb == "outdate") {
            auto s = replicator_->outdate();
            reply(s ? ok(replicator_->status()) : error_reply(s.error()));
        } else if (verb == "discard-unacknowledged") {
            auto s = replicator_->discard_unacknowledged();
            reply(s ? ok(replicator_->status()) : error_reply(s.error()));
        } else if (verb == "write-lease") {
            // {"valid_for_ms": N} (0 to 86400000) sets the deadline N ms from now; {"clear": true}
            // removes it.
            if (request.value("clear", false)) {
                replicator_->set_write_lease(std::nullopt);
                reply(ok(replicator_->status()));
                return;
            }
            const auto it = request.find("valid_for_ms");
            if (it == request.end() || !it->is_number_integer() || it->get<std::int64_t>() < 0 ||
                it->get<std::int64_t>() > 86400000) {
                reply(error_reply(vmha::Error(vmha::errc::invalid_argument,
                                              "\"write-lease\" needs \"valid_for_ms\" (0 to 86400000) or "
                                              "\"clear\": true")));
                return;
            }
            replicator_->set_write_lease(std::chrono::milliseconds(it->get<std::int64_t>()));
            reply(ok(replicator_->status()));
        } else if (verb == "resume-io") {
            auto s = replicator_->release_fence();
            reply(s ? ok(replicator_->status()) : error_reply(s.error()));
        } else {
            reply(error_reply(vmha::Error(vmha::errc::invalid_argument,
                                          fmt::format("unknown verb \"{}\"; the verbs are status, "
                                                      "promote, demote, resync, verify, connect, resume-io, write-lease, discard-unacknowledged, "
                                                      "disconnect and outdate",
                                                      verb))));
        }
    }

    vmha::Status listen() {
        const std::string path = config_.socket_path.string();
        if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
            return vmha::Error(vmha::errc::invalid_argument,
                               fmt::format("socket path \"{}\" is empty or longer than {} bytes",
                                           path, sizeof(sockaddr_un::sun_path) - 1));
        }
        if (auto s = clear_stale_socket(io_, config_.socket_path); !s) return s;
        error_code ec;
        acceptor_.open(Protocol(), ec);
        if (!ec) acceptor_.bind(Protocol::endpoint(path), ec);
        if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            return vmha::Error(
                vmha::errc_from_errno(ec.value()),
                fmt::format("cannot listen on socket \"{}\": {}", path, ec.message()));
        }
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) socket_inode_ = st.st_ino;
        return {};
    }

    asio::awaitable<void> accept_loop() {
        while (!stopping_) {
            error_code ec;
            Protocol::socket socket =
                co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (stopping_) break;
            if (ec) {
                spdlog::warn("accepting a connection on \"{}\" failed: {}",
                             config_.socket_path.string(), ec.message());
                // E.g. out of file descriptors: back off instead of spinning.
                retry_timer_.expires_after(std::chrono::milliseconds(100));
                co_await retry_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                continue;
            }
            const std::uint64_t id = ++last_connection_id_;
            auto connection = std::make_shared<Connection>(
                id, std::move(socket), export_pointers_,
                [this](std::uint64_t closed) { on_connection_closed(closed); });
            connections_.emplace(id, connection);
            connection->start();
        }
    }

    void on_connection_closed(std::uint64_t id) {
        connections_.erase(id);
        if (stopping_) maybe_finish();
    }

    void begin_shutdown() {
        if (stopping_) return;
        stopping_ = true;
        error_code ignored;
        acceptor_.close(ignored);
        remove_socket_file();
        spdlog::info("stopping: finishing the requests of {} connection(s)", connections_.size());
        // Copy: stop() may close synchronously and erase from the map later on.
        std::vector<std::shared_ptr<Connection>> open(connections_.size());
        std::transform(connections_.begin(), connections_.end(), open.begin(),
                       [](const auto& kv) { return kv.second; });
        for (const auto& c : open) c->stop();
        drain_deadline_.expires_after(kDrainTimeout);
        drain_deadline_.async_wait([this](const error_code& ec) {
            if (ec) return;
            spdlog::warn("stopping: {} connection(s) did not drain within {} s; closing them",
                         connections_.size(), kDrainTimeout.count());
            for (const auto& [id, c] : connections_) c->abort();
        });
        maybe_finish();
    }

    // Clients first (their writes may wait for the peer), then the replication link (no more
    // writes from the peer), then the ring once its last I/O completed.
    void maybe_finish() {
        if (!connections_.empty()) return;
        drain_deadline_.cancel();
        signals_.cancel();
        if (control_) control_->stop();
        if (replicator_ && !replicator_stopped_) {
            replicator_stopped_ = true;
            replicator_->stop([this] { maybe_finish(); });
            return;
        }
        if (uring_->in_flight() != 0) {
            retry_timer_.expires_after(std::chrono::milliseconds(10));
            retry_timer_.async_wait([this](const error_code& ec) {
                if (!ec) maybe_finish();
            });
            return;
        }
        uring_->stop();
    }

    // Only our own socket: a new imagesyncd may already have replaced it.
    void remove_socket_file() {
        struct stat st {};
        if (::stat(config_.socket_path.c_str(), &st) == 0 && st.st_ino == socket_inode_) {
            std::error_code ignored;
            std::filesystem::remove(config_.socket_path, ignored);
        }
    }

    asio::io_context& io_;
    const ServerConfig& config_;
    std::unique_ptr<Uring> uring_;
    std::vector<std::unique_ptr<Export>> exports_;
    std::vector<Export*> export_pointers_;
    std::unique_ptr<replication::Replicator> replicator_;
    bool replicator_stopped_ = false;
    std::optional<ControlServer> control_;
    std::map<std::pair<dev_t, ino_t>, std::string> files_;
    Protocol::acceptor acceptor_;
    asio::signal_set signals_;
    asio::steady_timer drain_deadline_;
    asio::steady_timer retry_timer_;
    std::map<std::uint64_t, std::shared_ptr<Connection>> connections_;
    std::uint64_t last_connection_id_ = 0;
    ino_t socket_inode_ = 0;
    bool stopping_ = false;
};

}  // namespace

vmha::Status run_server(const ServerConfig& config) {
    asio::io_context io(1);
    // Writing to a client that went away must be an error, not a signal.
    std::signal(SIGPIPE, SIG_IGN);
    Server server(io, config);
    if (auto s = server.open(); !s) return s;
    server.start();
    io.run();
    spdlog::info("imagesyncd stopped");
    return {};
}

}  // namespace imagesync
