#include "witness_wire.h"

#include <algorithm>

#include <fmt/format.h>

namespace vmha::lease::wire {

using nlohmann::json;

std::string_view to_string(Op op) {
    switch (op) {
        case Op::acquire:
            return "acquire";
        case Op::renew:
            return "renew";
        case Op::release:
            return "release";
        case Op::query:
            return "query";
    }
    return "unknown";
}

bool valid_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    });
}

bool valid_pair(std::string_view pair) {
    const auto plus = pair.find('+');
    if (plus == std::string_view::npos) return false;
    const auto a = pair.substr(0, plus);
    const auto b = pair.substr(plus + 1);
    return valid_name(a) && valid_name(b) && a < b;
}

std::pair<std::string, std::string> pair_nodes(std::string_view pair) {
    const auto plus = pair.find('+');
    return {std::string(pair.substr(0, plus)), std::string(pair.substr(plus + 1))};
}

json hello(std::string_view role_key, std::string_view name) {
    return json{{"protocol", protocol_name},
                {"version", static_cast<unsigned>(protocol_version)},
                {std::string(role_key), name}};
}

namespace {

Result<std::string> string_field(const json& j, const char* key, const char* what) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
        return Error(errc::protocol_error, fmt::format("a {} has no \"{}\" string", what, key));
    }
    return it->get<std::string>();
}

Result<std::uint64_t> uint_field(const json& j, const char* key, const char* what) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer() ||
        (!it->is_number_unsigned() && it->get<std::int64_t>() < 0)) {
        return Error(errc::protocol_error,
                     fmt::format("a {} has no \"{}\" unsigned number", what, key));
    }
    return it->get<std::uint64_t>();
}

}  // namespace

Result<std::string> parse_hello(const json& payload, std::string_view role_key) {
    auto protocol = string_field(payload, "protocol", "HELLO");
    if (!protocol) return std::move(protocol).error();
    if (*protocol != protocol_name) {
        return Error(errc::protocol_error, fmt::format("the other side speaks \"{}\", not \"{}\"",
                                                       *protocol, protocol_name));
    }
    auto version = uint_field(payload, "version", "HELLO");
    if (!version) return std::move(version).error();
    if (*version != static_cast<std::uint64_t>(protocol_version)) {
        return Error(errc::version_mismatch,
                     fmt::format("witness protocol version {} is not supported (this "
                                 "side speaks {})",
                                 *version, protocol_version));
    }
    const std::string key(role_key);
    auto name = string_field(payload, key.c_str(), "HELLO");
    if (!name) return std::move(name).error();
    if (!valid_name(*name)) {
        return Error(errc::protocol_error,
                     fmt::format("HELLO names {} \"{}\", which is not a valid name", key, *name));
    }
    return name;
}

json encode(const Request& request) {
    json j{{"id", request.id},
           {"op", to_string(request.op)},
           {"pair", request.key.pair},
           {"module", request.key.module}};
    if (request.op == Op::acquire || request.op == Op::renew)
        j["ttl_ms"] = static_cast<std::uint64_t>(request.ttl.count());
    return j;
}

Result<Request> parse_request(const json& payload) {
    Request r;
    auto id = uint_field(payload, "id", "request");
    if (!id) return std::move(id).error();
    r.id = *id;
    auto op = string_field(payload, "op", "request");
    if (!op) return std::move(op).error();
    if (*op == "acquire")
        r.op = Op::acquire;
    else if (*op == "renew")
        r.op = Op::renew;
    else if (*op == "release")
        r.op = Op::release;
    else if (*op == "query")
        r.op = Op::query;
    else
        return Error(errc::protocol_error,
                     fmt::format("request {} asks for unknown operation \"{}\"", r.id, *op));
    auto pair = string_field(payload, "pair", "request");
    if (!pair) return std::move(pair).error();
    if (!valid_pair(*pair)) {
        return Error(
            errc::protocol_error,
            fmt::format("request {} names pair \"{}\", not two sorted node names joined by '+'",
                        r.id, *pair));
    }
    auto module = string_field(payload, "module", "request");
    if (!module) return std::move(module).error();
    if (!valid_name(*module)) {
        return Error(
            errc::protocol_error,
            fmt::format("request {} names module \"{}\", not a valid name", r.id, *module));
    }
    r.key = {std::move(*pair), std::move(*module)};
    if (r.op == Op::acquire || r.op == Op::renew) {
        auto ttl = uint_field(payload, "ttl_ms", "request");
        if (!ttl) return std::move(ttl).error();
        if (*ttl < static_cast<std::uint64_t>(min_ttl.count()) ||
            *ttl > static_cast<std::uint64_t>(max_ttl.count())) {
            return Error(errc::protocol_error,
                         fmt::format("request {} asks for a TTL of {} ms, outside {} to {} ms",
                                     r.id, *ttl, min_ttl.count(), max_ttl.count()));
        }
        r.ttl = Duration(static_cast<Duration::rep>(*ttl));
    }
    return r;
}

json encode(const Reply& reply) {
    if (!reply.result) {
        const auto& e = reply.result.error();
        const auto name = e.code.category() == error_category()
                              ? errc_name(static_cast<errc>(e.code.value()))
                              : std::string_view("internal");
        return json{{"id", reply.id}, {"ok", false}, {"error", name}, {"message", e.message}};
    }
    const auto& s = *reply.result;
    return json{{"id", reply.id},
                {"ok", true},
                {"holder", s.holder},
                {"remaining_ms", static_cast<std::uint64_t>(s.remaining.count())},
                {"ttl_ms", static_cast<std::uint64_t>(s.ttl.count())},
                {"epoch", s.epoch}};
}

std::optional<errc> errc_from_name(std::string_view name) {
    for (int i = static_cast<int>(errc::invalid_argument); i <= static_cast<int>(errc::internal);
         ++i) {
        if (errc_name(static_cast<errc>(i)) == name) return static_cast<errc>(i);
    }
    return std::nullopt;
}

Result<Reply> parse_reply(const json& payload) {
    Reply r;
    auto id = uint_field(payload, "id", "reply");
    if (!id) return std::move(id).error();
    r.id = *id;
    const auto ok = payload.find("ok");
    if (ok == payload.end() || !ok->is_boolean()) {
        return Error(errc::protocol_error, fmt::format("reply {} has no \"ok\" boolean", r.id));
    }
    if (!ok->get<bool>()) {
        auto name = string_field(payload, "error", "reply");
        if (!name) return std::move(name).error();
        auto message = string_field(payload, "message", "reply");
        if (!message) return std::move(message).error();
        r.result = Error(errc_from_name(*name).value_or(errc::protocol_error), std::move(*message));
        return r;
    }
    LeaseState s;
    auto holder = string_field(payload, "holder", "reply");
    if (!holder) return std::move(holder).error();
    if (!holder->empty() && !valid_name(*holder)) {
        return Error(errc::protocol_error,
                     fmt::format("reply {} names holder \"{}\", not a valid name", r.id, *holder));
    }
    s.holder = std::move(*holder);
    auto remaining = uint_field(payload, "remaining_ms", "reply");
    if (!remaining) return std::move(remaining).error();
    auto ttl = uint_field(payload, "ttl_ms", "reply");
    if (!ttl) return std::move(ttl).error();
    auto epoch = uint_field(payload, "epoch", "reply");
    if (!epoch) return std::move(epoch).error();
    if (*remaining > *ttl || *ttl > static_cast<std::uint64_t>(max_ttl.count())) {
        return Error(errc::protocol_error, fmt::format("reply {} gives {} ms left of a {} ms lease",
                                                       r.id, *remaining, *ttl));
    }
    s.remaining = Duration(static_cast<Duration::rep>(*remaining));
    s.ttl = Duration(static_cast<Duration::rep>(*ttl));
    s.epoch = *epoch;
    r.result = std::move(s);
    return r;
}

}  // namespace vmha::lease::wire
