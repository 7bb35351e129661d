// imagesyncd: serves image files to the local hypervisor over NBD on a unix socket.
//
// Runs in the foreground; exits with status 0 after SIGTERM or SIGINT once every request
// already read has been answered, 1 on a runtime failure, 2 on a command-line error.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <stdexcept>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <imagesync/server.h>
#include "replication/tcp_congestion.h"
#include <vmha/log.h>

int main(int argc, char** argv) {
    CLI::App app{"imagesyncd: serves VM image files over NBD (unix socket) with io_uring I/O",
                 "imagesyncd"};
    std::vector<std::string> images;
    std::string socket_path;
    std::string meta_dir;
    std::string role = "primary";
    std::string log_level = "info";
    bool growable = false;
    imagesync::ServerConfig config;
    std::string timeout = "5000";
    app.add_option("--image", images,
                   "Export an image: NAME=PATH[,size=SIZE]. SIZE (bytes, or with K/M/G/T) makes "
                   "the export larger than the file: reads past the end of the file return "
                   "zeroes and writes past it extend the file. Repeatable.")
        ->required()
        ->type_name("NAME=PATH[,size=SIZE]");
    app.add_option("--nbd-socket", socket_path, "Unix socket to serve NBD on")->required();
    app.add_option("--meta-dir", meta_dir, "Directory for replication metadata (created)");
    app.add_option("--role", role, "primary (writable) or secondary (read-only, writes get EPERM)")
        ->check(CLI::IsMember({"primary", "secondary"}));
    app.add_flag("--growable", growable,
                 "Exports of qcow2 files without size= get twice the qcow2 virtual size, so the "
                 "file can grow");
    app.add_option("--listen", config.listen,
                   "Replication: HOST:PORT where this node, as secondary, accepts its primary");
    app.add_option("--peer", config.peer,
                   "Replication: HOST:PORT of the peer's --listen, dialed while this node is "
                   "primary");
    app.add_option("--module", config.module, "Module name; both nodes must agree")
        ->capture_default_str();
    app.add_option("--node", config.node, "This node's name (default: the host name)");
    app.add_option("--timeout-ms", timeout,
                   "Replication: milliseconds without an answer before the peer is lost and "
                   "writes are recorded dirty")
        ->capture_default_str();
    std::string resync_rate = "0";
    app.add_option("--resync-rate", resync_rate,
                   "Bytes per second a resync may use (K/M/G suffixes; 0 = no limit)")
        ->capture_default_str();
    std::string chunk_size = "64K";
    app.add_option("--chunk-size", chunk_size,
                   "Replication: granularity of the dirty map and of verify's checksums, a power "
                   "of two from 4K to 16M. Both nodes must agree; fixed once the metadata exists")
        ->capture_default_str();
    std::string al_extent = "4M";
    app.add_option("--al-extent", al_extent,
                   "Replication: size of one activity-log extent, a power of two from 64K to 1G "
                   "and not below --chunk-size. Fixed once the metadata exists")
        ->capture_default_str();
    std::string resync_min_rate = "8M";
    app.add_option("--resync-min-rate", resync_min_rate,
                   "While the VM writes, a resync yields to it down to this rate (K/M/G; 0 = "
                   "never yield)")
        ->capture_default_str();
    app.add_option("--tcp-congestion", config.tcp_congestion,
                   "Replication: TCP congestion control of the link's sockets (cubic, reno, bbr, "
                   "... as the kernel has them), or \"system\" for the kernel's default")
        ->capture_default_str();
    app.add_flag("--fence", config.fence,
                 "After losing the peer, hold write replies until `imagesync resume-io` (vmhad "
                 "sends it once the peer is Outdated or gone) or the peer reconnects");
    app.add_option("--split-brain", config.split_brain,
                   "What a split brain found on reconnect does: disconnect (refuse; an operator "
                   "keeps one side) or discard-zero-changes (the side that wrote nothing is "
                   "resynced from the other). Both nodes must agree")
        ->check(CLI::IsMember({"disconnect", "discard-zero-changes"}))
        ->capture_default_str();
    // Byte sizes (K/M suffixes) of the inline I/O paths (image_file.h), parsed after CLI11.
    struct SizeFlag {
        const char* name;
        std::string text;  // the default, then what was given
        const char* help;
        std::uint64_t max;
        std::size_t& out;
    };
    std::array<SizeFlag, 6> size_flags{{
        {"--inline-writes", "64K",
         "Largest page-aligned write of a client copied into the page cache on the event loop "
         "instead of by an io_uring worker (K/M suffixes, at most 1M; 0 = none)",
         1u << 20, config.inline_writes.max_bytes},
        {"--inline-peer-writes", "4M",
         "The same for the writes a secondary applies for its primary (at most 32M; 0 = none)",
         32u << 20, config.inline_writes.peer_max_bytes},
        {"--inline-flush", "1M",
         "A flush with at most this much written since the previous one runs fdatasync on the "
         "event loop instead of by an io_uring worker (at most 16M; 0 = never)",
         16u << 20, config.inline_writes.flush_max_dirty},
        {"--early-writeback", "256K",
         "While a client flushes after at most this much written, each small write starts its "
         "write-back to the disk once answered, so the flush has less to wait for (at most 16M; "
         "0 = never)",
         16u << 20, config.inline_writes.early_writeback_max},
        {"--direct-writes", "256K",
         "While replicating, a client's page-aligned write of at least this size goes to the "
         "image with O_DIRECT instead of through the page cache (at most 1G; 0 = never)",
         1u << 30, config.inline_writes.direct_min_bytes},
        {"--zero-copy-send", "64K",
         "While replicating, a client's write payload of at least this size is lent to the "
         "peer's socket (vmsplice and splice) instead of copied into it (at most 32M; 0 = never)",
         32u << 20, config.zero_copy_min_bytes},
    }};
    for (SizeFlag& f : size_flags) app.add_option(f.name, f.text, f.help)->capture_default_str();
    app.add_flag("--disconnected", config.start_disconnected,
                 "Start without connecting to the peer (imagesync connect starts it)");
    app.add_option("--control-socket", config.control_socket,
                   "Unix socket for status and commands (the imagesync tool)");
    app.add_option("--log-level", log_level, "error, warn, info, debug or trace")
        ->check(CLI::IsMember({"error", "warn", "warning", "info", "debug", "trace", "off"}));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    vmha::init_logging("imagesyncd", *vmha::parse_log_level(log_level));

    for (const std::string& text : images) {
        auto spec = imagesync::parse_export_spec(text);
        if (!spec) {
            std::fprintf(stderr, "imagesyncd: --image: %s\n", spec.error().message.c_str());
            return 2;
        }
        config.exports.push_back(std::move(*spec));
    }
    config.socket_path = socket_path;
    config.meta_dir = meta_dir;
    config.role = *imagesync::parse_role(role);
    config.growable = growable;
    try {
        const long ms = std::stol(timeout);
        if (ms < 10 || ms > 3'600'000) throw std::out_of_range("timeout");
        config.timeout = std::chrono::milliseconds(ms);
    } catch (const std::exception&) {
        std::fprintf(stderr, "imagesyncd: --timeout-ms: \"%s\" must be 10 to 3600000\n",
                     timeout.c_str());
        return 2;
    }
    if (auto rate = imagesync::parse_size(resync_rate); !rate) {
        std::fprintf(stderr, "imagesyncd: --resync-rate: %s\n", rate.error().message.c_str());
        return 2;
    } else {
        config.resync_rate = *rate;
    }
    if (auto rate = imagesync::parse_size(resync_min_rate); !rate) {
        std::fprintf(stderr, "imagesyncd: --resync-min-rate: %s\n", rate.error().message.c_str());
        return 2;
    } else {
        config.resync_min_rate = *rate;
    }
    // A power of two within [min, max] (bytes), for --chunk-size and --al-extent.
    auto power_of_two = [](const char* flag, const std::string& text, std::uint64_t min,
                           std::uint64_t max, const char* range) -> std::optional<std::uint32_t> {
        auto bytes = imagesync::parse_size(text);
        if (!bytes) {
            std::fprintf(stderr, "imagesyncd: %s: %s\n", flag, bytes.error().message.c_str());
            return std::nullopt;
        }
        if (*bytes < min || *bytes > max || (*bytes & (*bytes - 1)) != 0) {
            std::fprintf(stderr, "imagesyncd: %s: \"%s\" is not a power of two from %s\n", flag,
                         text.c_str(), range);
            return std::nullopt;
        }
        return static_cast<std::uint32_t>(*bytes);
    };
    const auto chunk = power_of_two("--chunk-size", chunk_size, 4096, 16u << 20, "4K to 16M");
    if (!chunk) return 2;
    const auto extent = power_of_two("--al-extent", al_extent, 64u << 10, 1u << 30, "64K to 1G");
    if (!extent) return 2;
    if (*extent < *chunk) {
        std::fprintf(stderr, "imagesyncd: --al-extent: %s is below --chunk-size %s\n",
                     al_extent.c_str(), chunk_size.c_str());
        return 2;
    }
    config.chunk_size = *chunk;
    config.activity_log_extent = *extent;
    for (const SizeFlag& f : size_flags) {
        auto bytes = imagesync::parse_size(f.text);
        if (!bytes) {
            std::fprintf(stderr, "imagesyncd: %s: %s\n", f.name, bytes.error().message.c_str());
            return 2;
        }
        if (*bytes > f.max) {
            std::fprintf(stderr, "imagesyncd: %s: \"%s\" is over %lluM\n", f.name,
                         f.text.c_str(), static_cast<unsigned long long>(f.max >> 20));
            return 2;
        }
        f.out = static_cast<std::size_t>(*bytes);
    }
    if (config.node.empty()) {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        config.node = host;
    }
    if ((!config.listen.empty() || !config.peer.empty()) && config.meta_dir.empty()) {
        std::fprintf(stderr, "imagesyncd: replication (--listen/--peer) needs --meta-dir\n");
        return 2;
    }

    if (!config.listen.empty() || !config.peer.empty()) {
        if (auto cc = imagesync::replication::check_congestion_control(config.tcp_congestion); !cc) {
            // The default, refused to an unprivileged process (a kernel whose default is
            // another and that allows only that one and reno): the kernel's default then.
            // A name the operator gave is refused outright.
            if (app.count("--tcp-congestion") != 0 ||
                !cc.error().is(vmha::errc::permission_denied)) {
                std::fprintf(stderr, "imagesyncd: --tcp-congestion: %s\n",
                             cc.error().message.c_str());
                return 2;
            }
            spdlog::warn("--tcp-congestion: {}; the link uses the kernel's default",
                         cc.error().message);
            config.tcp_congestion = "system";
        }
    }

    if (auto status = imagesync::run_server(config); !status) {
        spdlog::error("{}", status.error().message);
        return 1;
    }
    return 0;
}
