#include "witness_config.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <vmha/lease/lease.h>

#include "witness_wire.h"

namespace vmha::witness {

namespace {

Error bad(const std::filesystem::path& file, const YAML::Node& at, const std::string& what) {
    const auto mark = at.Mark();
    if (mark.is_null())
        return Error(errc::invalid_config, fmt::format("{}: {}", file.string(), what));
    return Error(errc::invalid_config,
                 fmt::format("{}:{}:{}: {}", file.string(), mark.line + 1, mark.column + 1, what));
}

Result<std::string> scalar(const std::filesystem::path& file, const YAML::Node& map,
                           const char* key, bool required, const std::string& fallback = {}) {
    const auto n = map[key];
    if (!n) {
        if (required) return bad(file, map, fmt::format("\"{}\" is missing", key));
        return fallback;
    }
    if (!n.IsScalar() || n.Scalar().empty())
        return bad(file, n, fmt::format("\"{}\" must be a non-empty text", key));
    return n.Scalar();
}

}  // namespace

Status WitnessConfig::allows(const std::string& node, const std::string& pair,
                             const std::string& module) const {
    const auto [a, b] = lease::wire::pair_nodes(pair);
    if (node != a && node != b) {
        return Error(
            errc::permission_denied,
            fmt::format("node \"{}\" asked for a lease of pair \"{}\", which it is not part of",
                        node, pair));
    }
    if (!pairs) return {};
    for (const auto& p : *pairs) {
        if (p.pair != pair) continue;
        if (p.modules.empty() ||
            std::find(p.modules.begin(), p.modules.end(), module) != p.modules.end())
            return {};
        return Error(errc::permission_denied,
                     fmt::format("module \"{}\" of pair \"{}\" is not in this witness's list",
                                 module, pair));
    }
    return Error(errc::permission_denied,
                 fmt::format("pair \"{}\" is not served by this witness", pair));
}

Result<WitnessConfig> load_witness_config(const std::filesystem::path& file) {
    YAML::Node root;
    try {
        root = YAML::LoadFile(file.string());
    } catch (const YAML::BadFile&) {
        return Error(errc::unreadable,
                     fmt::format("witness file \"{}\" cannot be read", file.string()));
    } catch (const YAML::Exception& e) {
        return Error(errc::invalid_config,
                     fmt::format("{}:{}:{}: not valid YAML: {}", file.string(), e.mark.line + 1,
                                 e.mark.column + 1, e.msg));
    }
    if (!root.IsMap()) return bad(file, root, "the witness file must be a mapping");
    for (const auto& kv : root) {
        const auto key = kv.first.Scalar();
        if (key != "name" && key != "listen" && key != "tls" && key != "state_file" &&
            key != "pairs") {
            return bad(
                file, kv.first,
                fmt::format("unknown key \"{}\" (known: name, listen, tls, state_file, pairs)",
                            key));
        }
    }
    WitnessConfig c;
    auto name = scalar(file, root, "name", true);
    if (!name) return std::move(name).error();
    if (!lease::wire::valid_name(*name)) {
        return bad(file, root["name"],
                   fmt::format("name \"{}\" may hold only letters, digits, '.', '_', '-'", *name));
    }
    c.name = *name;
    auto listen = scalar(file, root, "listen", false, "0.0.0.0:7950");
    if (!listen) return std::move(listen).error();
    {
        const auto colon = listen->rfind(':');
        unsigned port = 0;
        std::string host = colon == std::string::npos ? std::string() : listen->substr(0, colon);
        if (host.size() > 2 && host.front() == '[' && host.back() == ']')
            host = host.substr(1, host.size() - 2);
        const char* first = colon == std::string::npos ? nullptr : listen->data() + colon + 1;
        const char* last = listen->data() + listen->size();
        if (first == nullptr || host.empty() || std::from_chars(first, last, port).ptr != last ||
            port == 0 || port > 65535) {
            return bad(file, root["listen"],
                       fmt::format("listen \"{}\" is not HOST:PORT", *listen));
        }
        c.listen_host = host;
        c.listen_port = static_cast<std::uint16_t>(port);
    }
    const auto tls = root["tls"];
    if (!tls || !tls.IsMap()) return bad(file, root, "\"tls\" (ca, cert, key) is missing");
    for (auto [key, out] :
         {std::pair{"ca", &c.tls_ca}, {"cert", &c.tls_cert}, {"key", &c.tls_key}}) {
        auto v = scalar(file, tls, key, true);
        if (!v) return std::move(v).error();
        *out = *v;
    }
    auto state = scalar(file, root, "state_file", false, c.state_file.string());
    if (!state) return std::move(state).error();
    c.state_file = *state;
    if (const auto pairs = root["pairs"]) {
        if (!pairs.IsSequence()) return bad(file, pairs, "\"pairs\" must be a list");
        c.pairs.emplace();
        for (const auto& p : pairs) {
            const auto nodes = p["nodes"];
            if (!p.IsMap() || !nodes || !nodes.IsSequence() || nodes.size() != 2 ||
                !nodes[0].IsScalar() || !nodes[1].IsScalar() ||
                !lease::wire::valid_name(nodes[0].Scalar()) ||
                !lease::wire::valid_name(nodes[1].Scalar()) ||
                nodes[0].Scalar() == nodes[1].Scalar()) {
                return bad(file, p,
                           "each item of \"pairs\" needs \"nodes\": two different node names");
            }
            AllowedPair allowed{lease::pair_name(nodes[0].Scalar(), nodes[1].Scalar()), {}};
            if (const auto modules = p["modules"]) {
                if (!modules.IsSequence())
                    return bad(file, modules, "\"modules\" must be a list of module names");
                for (const auto& m : modules) {
                    if (!m.IsScalar() || !lease::wire::valid_name(m.Scalar())) {
                        return bad(file, m, "\"modules\" must be a list of module names");
                    }
                    allowed.modules.push_back(m.Scalar());
                }
            }
            c.pairs->push_back(std::move(allowed));
        }
    }
    return c;
}

}  // namespace vmha::witness
