#include "journal.h"

#include <chrono>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmha::daemon {

std::string utc_now() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

Journal::Journal(std::filesystem::path path, std::uintmax_t max_bytes)
    : path_(std::move(path)), max_bytes_(max_bytes) {
    // Sequence numbers go on from the last entry written (this file, else the rotated one).
    for (const auto& p : {path_, std::filesystem::path(path_.string() + ".1")}) {
        auto entries = read_file(p);
        if (!entries.empty()) {
            seq_ = entries.back().value("seq", std::uint64_t{0});
            break;
        }
    }
}

void Journal::open() {
    std::error_code ec;
    std::filesystem::create_directories(path_.parent_path(), ec);
    out_.open(path_, std::ios::app);
    if (!out_) spdlog::warn("cannot open the module journal \"{}\"; `vmha log` misses entries", path_.string());
}

void Journal::append(nlohmann::json entry) {
    entry["seq"] = ++seq_;
    entry["time"] = utc_now();
    if (!out_.is_open()) open();
    std::error_code ec;
    if (out_.is_open() && std::filesystem::file_size(path_, ec) >= max_bytes_ && !ec) {
        out_.close();
        std::filesystem::rename(path_, path_.string() + ".1", ec);
        if (ec) spdlog::warn("cannot rotate the module journal \"{}\": {}", path_.string(), ec.message());
        open();
    }
    if (!out_.is_open()) return;
    out_ << entry.dump() << '\n';
    out_.flush();
}

std::vector<nlohmann::json> Journal::read_file(const std::filesystem::path& p) const {
    std::vector<nlohmann::json> entries;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object()) entries.push_back(std::move(j));  // a torn last line is skipped
    }
    return entries;
}

std::vector<nlohmann::json> Journal::read(std::uint64_t after, std::size_t n) const {
    std::vector<nlohmann::json> all = read_file(path_.string() + ".1");
    auto current = read_file(path_);
    all.insert(all.end(), std::make_move_iterator(current.begin()), std::make_move_iterator(current.end()));
    std::vector<nlohmann::json> out;
    for (auto& e : all) {
        if (e.value("seq", std::uint64_t{0}) > after) out.push_back(std::move(e));
    }
    if (out.size() > n) out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(n));
    return out;
}

}  // namespace vmha::daemon
