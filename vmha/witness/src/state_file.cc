#include "state_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "witness_wire.h"

namespace vmha::witness {

namespace {

using nlohmann::json;
constexpr int state_version = 1;

Error sys_error(const std::string& what, const std::filesystem::path& path) {
    const int e = errno;
    return Error(errc_from_errno(e),
                 fmt::format("cannot {} \"{}\": {}", what, path.string(), std::strerror(e)));
}

Status write_all(int fd, const std::string& bytes, const std::filesystem::path& path) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("write", path);
        done += static_cast<std::size_t>(n);
    }
    return {};
}

}  // namespace

Result<std::vector<Record>> load_state(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        if (errno == ENOENT) return std::vector<Record>{};
        return sys_error("read the witness state file", file);
    }
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    auto j = json::parse(text, nullptr, false);
    auto bad = [&](const std::string& why) {
        return Error(
            errc::invalid_config,
            fmt::format(
                "witness state file \"{}\" is damaged ({}); it is kept as it is: repair or remove "
                "it only when no node may still hold a lease it granted",
                file.string(), why));
    };
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (j.value("version", 0) != state_version)
        return bad(fmt::format("version is not {}", state_version));
    const auto leases = j.find("leases");
    if (leases == j.end() || !leases->is_array()) return bad("no \"leases\" list");
    std::vector<Record> out;
    for (const auto& l : *leases) {
        if (!l.is_object() || !l.value("pair", json()).is_string() ||
            !l.value("module", json()).is_string() || !l.value("holder", json()).is_string() ||
            !l.value("epoch", json()).is_number_unsigned() ||
            !l.value("ttl_ms", json()).is_number_unsigned()) {
            return bad(fmt::format("lease entry {} is malformed", out.size() + 1));
        }
        Record r{{l["pair"].get<std::string>(), l["module"].get<std::string>()},
                 l["holder"].get<std::string>(),
                 l["epoch"].get<std::uint64_t>(),
                 Duration(l["ttl_ms"].get<Duration::rep>())};
        if (!lease::wire::valid_pair(r.key.pair) || !lease::wire::valid_name(r.key.module) ||
            (!r.holder.empty() && !lease::wire::valid_name(r.holder)) ||
            r.ttl > lease::wire::max_ttl) {
            return bad(fmt::format("lease entry {} names an invalid pair, module, holder or TTL",
                                   out.size() + 1));
        }
        out.push_back(std::move(r));
    }
    return out;
}

Status save_state(const std::filesystem::path& file, const std::vector<Record>& records) {
    json leases = json::array();
    for (const auto& r : records) {
        leases.push_back(json{{"pair", r.key.pair},
                              {"module", r.key.module},
                              {"holder", r.holder},
                              {"epoch", r.epoch},
                              {"ttl_ms", static_cast<std::uint64_t>(r.ttl.count())}});
    }
    const std::string text = json{{"version", state_version}, {"leases", leases}}.dump(1) + "\n";
    const std::filesystem::path tmp = file.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return sys_error("create", tmp);
    Status st = write_all(fd, text, tmp);
    if (st && ::fsync(fd) != 0) st = sys_error("fsync", tmp);
    if (::close(fd) != 0 && st) st = sys_error("close", tmp);
    if (!st) {
        ::unlink(tmp.c_str());
        return st;
    }
    if (::rename(tmp.c_str(), file.c_str()) != 0) {
        auto e = sys_error("rename the new state over", file);
        ::unlink(tmp.c_str());
        return e;
    }
    const auto dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return sys_error("open the state directory", dir);
    Status synced;
    if (::fsync(dfd) != 0) synced = sys_error("fsync the state directory", dir);
    ::close(dfd);
    return synced;
}

}  // namespace vmha::witness
