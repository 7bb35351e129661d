// The "etcd" lease backend: leases in an etcd cluster, through its v3 HTTP/JSON gateway.
//
// A module's lease is the key PREFIX + pair + "/" + module, whose value is the holder's
// name, attached to an etcd lease of the module's TTL:
//   acquire  range the key; free: grant an etcd lease, then a txn that puts the key only if
//            it does not exist (create_revision == 0), else ranges it (someone won the race:
//            the new etcd lease is revoked); held by us: a renewal.
//   renew    range the key; ours: keepalive its etcd lease (etcd answers the TTL restarted).
//   release  range the key; ours: revoke its etcd lease, which deletes the key.
//   query    range the key, then the etcd lease's time to live.
// The epoch is the key's create_revision: etcd's revisions only grow, and a key taken anew
// after expiry or release is created at a later revision. etcd counts TTLs in whole seconds
// on its leader; a new leader restarts every lease's TTL, which only lengthens leases.
//
// Each request is one HTTP/1.1 POST on a fresh connection, with a deadline; the endpoints
// are tried in order until one answers.
#include <cmath>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <vmha/lease/lease.h>

#include "asio.h"
#include "witness_wire.h"

namespace vmha::lease {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using nlohmann::json;

std::string base64(std::string_view in) {
    std::string out(4 * ((in.size() + 2) / 3), '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(in.data()),
                                  static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::optional<std::string> unbase64(std::string_view in) {
    if (in.size() % 4 != 0) return std::nullopt;
    std::string out(3 * in.size() / 4, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(in.data()),
                                  static_cast<int>(in.size()));
    if (n < 0) return std::nullopt;
    std::size_t size = static_cast<std::size_t>(n);
    for (auto it = in.rbegin(); it != in.rend() && *it == '='; ++it) --size;
    out.resize(size);
    return out;
}

// The gateway writes 64-bit integers as JSON strings and leaves out zero values.
std::int64_t int_field(const json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end()) return 0;
    if (it->is_number_integer()) return it->get<std::int64_t>();
    if (it->is_string()) {
        try {
            return std::stoll(it->get<std::string>());
        } catch (const std::exception&) {
            return 0;
        }
    }
    return 0;
}

struct KeyValue {
    std::string holder;
    std::int64_t lease = 0;
    std::uint64_t create_revision = 0;
};

struct EtcdClient : std::enable_shared_from_this<EtcdClient> {
    asio::any_io_executor executor;
    EtcdBackendOptions options;
    bool stopped = false;

    std::string key_of(const LeaseKey& key) const {
        return options.prefix + key.pair + "/" + key.module;
    }

    // One POST to the first endpoint that answers. etcd's own errors become whole sentences.
    asio::awaitable<Result<json>> post(const char* target, json body) {  // target: a literal
        auto self = shared_from_this();
        std::string failures;
        for (const auto& [host, port] : options.endpoints) {
            if (stopped) co_return Error(errc::shutting_down, "the etcd lease client is stopped");
            const std::string where = fmt::format("etcd {}:{}", host, port);
            beast::tcp_stream stream(executor);
            stream.expires_after(options.request_timeout);
            asio::ip::tcp::resolver resolver(executor);
            error_code ec;
            const auto endpoints = co_await resolver.async_resolve(
                host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
            if (!ec)
                co_await stream.async_connect(endpoints,
                                              asio::redirect_error(asio::use_awaitable, ec));
            http::request<http::string_body> req{http::verb::post, target, 11};
            req.set(http::field::host, host);
            req.set(http::field::content_type, "application/json");
            req.body() = body.dump();
            req.prepare_payload();
            if (!ec)
                co_await http::async_write(stream, req,
                                           asio::redirect_error(asio::use_awaitable, ec));
            beast::flat_buffer buffer;
            http::response_parser<http::string_body> parser;
            parser.body_limit(1u << 20);
            if (!ec)
                co_await http::async_read(stream, buffer, parser,
                                          asio::redirect_error(asio::use_awaitable, ec));
            error_code ignored;
            stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
            if (ec) {
                failures += fmt::format(
                    "{}{}: {}", failures.empty() ? "" : "; ", where,
                    ec == beast::error::timeout
                        ? fmt::format("no answer within {} ms", options.request_timeout.count())
                        : ec.message());
                continue;
            }
            const auto& res = parser.get();
            // keepalive answers a stream of {"result": ...} objects; the first is the answer.
            std::string text = res.body();
            if (const auto nl = text.find('\n'); nl != std::string::npos) text.resize(nl);
            auto parsed = json::parse(text, nullptr, false);
            if (parsed.is_discarded() || !parsed.is_object()) {
                co_return Error(errc::protocol_error,
                                fmt::format("{} answered {} with HTTP {} and no JSON object: "
                                            "\"{}\"",
                                            where, target, res.result_int(), text.substr(0, 200)));
            }
            if (parsed.contains("result") && parsed["result"].is_object())
                parsed = parsed["result"];
            if (res.result() != http::status::ok || parsed.contains("error")) {
                const auto message =
                    parsed.value("message", parsed.value("error", std::string("no message")));
                const bool gone = message.find("not found") != std::string::npos;
                co_return Error(gone ? errc::not_found : errc::busy,
                                fmt::format("{} refused {}: HTTP {}: {}", where, target,
                                            res.result_int(), message));
            }
            co_return parsed;
        }
        co_return Error(errc::connection_lost,
                        fmt::format("no etcd endpoint answered {}: {}", target, failures));
    }

    asio::awaitable<Result<std::optional<KeyValue>>> range(const LeaseKey& key) {
        const json body_r = json{{"key", base64(key_of(key))}};
        auto r = co_await post("/v3/kv/range", body_r);
        if (!r) co_return std::move(r).error();
        co_return parse_kvs(*r, key);
    }

    Result<std::optional<KeyValue>> parse_kvs(const json& response, const LeaseKey& key) const {
        const auto kvs = response.find("kvs");
        if (kvs == response.end() || !kvs->is_array() || kvs->empty())
            return std::optional<KeyValue>{};
        const auto& kv = kvs->front();
        KeyValue out;
        auto value = unbase64(kv.value("value", std::string()));
        if (!value || !wire::valid_name(*value)) {
            return Error(errc::protocol_error,
                         fmt::format("etcd key \"{}\" holds \"{}\", not a node name", key_of(key),
                                     kv.value("value", std::string())));
        }
        out.holder = std::move(*value);
        out.lease = int_field(kv, "lease");
        out.create_revision = static_cast<std::uint64_t>(int_field(kv, "create_revision"));
        return std::optional<KeyValue>(std::move(out));
    }

    asio::awaitable<Result<LeaseState>> state_of(const std::optional<KeyValue>& kv) {
        if (!kv) co_return LeaseState{};
        LeaseState s{kv->holder, Duration(0), Duration(0), kv->create_revision};
        if (kv->lease != 0) {
            const json body_r = json{{"ID", std::to_string(kv->lease)}};
            auto r = co_await post("/v3/lease/timetolive", body_r);
            if (!r) co_return std::move(r).error();
            s.remaining = std::chrono::seconds(std::max<std::int64_t>(0, int_field(*r, "TTL")));
            s.resolution = std::chrono::seconds(1);
            s.ttl = std::chrono::seconds(std::max<std::int64_t>(0, int_field(*r, "grantedTTL")));
            if (s.remaining > s.ttl) s.ttl = s.remaining;
        }
        co_return s;
    }

    static std::int64_t seconds_up(Duration ttl) {
        return std::max<std::int64_t>(1, static_cast<std::int64_t>((ttl.count() + 999) / 1000));
    }

    asio::awaitable<Result<LeaseState>> keepalive(const KeyValue& kv, const std::string& holder) {
        const json body_r = json{{"ID", std::to_string(kv.lease)}};
        auto r = co_await post("/v3/lease/keepalive", body_r);
        if (!r && r.error().is(errc::not_found)) co_return LeaseState{};  // expired meanwhile: lost
        if (!r) co_return std::move(r).error();
        const auto ttl = int_field(*r, "TTL");
        if (ttl <= 0) co_return LeaseState{};  // expired before the keepalive reached etcd: lost
        const Duration d = std::chrono::seconds(ttl);
        co_return LeaseState{holder, d, d, kv.create_revision};
    }

    asio::awaitable<Result<LeaseState>> acquire(LeaseKey key, std::string holder, Duration ttl) {
        auto self = shared_from_this();
        auto current = co_await range(key);
        if (!current) co_return std::move(current).error();
        if (*current) {
            if ((*current)->holder == holder) co_return co_await keepalive(**current, holder);
            co_return co_await state_of(*current);
        }
        const json body_grant = json{{"TTL", std::to_string(seconds_up(ttl))}};
        auto grant = co_await post("/v3/lease/grant", body_grant);
        if (!grant) co_return std::move(grant).error();
        const auto lease = int_field(*grant, "ID");
        const auto granted = int_field(*grant, "TTL");
        if (lease == 0 || granted <= 0) {
            co_return Error(errc::protocol_error,
                            fmt::format("etcd granted no lease: {}", grant->dump()));
        }
        const auto k = base64(key_of(key));
        json txn{{"compare", json::array({json{{"key", k},
                                               {"target", "CREATE"},
                                               {"result", "EQUAL"},
                                               {"create_revision", "0"}}})},
                 {"success",
                  json::array({json{{"request_put", json{{"key", k},
                                                         {"value", base64(holder)},
                                                         {"lease", std::to_string(lease)}}}}})},
                 {"failure", json::array({json{{"request_range", json{{"key", k}}}}})}};
        auto t = co_await post("/v3/kv/txn", txn);
        if (!t) co_return std::move(t).error();
        if (t->value("succeeded", false)) {
            const auto revision = static_cast<std::uint64_t>(
                int_field(t->value("header", json::object()), "revision"));
            const Duration d = std::chrono::seconds(granted);
            co_return LeaseState{holder, d, d, revision};
        }
        // Another node created the key between our range and our txn.
        const json body_v = json{{"ID", std::to_string(lease)}};
        (void)co_await post("/v3/lease/revoke", body_v);
        const auto responses = t->value("responses", json::array());
        if (responses.empty() || !responses[0].contains("response_range")) co_return LeaseState{};
        auto kv = parse_kvs(responses[0]["response_range"], key);
        if (!kv) co_return std::move(kv).error();
        co_return co_await state_of(*kv);
    }

    asio::awaitable<Result<LeaseState>> renew(LeaseKey key, std::string holder) {
        auto self = shared_from_this();
        auto current = co_await range(key);
        if (!current) co_return std::move(current).error();
        if (*current && (*current)->holder == holder)
            co_return co_await keepalive(**current, holder);
        co_return co_await state_of(*current);
    }

    asio::awaitable<Result<LeaseState>> release(LeaseKey key, std::string holder) {
        auto self = shared_from_this();
        auto current = co_await range(key);
        if (!current) co_return std::move(current).error();
        if (*current && (*current)->holder == holder) {
            const json body_r = json{{"ID", std::to_string((*current)->lease)}};
            auto r = co_await post("/v3/lease/revoke", body_r);
            if (!r && !r.error().is(errc::not_found))
                co_return std::move(r).error();  // not found: expired
        }
        co_return LeaseState{};
    }

    asio::awaitable<Result<LeaseState>> query(LeaseKey key) {
        auto self = shared_from_this();
        auto current = co_await range(key);
        if (!current) co_return std::move(current).error();
        co_return co_await state_of(*current);
    }

    void run(asio::awaitable<Result<LeaseState>> op, LeaseBackend::Done done) {
        if (stopped) return;  // no completion after stop()
        asio::co_spawn(executor, drive(shared_from_this(), std::move(op), std::move(done)),
                       asio::detached);
    }

    static asio::awaitable<void> drive(std::shared_ptr<EtcdClient> self,
                                       asio::awaitable<Result<LeaseState>> op,
                                       LeaseBackend::Done done) {
        Result<LeaseState> r = Error(errc::internal, "etcd lease request did not run");
        try {
            r = co_await std::move(op);
        } catch (const std::exception& e) {
            r = Error(errc::internal, fmt::format("etcd lease request failed: {}", e.what()));
        }
        if (!self->stopped) done(std::move(r));
    }
};

class EtcdBackend final : public LeaseBackend {
  public:
    explicit EtcdBackend(std::shared_ptr<EtcdClient> client) : client_(std::move(client)) {}
    ~EtcdBackend() override { client_->stopped = true; }

    void acquire(const LeaseKey& key, const std::string& holder, Duration ttl, Done done) override {
        client_->run(client_->acquire(key, holder, ttl), std::move(done));
    }
    void renew(const LeaseKey& key, const std::string& holder, Duration, Done done) override {
        client_->run(client_->renew(key, holder), std::move(done));
    }
    void release(const LeaseKey& key, const std::string& holder, DoneStatus done) override {
        client_->run(client_->release(key, holder), [done = std::move(done)](Result<LeaseState> r) {
            if (!r) return done(std::move(r).error());
            done(Status{});
        });
    }
    void query(const LeaseKey& key, Done done) override {
        client_->run(client_->query(key), std::move(done));
    }
    void stop() override { client_->stopped = true; }

  private:
    std::shared_ptr<EtcdClient> client_;
};

}  // namespace

Result<std::unique_ptr<LeaseBackend>> make_etcd_backend(asio::any_io_executor executor,
                                                        EtcdBackendOptions options) {
    if (options.endpoints.empty())
        return Error(errc::invalid_argument, "the etcd lease backend needs an endpoint");
    if (options.prefix.empty() || options.prefix.back() != '/') {
        return Error(errc::invalid_argument,
                     fmt::format("etcd key prefix \"{}\" must end with '/'", options.prefix));
    }
    auto client = std::make_shared<EtcdClient>();
    client->executor = std::move(executor);
    client->options = std::move(options);
    return std::unique_ptr<LeaseBackend>(std::make_unique<EtcdBackend>(std::move(client)));
}

}  // namespace vmha::lease
