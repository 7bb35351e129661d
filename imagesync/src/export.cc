#include "export.h"

#include <array>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "nbd_codec.h"

namespace imagesync {

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

vmha::Result<std::array<std::byte, 32>> read_header(const std::filesystem::path& path) {
    std::array<std::byte, 32> header{};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        return vmha::Error(vmha::errc_from_errno(e), fmt::format("cannot open image \"{}\": {}",
                                                                 path.string(), std::strerror(e)));
    }
    const ssize_t n = ::pread(fd, header.data(), header.size(), 0);
    ::close(fd);
    if (n < static_cast<ssize_t>(header.size())) header.fill(std::byte{0});
    return header;
}

}  // namespace

std::optional<std::uint64_t> qcow2_virtual_size(std::span<const std::byte> header) {
    if (header.size() < 32) return std::nullopt;
    if (nbd::get_u32(header, 0) != 0x514649fbU) return std::nullopt;  // "QFI\xfb"
    return nbd::get_u64(header, 24);
}

Export::Export(nbd::ExportInfo info, std::unique_ptr<ImageFile> file,
               asio::any_io_executor executor)
    : info_(std::move(info)), file_(std::move(file)), locks_(std::move(executor)) {}

vmha::Result<std::unique_ptr<Export>> Export::open(Uring& uring, asio::any_io_executor executor,
                                                   const ExportSpec& spec, Role role,
                                                   bool growable, InlineWriteLimits inline_writes) {
    const bool read_only = role == Role::secondary;
    // Always opened writable: a secondary applies its primary's replicated writes.
    auto file = ImageFile::open(uring, spec.path, true, inline_writes);
    if (!file) {
        return vmha::Error(file.error().code,
                           fmt::format("export \"{}\": {}", spec.name, file.error().message));
    }
    auto file_size = (*file)->current_size();
    if (!file_size) return std::move(file_size).error();

    std::uint64_t size = *file_size;
    std::string rule = "the file's size";
    if (spec.size) {
        if (*spec.size < *file_size) {
            return vmha::Error(vmha::errc::invalid_argument,
                               fmt::format("export \"{}\": size {} is smaller than image \"{}\", "
                                           "which has {} bytes",
                                           spec.name, *spec.size, spec.path.string(), *file_size));
        }
        size = *spec.size;
        rule = "size= on the command line";
    } else if (growable) {
        auto header = read_header(spec.path);
        if (!header) return std::move(header).error();
        if (const auto virtual_size = qcow2_virtual_size(*header)) {
            if (*virtual_size > (UINT64_MAX - kMiB) / 2) {
                return vmha::Error(vmha::errc::invalid_argument,
                                   fmt::format("export \"{}\": qcow2 virtual size {} is too large",
                                               spec.name, *virtual_size));
            }
            const std::uint64_t grown = (2 * *virtual_size + kMiB - 1) / kMiB * kMiB;
            size = std::max(grown, *file_size);
            rule =
                fmt::format("--growable: twice the qcow2 virtual size of {} bytes", *virtual_size);
        }
    }
    nbd::ExportInfo info{.name = spec.name, .size = size, .read_only = read_only};
    spdlog::info("export \"{}\": image \"{}\", {} bytes ({}), file has {} bytes, {}", spec.name,
                 spec.path.string(), size, rule, *file_size,
                 read_only ? "read-only (secondary)" : "writable (primary)");
    return std::unique_ptr<Export>(
        new Export(std::move(info), std::move(*file), std::move(executor)));
}

void Export::apply_local(const WriteOp& op, ImageFile::Done done) {
    // With nothing to join (no peer, no activity log) an inline write or flush may report at
    // once: the connection's reply then goes out before the loop turns (apply() says so).
    const auto completion = sinks_.empty() && gate_ == nullptr
                                ? ImageFile::Completion::may_run_inside
                                : ImageFile::Completion::posted;
    switch (op.kind) {
        case WriteOp::Kind::write:
            file_->write(op.offset, op.data, op.fua, std::move(done), ImageFile::Origin::client,
                         completion);
            break;
        case WriteOp::Kind::write_zeroes:
            file_->write_zeroes(op.offset, op.length, op.may_trim, op.fast_only, op.fua,
                                std::move(done));
            break;
        case WriteOp::Kind::trim:
            file_->trim(op.offset, op.length, op.fua, std::move(done));
            break;
        case WriteOp::Kind::flush:
            // Not on the loop while a sink replicates it: the FLUSH frame to the peer goes out
            // from this loop too, and would wait for the local fdatasync (measured slower).
            file_->flush(std::move(done), sinks_.empty(), completion);
            break;
    }
}

void Export::apply(const WriteOp& op, ReplicaSink::Done done) noexcept {
    if (read_only()) {
        if (op.kind == WriteOp::Kind::flush) {
            apply_local(op, std::move(done));
        } else {
            done(vmha::Error(vmha::errc::read_only,
                             fmt::format("export \"{}\" is read-only: this node is secondary",
                                         info_.name)));
        }
        return;
    }
    if (gate_ != nullptr && op.kind != WriteOp::Kind::flush) {
        WriteGate* gate = gate_;  // the one this operation began with, even if it changes
        gate->begin(op, [this, gate, op, done = std::move(done)](vmha::Status s) mutable {
            if (!s) {
                done(std::move(s));
                return;
            }
            apply_everywhere(op, [gate, op, done = std::move(done)](vmha::Status result) mutable {
                gate->end(op);
                done(std::move(result));
            });
        });
        return;
    }
    apply_everywhere(op, std::move(done));
}

void Export::apply_everywhere(const WriteOp& op, ReplicaSink::Done done) {
    struct Join {
        std::size_t remaining = 0;
        std::optional<vmha::Error> local_error;
        std::optional<vmha::Error> sink_error;
        ReplicaSink::Done done;
    };
    auto join = std::make_shared<Join>();
    join->remaining = 1 + sinks_.size();
    join->done = std::move(done);
    auto finish = [this, join, op] {
        if (--join->remaining != 0) return;
        if (join->local_error) {
            // A sink may hold what the local image does not: let it record the difference.
            if (op.kind != WriteOp::Kind::flush) {
                for (const auto& sink : sinks_) sink->local_failed(op);
            }
            join->done(std::move(*join->local_error));
        } else if (join->sink_error) {
            join->done(std::move(*join->sink_error));
        } else {
            join->done({});
        }
    };
    apply_local(op, [join, finish](vmha::Status s) {
        if (!s) join->local_error = std::move(s).error();
        finish();
    });
    for (const auto& sink : sinks_) {
        sink->apply(op, [join, finish](vmha::Status s) {
            if (!s && !join->sink_error) join->sink_error = std::move(s).error();
            finish();
        });
    }
}

void Export::apply_in_order(IntervalLock::Ticket ticket, const WriteOp& op,
                            ReplicaSink::Done done) {
    auto start = [this, ticket, op, done = std::move(done)]() mutable {
        apply(op, [this, ticket, done = std::move(done)](vmha::Status s) {
            locks_.release(ticket);
            done(std::move(s));
        });
    };
    if (!locks_.granted(ticket)) {
        locks_.when_granted(ticket, std::move(start));
        return;
    }
    // Granted already (nothing earlier overlaps): started here, not from a posted grant, which
    // would cost the write a turn of the loop (apply() is noexcept once the write started).
    start();
}

}  // namespace imagesync
