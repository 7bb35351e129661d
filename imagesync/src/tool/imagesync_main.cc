// imagesync: the command-line tool for a running imagesyncd, over its control socket.
//
//   imagesync --control-socket PATH status [--json]
//   imagesync --control-socket PATH promote [--force]
//   imagesync --control-socket PATH demote | connect | disconnect | outdate
//   imagesync --control-socket PATH verify [--mark]
//   imagesync --control-socket PATH resync [--full] [--watch]
//
// Prints a human summary by default and the daemon's JSON with --json. Exit status: 0 done
// (verify: the copies are identical), 1 the daemon refused (the reason is printed), 2 the
// daemon could not be reached, 3 verify found ranges that differ, 64 usage.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <vmha/human.h>
#include <nlohmann/json.hpp>

namespace {

enum Exit : int {
    exit_ok = 0,
    exit_refused = 1,
    exit_unreachable = 2,
    exit_differences = 3,
    exit_usage = 64,
};

struct Reply {
    bool reached = false;
    std::string error;  // when not reached
    nlohmann::json body;
};

Reply ask(const std::string& path, const nlohmann::json& request) {
    Reply r;
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r.error = std::strerror(errno);
        return r;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        ::close(fd);
        r.error = "the socket path is too long";
        return r;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        r.error = std::strerror(errno);
        ::close(fd);
        return r;
    }
    const std::string line = request.dump() + "\n";
    std::size_t sent = 0;
    while (sent < line.size()) {
        const ssize_t n = ::write(fd, line.data() + sent, line.size() - sent);
        if (n <= 0) {
            r.error = std::strerror(errno);
            ::close(fd);
            return r;
        }
        sent += static_cast<std::size_t>(n);
    }
    std::string in;
    char buf[4096];
    while (in.find('\n') == std::string::npos) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    auto body = nlohmann::json::parse(in, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
        r.error = "the daemon's answer is not JSON";
        return r;
    }
    r.reached = true;
    r.body = std::move(body);
    return r;
}

using vmha::human_bytes;

void print_status(const nlohmann::json& j) {
    auto str = [&](const char* k) { return j.contains(k) ? j[k].get<std::string>() : std::string("-"); };
    auto num = [&](const char* k) { return j.contains(k) ? j[k].get<std::uint64_t>() : 0; };
    std::cout << fmt::format("module      {} on node {} (pid {})\n", str("module"), str("node"),
                             j.value("pid", 0));
    std::cout << fmt::format("role        {}\n", str("role"));
    std::cout << fmt::format("connection  {}{}{}\n", str("connection"),
                             j.contains("connection_reason")
                                 ? " (" + j["connection_reason"].get<std::string>() + ")"
                                 : "",
                             j.contains("tcp_congestion") && j["tcp_congestion"].is_string()
                                 ? ", TCP " + j["tcp_congestion"].get<std::string>()
                                 : "");
    std::cout << fmt::format("data        {} here, {} on peer {}\n", str("data_state"),
                             str("peer_data_state"), str("peer_node"));
    std::cout << fmt::format("dirty       {}\n", human_bytes(num("dirty_bytes")));
    std::cout << fmt::format("in flight   {} request(s) to the peer\n", num("in_flight"));
    std::cout << fmt::format("replicated  {} ({} sent zero-copy), resynced {}\n",
                             human_bytes(num("bytes_replicated")),
                             human_bytes(num("bytes_sent_zero_copy")),
                             human_bytes(num("bytes_resynced")));
    if (j.contains("image_io") && j["image_io"].is_array()) {
        for (const auto& e : j["image_io"]) {
            auto n = [&](const char* k) { return e.value(k, std::uint64_t{0}); };
            std::cout << fmt::format(
                "image io    {}: writes {} inline, {} io_uring ({} direct); flushes {} inline, {} "
                "io_uring; {} early write-backs; {} stalls; {} scan reads direct\n",
                e.value("export", "-"), n("inline_writes"), n("ring_writes"), n("direct_writes"),
                n("inline_flushes"), n("ring_flushes"), n("early_writebacks"), n("stalls"),
                n("direct_reads"));
        }
    }
    if (j.contains("resync")) {
        const auto total = j["resync"].value("total_bytes", std::uint64_t{0});
        const auto left = j["resync"].value("left_bytes", std::uint64_t{0});
        const double pct = total ? 100.0 * static_cast<double>(total - std::min(left, total)) /
                                       static_cast<double>(total)
                                 : 100.0;
        std::cout << fmt::format("resync      {:.1f}% ({} left of {})\n", pct, human_bytes(left),
                                 human_bytes(total));
    }
    if (j.contains("split_brain") && j["split_brain"].is_object()) {
        const auto& b = j["split_brain"];
        const auto& there = b["peer_changed_bytes"];
        std::cout << fmt::format("split brain with {}: {} changed here, {} there since generation {}{}\n",
                                 b.value("peer_node", "-"),
                                 human_bytes(b.value("local_changed_bytes", std::uint64_t{0})),
                                 there.is_number() ? human_bytes(there.get<std::uint64_t>()) : "unknown",
                                 b.value("since_generation", "-"),
                                 b.value("kept_here", false) ? " (kept here: the peer's copy is "
                                                               "discarded at the next connection)"
                                                             : "");
    }
    if (j.contains("generations")) {
        const auto& g = j["generations"];
        std::cout << fmt::format("generation  {} (bitmap {})\n", g.value("current", "-"),
                                 g.value("bitmap", "-"));
    }
}

// Polls the status until no resync runs: a progress bar on a terminal, a line per second
// otherwise.
int watch_resync(const std::string& socket_path) {
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    auto last_line = std::chrono::steady_clock::now() - std::chrono::seconds(2);
    for (;;) {
        const Reply r = ask(socket_path, {{"verb", "status"}});
        if (!r.reached) {
            std::cerr << fmt::format("\nimagesync: lost the daemon: {}\n", r.error);
            return exit_unreachable;
        }
        const auto& j = r.body;
        if (!j.contains("resync")) {
            std::cout << (tty ? "\r\033[K" : "")
                      << fmt::format("in sync: connection {}, peer data {}\n",
                                     j.value("connection", "?"), j.value("peer_data_state", "?"));
            return j.value("connection", "") == "connected" ? exit_ok : exit_refused;
        }
        const auto& p = j["resync"];
        const auto total = p.value("total_bytes", std::uint64_t{0});
        const auto left = p.value("left_bytes", std::uint64_t{0});
        const double fraction = total ? static_cast<double>(total - std::min(left, total)) / static_cast<double>(total) : 1.0;
        const auto eta = p.value("eta_seconds", std::uint64_t{0});
        const std::string text = fmt::format(
            "{:5.1f}%  {} left of {}  {}/s  ETA {}:{:02}", 100.0 * fraction, human_bytes(left),
            human_bytes(total), human_bytes(p.value("rate_bytes_per_second", std::uint64_t{0})),
            eta / 60, eta % 60);
        const auto now = std::chrono::steady_clock::now();
        if (tty) {
            constexpr int width = 30;
            const int filled = static_cast<int>(fraction * width);
            std::cout << "\r\033[K[" << std::string(static_cast<std::size_t>(filled), '#')
                      << std::string(static_cast<std::size_t>(width - filled), '.') << "] " << text
                      << std::flush;
        } else if (now - last_line >= std::chrono::seconds(1)) {
            std::cout << text << '\n' << std::flush;
            last_line = now;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // poll interval
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"imagesync: status and commands for a running imagesyncd", "imagesync"};
    std::string socket_path;
    bool json = false;
    bool force = false;
    bool mark = false;
    bool full = false;
    bool watch = false;
    app.add_option("--control-socket", socket_path, "imagesyncd's --control-socket")->required();
    app.add_flag("--json", json, "Print the daemon's JSON answer");
    app.require_subcommand(1);
    app.fallthrough();  // global options may also follow the verb: `status --json`
    app.add_subcommand("status", "Role, connection, data state, dirty bytes, counters");
    auto* promote = app.add_subcommand("promote", "Become primary (refused unless UpToDate)");
    promote->add_flag("--force", force, "Promote even data that is not UpToDate (discards the peer's newer writes)");
    app.add_subcommand("demote", "Drain writes, flush both sides, become secondary");
    auto* verify = app.add_subcommand(
        "verify", "Compare both copies chunk by chunk (online) and list the ranges that differ");
    verify->add_flag("--mark", mark, "Record the differing ranges dirty and resync them");
    auto* resync = app.add_subcommand(
        "resync", "Copy the dirty ranges to the peer now (primary, connected)");
    resync->add_flag("--full", full, "Copy every chunk of every export");
    resync->add_flag("--watch", watch, "Show progress until the pair is in sync");
    app.add_subcommand("connect", "Connect to the peer (after disconnect)");
    app.add_subcommand("disconnect", "Close the replication link (a primary records writes dirty)");
    app.add_subcommand("outdate",
                       "Secondary, not connected: mark this copy Outdated (the peer went on alone)");
    app.add_subcommand("resume-io",
                       "Primary started with --fence that lost its peer: the peer is Outdated or "
                       "gone, send the held write replies");
    app.add_subcommand("discard-unacknowledged",
                       "Secondary, not connected, whose writes without the peer were never acknowledged: "
                       "become a full resync target instead of a split-brain side");
    long long lease_ms = -1;
    bool clear = false;
    auto* write_lease = app.add_subcommand(
        "write-lease", "Accept writes for this long from now only (vmhad with a witness); --clear removes the limit");
    write_lease->add_option("MILLISECONDS", lease_ms, "How long writes are accepted")->check(CLI::Range(0LL, 86400000LL));
    write_lease->add_flag("--clear", clear, "No deadline");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return exit_usage;
    }
    const std::string verb = app.get_subcommands().front()->get_name();
    nlohmann::json request = {{"verb", verb}};
    if (force) request["force"] = true;
    if (mark) request["mark"] = true;
    if (full) request["full"] = true;
    if (verb == "write-lease") {
        if (clear == (lease_ms >= 0)) {
            std::cerr << "imagesync: write-lease needs MILLISECONDS or --clear\n";
            return exit_usage;
        }
        if (clear) {
            request["clear"] = true;
        } else {
            request["valid_for_ms"] = lease_ms;
        }
    }
    const Reply r = ask(socket_path, request);
    if (!r.reached) {
        std::cerr << fmt::format("imagesync: cannot reach imagesyncd at \"{}\": {}\n", socket_path,
                                 r.error);
        return exit_unreachable;
    }
    const bool ok = r.body.value("ok", false);
    if (json) {
        std::cout << r.body.dump(2) << '\n';
    } else if (!ok) {
        std::cerr << fmt::format("imagesync: {}: {}\n", verb, r.body.value("error", "refused"));
    } else if (verb == "status") {
        print_status(r.body);
    } else if (verb == "resync" && !watch) {
        std::cout << fmt::format("resync: connection {}, {} dirty\n", r.body.value("connection", "?"),
                                 human_bytes(r.body.value("dirty_bytes", std::uint64_t{0})));
    } else if (verb == "resync") {
        // --watch prints the progress below.
    } else if (verb == "verify") {
        const auto differing = r.body.value("differing_bytes", std::uint64_t{0});
        std::cout << fmt::format("verify: {} compared, {} differ{}\n",
                                 human_bytes(r.body.value("compared_bytes", std::uint64_t{0})),
                                 human_bytes(differing),
                                 r.body.value("marked", false) ? " (marked dirty: resyncing)" : "");
        for (const auto& range : r.body.value("ranges", nlohmann::json::array())) {
            std::cout << fmt::format("  export {} offset {} length {}\n",
                                     range.value("export", "?"), range.value("offset", std::uint64_t{0}),
                                     range.value("length", std::uint64_t{0}));
        }
    } else {
        std::cout << fmt::format("{}: done; role {}, connection {}, data {}\n", verb,
                                 r.body.value("role", "?"), r.body.value("connection", "?"),
                                 r.body.value("data_state", "?"));
    }
    if (!ok) return exit_refused;
    if (watch) return watch_resync(socket_path);
    if (verb == "verify" && r.body.value("differing_bytes", std::uint64_t{0}) > 0) return exit_differences;
    return exit_ok;
}
