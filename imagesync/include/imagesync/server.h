// imagesync: the data plane's NBD server.
//
// imagesyncd serves image files to the local hypervisor over NBD (fixed newstyle) on a unix
// socket, with file I/O through io_uring on one event-loop thread. This header is what the
// rest of vmha (and imagesyncd's main) may use; everything else is private to imagesync/src.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vmha/error.h>

namespace imagesync {

// primary: exports are writable. secondary: exports are read-only, writes get NBD_EPERM.
enum class Role { primary, secondary };

std::optional<Role> parse_role(std::string_view text);
std::string_view role_name(Role role);

// One export as given on the command line: `NAME=PATH[,size=SIZE]`.
//
// Growth rule: the export's size is the file's size, unless
//  - `size=SIZE` is given (bytes, or with a K/M/G/T binary suffix; a multiple of 512, not
//    below the file's size), or
//  - --growable is set and the file is a qcow2 image: then the size is twice the qcow2 virtual
//    size, rounded up to 1 MiB.
// When the export is larger than the file, reads past the end of the file return zeroes and
// writes past it extend the file, so a sparse qcow2 file can grow under QEMU.
struct ExportSpec {
    std::string name;
    std::filesystem::path path;
    std::optional<std::uint64_t> size;
};

// Parses `NAME=PATH[,size=SIZE]`. The name must not be empty.
vmha::Result<ExportSpec> parse_export_spec(std::string_view text);

// Parses a byte count: digits with an optional K, M, G or T (powers of 1024) suffix.
vmha::Result<std::uint64_t> parse_size(std::string_view text);

// Page-aligned writes copied into the page cache on the event loop thread instead of an
// io_uring worker (the why: imagesync/src/image_file.h).
struct InlineWriteLimits {
    std::size_t max_bytes = 64 * 1024;  // a client's write; 0: every write through io_uring
    std::size_t peer_max_bytes = 4u << 20;  // a write replicated from the peer (secondary)
    // An inline write slower than `stall` plus 1 µs per KiB (a copy slower than 1 GiB/s) sends
    // writes to io_uring for `backoff`. Wall time: it includes being preempted, which on a busy
    // host takes a few milliseconds, hence the margin; dirty-page throttling pauses for tens.
    std::chrono::microseconds stall{10'000};
    std::chrono::milliseconds backoff{1000};
    // A flush with at most this many bytes written since the previous one runs fdatasync on the
    // loop (image_file.h); 0: every flush through io_uring. Slower than `stall`: `backoff`.
    std::size_t flush_max_dirty = 1u << 20;
    // While a client flushes after at most this many bytes, its inline writes start their
    // write-back as soon as they are answered (image_file.h, "Early write-back"); 0: never.
    std::size_t early_writeback_max = 256 * 1024;
    // While the export replicates, a client's write of at least this many bytes that is
    // page-aligned (offset, length and buffer) goes to the image with O_DIRECT
    // (image_file.h, "Direct writes"); 0: never.
    std::size_t direct_min_bytes = 256 * 1024;
};

struct ServerConfig {
    std::vector<ExportSpec> exports;
    std::filesystem::path socket_path;
    std::filesystem::path meta_dir;  // created at start; holds the replication metadata
    Role role = Role::primary;
    bool growable = false;  // see ExportSpec
    InlineWriteLimits inline_writes;  // small writes copied on the loop (image_file.h)

    // Replication (docs/imagesync.md). With neither `listen` nor `peer`, imagesyncd serves the
    // images alone and keeps no replication state.
    std::string module = "imagesync";  // both sides must agree
    std::string node;                  // this node's name (default: the host name)
    std::string listen;                // "HOST:PORT": the secondary waits for its primary here
    std::string peer;                  // "HOST:PORT": the primary dials its secondary here
    std::chrono::milliseconds timeout{5000};  // peer silent this long: go on alone
    bool start_disconnected = false;
    bool fence = false;  // hold write replies after losing the peer until `resume-io` (vmhad)
    std::uint64_t resync_rate = 0;  // bytes per second a resync may use; 0 = no limit
    std::uint64_t resync_min_rate = 8u << 20;  // while the VM writes; 0 = never yield
    // "disconnect" or "discard-zero-changes": what a split brain at the handshake does (both
    // sides must agree). docs/generations.md, "Split brain".
    std::string split_brain = "disconnect";
    // A client's write payload of at least this many bytes is lent to the replication socket
    // instead of copied into it (zero-copy send, replication/send_thread.h); 0 = always copy.
    std::size_t zero_copy_min_bytes = 64 * 1024;
    // Granularity of the dirty map and of verify's checksums (a power of two, 4 KiB .. 16 MiB),
    // and the size of one activity-log extent (a power of two, 64 KiB .. 1 GiB, not below the
    // chunk size). Both nodes must agree; both are fixed once a node's metadata was made.
    std::uint32_t chunk_size = 64 * 1024;
    std::uint32_t activity_log_extent = 4u << 20;
    // TCP congestion control of the replication sockets ("system": the kernel's default).
    // imagesyncd checks it at start (main.cc, replication/tcp_congestion.h); a socket that
    // refuses it later logs a warning and keeps the kernel's default.
    std::string tcp_congestion = "cubic";
    std::filesystem::path control_socket;  // status and commands (imagesync tool, vmhad)
};

// Runs imagesyncd in the calling thread until SIGTERM or SIGINT, then stops accepting,
// finishes and answers the requests already read, closes every connection and returns.
// The socket accepts connections only once everything is open (readiness).
vmha::Status run_server(const ServerConfig& config);

}  // namespace imagesync
