#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include <vmha/human.h>

namespace vmha::cli {

Progress::Progress(std::string what, bool json)
    : Progress(std::move(what), json, std::cout, ::isatty(STDOUT_FILENO) != 0) {}

Progress::Progress(std::string what, bool json, std::ostream& out, bool tty)
    : what_(std::move(what)), json_(json), out_(out), tty_(!json && tty) {}

void Progress::show(std::uint64_t done, std::uint64_t total, const std::string& detail,
                    const nlohmann::json& sample) {
    if (json_) {
        nlohmann::json line = sample;
        line["event"] = "progress";
        out_ << line.dump() << '\n' << std::flush;
        return;
    }
    done = std::min(done, total);
    const double pct = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
    const std::string text = fmt::format("{} {:5.1f}% {} of {}{}", what_, pct, human_bytes(done),
                                         human_bytes(total), detail.empty() ? "" : ", " + detail);
    if (tty_) {
        constexpr int width = 30;
        const int filled = static_cast<int>(pct / 100.0 * width);
        out_ << fmt::format("\r[{:#<{}}{:.<{}}] {}\033[K", "", filled, "", width - filled, text) << std::flush;
        drawn_ = true;
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_line_ < std::chrono::seconds(2)) return;
    last_line_ = now;
    out_ << text << '\n' << std::flush;
}

void Progress::finish() {
    if (drawn_) out_ << '\n';
    drawn_ = false;
}

}  // namespace vmha::cli
