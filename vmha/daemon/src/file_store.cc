#include "file_store.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace vmha::daemon {
namespace {

Status sync_path(const std::filesystem::path& p, int flags) {
    const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return Error(errc_from_errno(errno), fmt::format("cannot open \"{}\": {}", p.string(), std::strerror(errno)));
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return Error(errc_from_errno(err), fmt::format("cannot sync \"{}\": {}", p.string(), std::strerror(err)));
    return {};
}

}  // namespace

module::Persisted FileStore::load() {
    module::Persisted p;
    std::ifstream in(path_);
    if (!in) return p;  // never saved: a module never started here
    std::stringstream text;
    text << in.rdbuf();
    const auto j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        spdlog::error("module state file \"{}\" is not valid JSON; the module starts stopped", path_.string());
        return p;
    }
    try {
        read(j, p);
    } catch (const nlohmann::json::exception& e) {
        spdlog::error("module state file \"{}\" has a malformed field ({}); the module starts stopped",
                      path_.string(), e.what());
        return module::Persisted{};
    }
    return p;
}

void FileStore::read(const nlohmann::json& j, module::Persisted& p) {
    p.started = j.value("started", false);
    p.may_start_alone = j.value("may_start_alone", false);
    p.last_state = module::parse_state(j.value("last_state", "STOP")).value_or(module::State::stop);
    p.data = module::parse_data_state(j.value("data", "Unknown")).value_or(module::DataState::unknown);
    p.crashed_primary = j.value("crashed_primary", false);
    p.final = j.value("final", false);
    p.failover = j.value("failover", true);
    if (auto g = j.find("generations"); g != j.end() && g->is_object()) {
        p.generations.current = g->value("current", std::uint64_t{0});
        p.generations.bitmap = g->value("bitmap", std::uint64_t{0});
        if (auto h = g->find("history"); h != g->end() && h->is_array()) {
            for (std::size_t i = 0; i < h->size() && i < p.generations.history.size(); ++i) {
                if ((*h)[i].is_number_unsigned()) p.generations.history[i] = (*h)[i].get<std::uint64_t>();
            }
        }
    }
}

Status FileStore::save(const module::Persisted& p) {
    const nlohmann::json j = {
        {"version", 1},
        {"started", p.started},
        {"may_start_alone", p.may_start_alone},
        {"last_state", std::string(module::to_string(p.last_state))},
        {"data", std::string(module::to_string(p.data))},
        {"crashed_primary", p.crashed_primary},
        {"final", p.final},
        {"failover", p.failover},
        {"generations", {{"current", p.generations.current}, {"bitmap", p.generations.bitmap}, {"history", p.generations.history}}},
    };
    return write_json_file(path_, j);
}

Status write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
        return Error(errc_from_errno(ec.value()),
                     fmt::format("cannot create \"{}\": {}", path.parent_path().string(), ec.message()));
    }
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << j.dump(2) << "\n";
        out.flush();
        if (!out) return Error(errc::io_error, fmt::format("cannot write \"{}\"", tmp.string()));
    }
    if (auto st = sync_path(tmp, O_RDONLY); !st) return st;
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return Error(errc_from_errno(errno), fmt::format("cannot rename \"{}\" to \"{}\": {}", tmp.string(),
                                                         path.string(), std::strerror(errno)));
    }
    return sync_path(path.parent_path(), O_RDONLY | O_DIRECTORY);
}

Result<std::optional<nlohmann::json>> read_json_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) return std::optional<nlohmann::json>{};
        return Error(errc_from_errno(errno), fmt::format("cannot read \"{}\": {}", path.string(), std::strerror(errno)));
    }
    std::stringstream text;
    text << in.rdbuf();
    auto j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_discarded()) return Error(errc::unreadable, fmt::format("\"{}\" is not valid JSON", path.string()));
    return std::optional<nlohmann::json>(std::move(j));
}

}  // namespace vmha::daemon
