#include "export.h"

#include <array>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "buffer_pool.h"
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

Export::Flight* Export::take_flight(const WriteOp& op, ReplicaSink::Done done) {
    Flight* f = nullptr;
    if (spare_flights_.empty()) {
        spare_flights_.reserve(flights_.size() + 1);  // so that finish() cannot throw
        f = &flights_.emplace_back();
    } else {
        f = spare_flights_.back();
        spare_flights_.pop_back();
    }
    f->op = op;
    f->pages_lent = false;
    f->op.pages_lent = op.data_in_own_pages ? &f->pages_lent : nullptr;
    f->done = std::move(done);
    return f;
}

void Export::apply(const WriteOp& op, ReplicaSink::Done done) noexcept {
    start(take_flight(op, std::move(done)));
}

void Export::apply_in_order(IntervalLock::Ticket ticket, const WriteOp& op,
                            ReplicaSink::Done done) {
    // Nothing has started if this throws (an allocation): the caller still owns the ticket.
    Flight* f = take_flight(op, std::move(done));
    f->ticket = ticket;
    if (!locks_.granted(ticket)) {
        locks_.when_granted(ticket, [this, f] { start(f); });
        return;
    }
    // Granted already (nothing earlier overlaps): started here, not from a posted grant, which
    // would cost the write a turn of the loop (start() is noexcept).
    start(f);
}

void Export::start(Flight* f) noexcept {
    const WriteOp op = f->op;  // a copy: `f` may be given back inside the calls below
    if (read_only()) {
        if (op.kind == WriteOp::Kind::flush) {
            apply_local(op, [this, f](vmha::Status s) { finish(f, std::move(s)); });
        } else {
            finish(f, vmha::Error(vmha::errc::read_only,
                                  fmt::format("export \"{}\" is read-only: this node is secondary",
                                              info_.name)));
        }
        return;
    }
    if (gate_ != nullptr && op.kind != WriteOp::Kind::flush) {
        f->gate = gate_;
        f->gate->begin(op, [this, f](vmha::Status s) {
            if (!s) {
                f->gate = nullptr;  // not begun: no end()
                finish(f, std::move(s));
                return;
            }
            apply_everywhere(f);
        });
        return;
    }
    apply_everywhere(f);
}

void Export::apply_everywhere(Flight* f) {
    // A copy: the last completion gives the flight back, possibly inside one of these calls.
    const WriteOp op = f->op;
    const std::size_t sinks = sinks_.size();
    f->remaining = 1 + sinks;
    apply_local(op, [this, f](vmha::Status s) {
        if (!s) f->local_error = std::move(s).error();
        joined(f);
    });
    for (std::size_t i = 0; i < sinks; ++i) {
        sinks_[i]->apply(op, [this, f](vmha::Status s) {
            if (!s && !f->sink_error) f->sink_error = std::move(s).error();
            joined(f);
        });
    }
}

void Export::joined(Flight* f) {
    if (--f->remaining != 0) return;
    vmha::Status result;
    if (f->local_error) {
        // A sink may hold what the local image does not: let it record the difference.
        if (f->op.kind != WriteOp::Kind::flush) {
            for (const auto& sink : sinks_) sink->local_failed(f->op);
        }
        result = std::move(*f->local_error);
    } else if (f->sink_error) {
        result = std::move(*f->sink_error);
    }
    if (f->gate != nullptr) f->gate->end(f->op);
    // A sink lent the payload's pages to a peer that may read them late: the caller reuses the
    // buffer once this returns, so it gets fresh pages first.
    if (f->pages_lent && !unshare_pages(f->op.data)) {
        spdlog::error("export \"{}\": cannot unshare the pages of a payload lent to the peer ({}); "
                      "a late frame of the lost connection may carry later bytes, within the "
                      "range already recorded dirty",
                      info_.name, std::strerror(errno));
    }
    finish(f, std::move(result));
}

void Export::finish(Flight* f, vmha::Status status) {
    if (f->ticket) locks_.release(*f->ticket);
    ReplicaSink::Done done = std::move(f->done);
    f->done = nullptr;
    f->ticket.reset();
    f->gate = nullptr;
    f->local_error.reset();
    f->sink_error.reset();
    f->op = {};
    spare_flights_.push_back(f);  // reserved in take_flight(): no allocation
    done(std::move(status));
}

}  // namespace imagesync
