// The "vmha" lease backend: a client of vmha-witness over mutual TLS, on the control
// channel's framing and TLS helpers (vmha/peer/src).
//
// One connection per backend, opened when a request needs it and kept while it works;
// requests are pipelined with ids, each with its own deadline. A lost connection fails the
// requests in flight (connection_lost); the next request connects again.
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmha/lease/lease.h>

#include "asio.h"
#include "channel.h"
#include "tls.h"
#include "witness_wire.h"

namespace vmha::lease {

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using peer::detail::Channel;
using peer::detail::FrameType;

// Owned by the executor given at creation; coroutines hold it by shared_ptr.
struct WitnessClient : std::enable_shared_from_this<WitnessClient> {
    struct Pending {
        LeaseBackend::Done done;
        std::unique_ptr<asio::steady_timer> deadline;
        wire::Op op = wire::Op::query;
    };

    asio::any_io_executor executor;
    WitnessBackendOptions options;
    std::shared_ptr<asio::ssl::context> tls;
    std::shared_ptr<Channel> channel;
    bool connected = false;
    bool connecting = false;
    bool stopped = false;
    std::uint64_t next_id = 0;
    std::map<std::uint64_t, Pending> pending;  // sent, or waiting for the connection
    std::vector<std::uint64_t> unsent;         // ids waiting for the connection, in order
    std::map<std::uint64_t, nlohmann::json> unsent_payload;

    std::string where() const { return fmt::format("witness {}:{}", options.host, options.port); }

    void complete(std::uint64_t id, Result<LeaseState> result) {
        auto it = pending.find(id);
        if (it == pending.end()) return;
        auto done = std::move(it->second.done);
        it->second.deadline->cancel();
        pending.erase(it);
        unsent_payload.erase(id);
        asio::post(executor, [weak = weak_from_this(), done = std::move(done),
                              result = std::move(result)]() mutable {
            auto self = weak.lock();
            if (self && !self->stopped) done(std::move(result));
        });
    }

    void fail_all(const Error& error) {
        std::vector<std::uint64_t> ids;
        for (const auto& [id, p] : pending) ids.push_back(id);
        for (auto id : ids) complete(id, error);
        unsent.clear();
    }

    void request(wire::Request r, LeaseBackend::Done done) {
        if (stopped) return;  // no completion after stop()
        r.id = ++next_id;
        Pending p{std::move(done), std::make_unique<asio::steady_timer>(executor), r.op};
        p.deadline->expires_after(options.request_timeout);
        p.deadline->async_wait([weak = weak_from_this(), id = r.id,
                                op = r.op](const error_code& ec) {
            if (ec) return;
            auto self = weak.lock();
            if (!self) return;
            const bool sent = self->unsent_payload.count(id) == 0;
            self->complete(
                id, Error(errc::timeout,
                          fmt::format("{} did not answer a {} request within {} ms", self->where(),
                                      wire::to_string(op), self->options.request_timeout.count())));
            // A sent request that got no answer: the connection is stuck; start afresh.
            if (sent && self->channel) self->channel->close();
        });
        pending.emplace(r.id, std::move(p));
        auto payload = wire::encode(r);
        if (connected && channel && !channel->closed()) {
            channel->send(FrameType::message, payload);
            return;
        }
        unsent.push_back(r.id);
        unsent_payload.emplace(r.id, std::move(payload));
        if (!connecting) {
            connecting = true;
            asio::co_spawn(executor, connect(shared_from_this()), asio::detached);
        }
    }

    void flush_unsent() {
        for (auto id : unsent) {
            auto it = unsent_payload.find(id);
            if (it == unsent_payload.end()) continue;  // timed out meanwhile
            channel->send(FrameType::message, it->second);
            unsent_payload.erase(it);
        }
        unsent.clear();
    }

    static asio::awaitable<void> connect(std::shared_ptr<WitnessClient> self) {
        auto result = co_await self->open();
        self->connecting = false;
        if (self->stopped) co_return;
        if (!result) {
            spdlog::warn("{}", result.error().message);
            self->fail_all(result.error());
            if (self->channel) self->channel->close();
            co_return;
        }
        self->connected = true;
        spdlog::info("connected to {} (its certificate: {})", self->where(), *result);
        self->flush_unsent();
        asio::co_spawn(self->executor, read_loop(self, self->channel), asio::detached);
    }

    // Connects, handshakes, exchanges HELLO. Answers the witness's name.
    asio::awaitable<Result<std::string>> open() {
        auto self = shared_from_this();
        asio::ip::tcp::resolver resolver(executor);
        error_code ec;
        const auto endpoints =
            co_await resolver.async_resolve(options.host, std::to_string(options.port),
                                            asio::redirect_error(asio::use_awaitable, ec));
        if (stopped) co_return Error(errc::shutting_down, "the witness client is stopped");
        if (ec || endpoints.empty()) {
            co_return Error(
                errc::connection_lost,
                fmt::format("cannot resolve witness host \"{}\": {}", options.host, ec.message()));
        }
        const auto remote = endpoints.begin()->endpoint();
        channel = std::make_shared<Channel>(asio::ip::tcp::socket(executor), *tls, where());
        auto ch = channel;
        const asio::ip::tcp::endpoint local(remote.protocol() == asio::ip::tcp::v4()
                                                ? asio::ip::address(asio::ip::address_v4::any())
                                                : asio::ip::address(asio::ip::address_v6::any()),
                                            0);
        if (auto st = co_await ch->connect(local, remote, options.connect_timeout); !st)
            co_return st.error();
        if (auto st =
                co_await ch->handshake(asio::ssl::stream_base::client, options.connect_timeout);
            !st) {
            // The witness's certificate verdict when it failed, else what the handshake said
            // (e.g. the witness refusing this node's certificate).
            const bool verified = SSL_get_verify_result(ch->ssl()) == X509_V_OK;
            co_return Error(
                st.error().is(errc::timeout) ? errc::timeout : errc::connection_lost,
                fmt::format("TLS handshake with {} failed: {}", where(),
                            verified ? st.error().message
                                     : peer::detail::describe_handshake_failure({}, ch->ssl())));
        }
        if (!options.witness_name.empty()) {
            if (auto st =
                    peer::detail::check_peer_identity(ch->ssl(), options.witness_name, where());
                !st) {
                co_return st.error();
            }
        }
        ch->send(FrameType::hello, wire::hello("node", options.node));
        auto frame = co_await ch->read_frame(options.connect_timeout);
        if (!frame) {
            co_return Error(frame.error().code, fmt::format("{} did not answer HELLO: {}", where(),
                                                            frame.error().message));
        }
        if (frame->type == FrameType::refuse) {
            const auto reason = frame->payload.value("reason", std::string("no reason given"));
            co_return Error(errc::permission_denied, fmt::format("{} refused node \"{}\": {}",
                                                                 where(), options.node, reason));
        }
        if (frame->type != FrameType::hello) {
            co_return Error(errc::protocol_error,
                            fmt::format("{} answered HELLO with {}", where(),
                                        peer::detail::to_string(frame->type)));
        }
        auto name = wire::parse_hello(frame->payload, "witness");
        if (!name)
            co_return Error(name.error().code,
                            fmt::format("{}: {}", where(), name.error().message));
        co_return std::move(*name);
    }

    static asio::awaitable<void> read_loop(std::shared_ptr<WitnessClient> self,
                                           std::shared_ptr<Channel> ch) {
        for (;;) {
            auto frame = co_await ch->read_frame(std::chrono::hours(24));
            if (self->stopped || self->channel != ch) co_return;
            Error failure(errc::connection_lost, "");
            if (!frame) {
                failure = Error(
                    errc::connection_lost,
                    fmt::format("connection to {} lost: {}", self->where(), frame.error().message));
            } else if (frame->type == FrameType::ping) {
                continue;
            } else if (frame->type != FrameType::message) {
                failure = Error(errc::protocol_error,
                                fmt::format("{} sent an unexpected {} frame", self->where(),
                                            peer::detail::to_string(frame->type)));
            } else if (auto reply = wire::parse_reply(frame->payload); !reply) {
                failure = Error(
                    errc::protocol_error,
                    fmt::format("{} sent a bad reply: {}", self->where(), reply.error().message));
            } else {
                self->complete(reply->id, std::move(reply->result));
                continue;
            }
            spdlog::warn("{}", failure.message);
            ch->close();
            self->connected = false;
            self->fail_all(failure);
            co_return;
        }
    }

    void stop() {
        if (stopped) return;
        stopped = true;
        if (channel) channel->close();
        fail_all(Error(errc::shutting_down, "the witness client is stopped"));
    }
};

class WitnessBackend final : public LeaseBackend {
  public:
    explicit WitnessBackend(std::shared_ptr<WitnessClient> client) : client_(std::move(client)) {}
    ~WitnessBackend() override { client_->stop(); }

    void acquire(const LeaseKey& key, const std::string& holder, Duration ttl, Done done) override {
        send(wire::Op::acquire, key, holder, ttl, std::move(done));
    }
    void renew(const LeaseKey& key, const std::string& holder, Duration ttl, Done done) override {
        send(wire::Op::renew, key, holder, ttl, std::move(done));
    }
    void release(const LeaseKey& key, const std::string& holder, DoneStatus done) override {
        send(wire::Op::release, key, holder, Duration(0),
             [done = std::move(done)](Result<LeaseState> r) {
                 if (!r) return done(std::move(r).error());
                 done(Status{});
             });
    }
    void query(const LeaseKey& key, Done done) override {
        client_->request(wire::Request{0, wire::Op::query, key, Duration(0)}, std::move(done));
    }
    void stop() override { client_->stop(); }

  private:
    // The witness knows the holder from the connection's certificate; `holder` must be this node.
    void send(wire::Op op, const LeaseKey& key, const std::string& holder, Duration ttl,
              Done done) {
        if (holder != client_->options.node) {
            asio::post(
                client_->executor, [done = std::move(done), holder, node = client_->options.node] {
                    done(Error(errc::invalid_argument,
                               fmt::format("this witness client speaks for node \"{}\", not \"{}\"",
                                           node, holder)));
                });
            return;
        }
        client_->request(wire::Request{0, op, key, ttl}, std::move(done));
    }

    std::shared_ptr<WitnessClient> client_;
};

}  // namespace

Result<std::unique_ptr<LeaseBackend>> make_witness_backend(asio::any_io_executor executor,
                                                           WitnessBackendOptions options) {
    if (!wire::valid_name(options.node)) {
        return Error(errc::invalid_argument,
                     fmt::format("node name \"{}\" is not valid for the witness", options.node));
    }
    if (options.host.empty() || options.port == 0) {
        return Error(errc::invalid_argument,
                     fmt::format("witness endpoint \"{}:{}\" names no host or port", options.host,
                                 options.port));
    }
    auto tls = peer::detail::make_tls_context(
        config::Tls{options.tls.ca, options.tls.cert, options.tls.key}, options.node);
    if (!tls) return std::move(tls).error();
    auto client = std::make_shared<WitnessClient>();
    client->executor = std::move(executor);
    client->options = std::move(options);
    client->tls = std::move(*tls);
    return std::unique_ptr<LeaseBackend>(std::make_unique<WitnessBackend>(std::move(client)));
}

}  // namespace vmha::lease
