#include "image_file.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

namespace imagesync {

namespace {

constexpr std::size_t kMaxSingleTransfer = 1U << 30;
constexpr std::size_t kZeroChunk = 1U << 20;
// Inline writes must cover whole pages: a partial page that is not cached would be read from
// the disk first, on the loop thread.
constexpr std::uint64_t kInlineAlign = 4096;
// O_DIRECT alignment of offsets, lengths and buffers: a page, which every Linux block device
// accepts (most need only 512 bytes).
constexpr std::uint64_t kDirectAlign = 4096;
// A write through io_uring larger than this goes in pieces of this size, submitted together.
constexpr std::size_t kRingWritePiece = 128 * 1024;

const std::byte* zero_chunk() {
    static const std::vector<std::byte> zeroes(kZeroChunk);
    return zeroes.data();
}

bool retryable(int res) {
    return res == -EINTR || res == -EAGAIN;
}

}  // namespace

// One read or write, resubmitted until complete.
struct ImageFile::Transfer {
    bool is_write = false;
    bool fua = false;
    std::uint64_t start = 0;  // for messages
    std::uint64_t total = 0;
    std::uint64_t offset = 0;  // next byte
    std::byte* data = nullptr;
    std::size_t remaining = 0;
    bool direct = false;  // through direct_fd_ (a write) or direct_read_fd_ (a read)
    Done done;
};

// Zeroes written from a shared zero buffer, one chunk at a time.
struct ImageFile::ZeroFill {
    std::uint64_t start = 0;
    std::uint64_t total = 0;
    std::uint64_t offset = 0;
    std::uint64_t remaining = 0;
    Done done;
};

ImageFile::ImageFile(Uring& uring, std::filesystem::path path, int fd, InlineWriteLimits inline_writes)
    : uring_(uring), path_(std::move(path)), fd_(fd), inline_(inline_writes) {}

ImageFile::~ImageFile() {
    if (inline_pending_ != 0) {
        vmha::internal_error(fmt::format("image \"{}\" closed with {} inline writes unanswered",
                                         path_.string(), inline_pending_));
    }
    if (direct_fd_ >= 0) ::close(direct_fd_);
    if (direct_read_fd_ >= 0) ::close(direct_read_fd_);
    if (fd_ >= 0) ::close(fd_);
}

vmha::Result<std::unique_ptr<ImageFile>> ImageFile::open(Uring& uring,
                                                         const std::filesystem::path& path,
                                                         bool writable,
                                                         InlineWriteLimits inline_writes) {
    const int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        return vmha::Error(
            vmha::errc_from_errno(e),
            fmt::format("cannot open image \"{}\" for {}: {}", path.string(),
                        writable ? "reading and writing" : "reading", std::strerror(e)));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("image \"{}\" is not a regular file", path.string()));
    }
    return std::unique_ptr<ImageFile>(new ImageFile(uring, path, fd, inline_writes));
}

vmha::Result<std::uint64_t> ImageFile::current_size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        const int e = errno;
        return vmha::Error(vmha::errc_from_errno(e), fmt::format("cannot stat image \"{}\": {}",
                                                                 path_.string(), std::strerror(e)));
    }
    return static_cast<std::uint64_t>(st.st_size);
}

vmha::Error ImageFile::failure(const char* what, std::uint64_t offset, std::uint64_t length,
                               int error) const {
    return {vmha::errc_from_errno(error),
            fmt::format("{} {} bytes at offset {} of \"{}\" failed: {}", what, length, offset,
                        path_.string(), std::strerror(error))};
}

void ImageFile::read(std::uint64_t offset, std::span<std::byte> buffer, Done done, Cache cache) {
    auto t = std::make_shared<Transfer>();
    t->start = t->offset = offset;
    t->total = t->remaining = buffer.size();
    t->data = buffer.data();
    t->done = std::move(done);
    if (cache == Cache::bypass && direct_aligned(offset, buffer.size(), buffer.data()) &&
        open_direct_reads()) {
        t->direct = true;
        ++counts_.direct_reads;
    }
    issue(std::move(t));
}

bool ImageFile::direct_aligned(std::uint64_t offset, std::size_t size, const std::byte* data) {
    return offset % kDirectAlign == 0 && size % kDirectAlign == 0 &&
           reinterpret_cast<std::uintptr_t>(data) % kDirectAlign == 0;
}

bool ImageFile::open_direct_reads() {
    if (direct_read_fd_ >= 0) return !direct_reads_refused_;
    if (direct_reads_refused_) return false;
    direct_read_fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (direct_read_fd_ < 0) {
        direct_reads_refused_ = true;
        spdlog::info("image \"{}\": resync and verify read through the page cache (O_DIRECT: {})",
                     path_.string(), std::strerror(errno));
        return false;
    }
    return true;
}

void ImageFile::write(std::uint64_t offset, std::span<const std::byte> data, bool fua, Done done,
                      Origin origin, Completion completion) {
    written_since_flush_ += data.size();
    auto t = std::make_shared<Transfer>();
    t->is_write = true;
    t->fua = fua;
    t->start = t->offset = offset;
    t->total = t->remaining = data.size();
    // io_uring only reads from this buffer for a write.
    t->data = const_cast<std::byte*>(data.data());  // NOLINT
    if (inline_eligible(offset, data.size(), fua, origin)) {
        // small_flushes_ stays 0 while early write-back is off (flush()).
        const bool early_writeback =
            small_flushes_ >= 2 && written_since_flush_ <= inline_.early_writeback_max;
        t->done = std::move(done);
        write_inline(std::move(t), completion, early_writeback);
        return;
    }
    t->done = std::move(done);
    if (direct_eligible(offset, data, origin)) {
        ++counts_.ring_writes;
        ++counts_.direct_writes;
        t->direct = true;
        issue(std::move(t));  // one request: no io-wq worker copies it
        return;
    }
    write_through_ring(std::move(t));
}

void ImageFile::enable_direct_writes() {
    if (direct_fd_ >= 0 || inline_.direct_min_bytes == 0) return;
    direct_fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT);
    if (direct_fd_ < 0) {
        spdlog::info("image \"{}\": no direct writes (O_DIRECT: {}); large writes stay buffered",
                     path_.string(), std::strerror(errno));
        return;
    }
    spdlog::debug("image \"{}\": client writes of {} bytes or more go with O_DIRECT",
                  path_.string(), inline_.direct_min_bytes);
}

bool ImageFile::direct_eligible(std::uint64_t offset, std::span<const std::byte> data,
                                Origin origin) const {
    if (direct_fd_ < 0 || direct_refused_ || origin != Origin::client) return false;
    if (data.size() < inline_.direct_min_bytes) return false;
    return direct_aligned(offset, data.size(), data.data());
}

// A write larger than kRingWritePiece goes as pieces submitted together: io-wq writes them in
// parallel, where one 1 MiB buffered write took one worker several times as long (measured,
// docs/imagesync.md). The write is answered once every piece completed, with the first failure
// if any (a failed write may have changed some of its bytes either way).
void ImageFile::write_through_ring(std::shared_ptr<Transfer> t) {
    ++counts_.ring_writes;
    if (t->remaining <= kRingWritePiece) {
        issue(std::move(t));
        return;
    }
    struct Pieces {
        std::size_t left = 0;
        vmha::Status status;
        Done done;
    };
    auto pieces = std::make_shared<Pieces>();
    pieces->done = std::move(t->done);
    pieces->left = (t->remaining + kRingWritePiece - 1) / kRingWritePiece;
    for (std::size_t at = 0; at < t->remaining; at += kRingWritePiece) {
        auto piece = std::make_shared<Transfer>(*t);
        piece->start = piece->offset = t->offset + at;
        piece->total = piece->remaining = std::min(kRingWritePiece, t->remaining - at);
        piece->data = t->data + at;
        piece->done = [pieces](vmha::Status status) {
            if (!status && pieces->status) pieces->status = std::move(status);
            if (--pieces->left == 0) pieces->done(std::move(pieces->status));
        };
        issue(std::move(piece));
    }
}

bool ImageFile::inline_eligible(std::uint64_t offset, std::size_t size, bool fua,
                                Origin origin) {
    const std::size_t limit =
        origin == Origin::peer ? inline_.peer_max_bytes : inline_.max_bytes;
    if (fua || size == 0 || size > limit) return false;
    if (offset % kInlineAlign != 0 || size % kInlineAlign != 0) return false;
    return write_pause_.allows(path_);
}

bool ImageFile::Pause::allows(const std::filesystem::path& image) {
    if (!on) return true;
    if (std::chrono::steady_clock::now() < until) return false;
    on = false;
    spdlog::debug("image \"{}\": inline {} resume", image.string(), what);
    return true;
}

bool ImageFile::Pause::stalled(std::chrono::steady_clock::time_point start,
                               std::chrono::steady_clock::time_point end,
                               std::chrono::steady_clock::duration limit,
                               std::chrono::milliseconds backoff) {
    if (end - start <= limit) return false;
    on = true;
    until = end + backoff;
    return true;
}

void ImageFile::write_inline(std::shared_ptr<Transfer> t, Completion completion,
                             bool early_writeback) {
    ssize_t n = -1;
    int error = 0;
    if (nowait_ != Nowait::unsupported) {
        iovec iov{t->data, t->remaining};
        n = ::pwritev2(fd_, &iov, 1, static_cast<off_t>(t->offset), RWF_NOWAIT);
        error = n < 0 ? errno : 0;
        if (error == EAGAIN) {  // would block: the worker threads' job
            write_through_ring(std::move(t));
            return;
        }
        if (error == EOPNOTSUPP) {
            nowait_ = Nowait::unsupported;
            spdlog::debug("image \"{}\": no nonblocking buffered writes (RWF_NOWAIT: {}); "
                          "small writes are copied with pwrite while it stays fast",
                          path_.string(), std::strerror(error));
        } else {
            nowait_ = Nowait::supported;
        }
    }
    if (nowait_ == Nowait::unsupported) {
        const auto start = std::chrono::steady_clock::now();
        n = ::pwrite(fd_, t->data, t->remaining, static_cast<off_t>(t->offset));
        error = n < 0 ? errno : 0;
        const auto end = std::chrono::steady_clock::now();
        const auto allowed = inline_.stall + std::chrono::microseconds(t->remaining / 1024);
        if (write_pause_.stalled(start, end, allowed, inline_.backoff)) {
            ++counts_.stalls;
            spdlog::debug("image \"{}\": an inline write of {} bytes took {} us; writes go "
                          "through io_uring for {} ms",
                          path_.string(), t->remaining,
                          std::chrono::duration_cast<std::chrono::microseconds>(end - start).count(),
                          inline_.backoff.count());
        }
    }
    ++counts_.inline_writes;
    const int res = n < 0 ? -error : static_cast<int>(n);
    const bool writeback = early_writeback && n == static_cast<ssize_t>(t->remaining);
    const std::uint64_t offset = t->offset;
    const std::size_t length = t->remaining;
    if (completion == Completion::may_run_inside) {
        on_transfer(std::move(t), res);  // a short write or EINTR continues through io_uring
        if (writeback) start_writeback(offset, length);  // the reply is out
        return;
    }
    ++inline_pending_;
    asio::post(uring_.context(), [this, t = std::move(t), res, writeback, offset, length]() mutable {
        --inline_pending_;
        on_transfer(std::move(t), res);  // a short write or EINTR continues through io_uring
        if (!writeback) return;
        // Posted again, so that what answering the write posted (a secondary's ACK, a
        // primary's reply) goes first. It may outlive this file: then it is dropped.
        asio::post(uring_.context(), [alive = std::weak_ptr<const int>(alive_), this, offset,
                                      length] {
            if (!alive.expired()) start_writeback(offset, length);
        });
    });
}

// Starts writing [offset, offset + length) back to the disk without waiting for it, so that the
// flush the client is about to send finds that I/O under way (see "Early write-back" in
// image_file.h). Only SYNC_FILE_RANGE_WRITE: the waiting flags would also advance this file's
// write-back error cursor (file_fdatawait_range), and the next fdatasync could then succeed
// without reporting a failed write-back. A failure here is harmless for the same reason: the
// pages stay dirty or their error is recorded, and the flush reports it. One slower than
// `stall` (a congested queue, a journal commit) pauses early write-backs for `backoff`.
void ImageFile::start_writeback(std::uint64_t offset, std::size_t length) {
    if (!writeback_pause_.allows(path_)) return;
    const auto start = std::chrono::steady_clock::now();
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                      SYNC_FILE_RANGE_WRITE);
    const auto end = std::chrono::steady_clock::now();
    ++counts_.early_writebacks;
    if (writeback_pause_.stalled(start, end, inline_.stall, inline_.backoff)) {
        ++counts_.stalls;
        spdlog::debug("image \"{}\": an early write-back took {} us; none for {} ms",
                      path_.string(),
                      std::chrono::duration_cast<std::chrono::microseconds>(end - start).count(),
                      inline_.backoff.count());
    }
}

void ImageFile::issue(std::shared_ptr<Transfer> t) {
    io_uring_sqe sqe{};
    const auto n = static_cast<unsigned>(std::min(t->remaining, kMaxSingleTransfer));
    if (t->is_write) {
        io_uring_prep_write(&sqe, t->direct ? direct_fd_ : fd_, t->data, n, t->offset);
        if (t->fua) sqe.rw_flags = RWF_DSYNC;
    } else {
        io_uring_prep_read(&sqe, t->direct ? direct_read_fd_ : fd_, t->data, n, t->offset);
    }
    uring_.submit(sqe, [this, t](int res) { on_transfer(t, res); });
}

void ImageFile::on_transfer(std::shared_ptr<Transfer> t, int res) {
    const char* what = t->is_write ? "writing" : "reading";
    if (t->direct && res == -EINVAL) {
        // The device wants another alignment (or a short write left an unaligned rest): this
        // transfer and every later one of its kind go through the page cache.
        bool& refused = t->is_write ? direct_refused_ : direct_reads_refused_;
        if (!refused) {
            spdlog::warn("image \"{}\": a direct {} of {} bytes at offset {} was refused (EINVAL); "
                         "{} through the page cache from now on",
                         path_.string(), t->is_write ? "write" : "read", t->remaining, t->offset,
                         t->is_write ? "writing" : "reading");
        }
        refused = true;  // for writes, the descriptor stays: other direct writes may be in flight
        t->direct = false;
        issue(std::move(t));
        return;
    }
    if (retryable(res)) {
        issue(std::move(t));
        return;
    }
    if (res < 0) {
        if (t->is_write && t->fua && res == -EIO && !durability_lost_) {
            durability_lost_ = failure("durably writing", t->start, t->total, EIO);
        }
        t->done(failure(what, t->start, t->total, -res));
        return;
    }
    if (res == 0) {
        if (!t->is_write) {
            // End of file: a growable export reads zeroes beyond it.
            std::memset(t->data, 0, t->remaining);
            t->done({});
        } else {
            t->done(failure(what, t->start, t->total, EIO));
        }
        return;
    }
    const auto done_bytes = static_cast<std::size_t>(res);
    t->offset += done_bytes;
    t->data += done_bytes;
    t->remaining -= done_bytes;
    if (t->remaining == 0) {
        t->done({});
        return;
    }
    // A short direct transfer (at the end of the file) may leave an unaligned rest: that goes
    // through the cache, without turning direct I/O off.
    if (t->direct && !direct_aligned(t->offset, t->remaining, t->data)) t->direct = false;
    issue(std::move(t));  // short transfer: the rest
}

void ImageFile::flush(Done done, bool may_inline, Completion completion) {
    if (durability_lost_) {
        done(*durability_lost_);
        return;
    }
    const bool small =
        may_inline && written_since_flush_ <= inline_.flush_max_dirty && inline_.flush_max_dirty > 0;
    small_flushes_ = inline_.early_writeback_max > 0 &&
                             written_since_flush_ <= inline_.early_writeback_max
                         ? std::min(small_flushes_ + 1, 2)
                         : 0;
    written_since_flush_ = 0;  // what is written from now on is the next flush's
    if (small && flush_pause_.allows(path_)) {
        flush_inline(std::move(done), completion);
        return;
    }
    ++counts_.ring_flushes;
    flush_through_ring(std::move(done));
}

void ImageFile::flush_through_ring(Done done) {
    io_uring_sqe sqe{};
    io_uring_prep_fsync(&sqe, fd_, IORING_FSYNC_DATASYNC);
    uring_.submit(sqe, [this, done = std::move(done)](int res) mutable {
        if (retryable(res)) {
            flush_through_ring(std::move(done));
            return;
        }
        flushed(res, std::move(done));
    });
}

// fdatasync on the loop: it has at most flush_max_dirty bytes of this process's writes to
// write back, plus the journal commit. One slower than `stall` (a slow or congested disk) sends
// flushes to io_uring for `backoff`.
void ImageFile::flush_inline(Done done, Completion completion) {
    const auto start = std::chrono::steady_clock::now();
    int res = 0;
    do {
        res = ::fdatasync(fd_) < 0 ? -errno : 0;
    } while (res == -EINTR);
    const auto end = std::chrono::steady_clock::now();
    if (flush_pause_.stalled(start, end, inline_.stall, inline_.backoff)) {
        ++counts_.stalls;
        spdlog::debug("image \"{}\": an inline fdatasync took {} us; flushes go through io_uring "
                      "for {} ms",
                      path_.string(),
                      std::chrono::duration_cast<std::chrono::microseconds>(end - start).count(),
                      inline_.backoff.count());
    }
    ++counts_.inline_flushes;
    if (completion == Completion::may_run_inside) {
        flushed(res, std::move(done));
        return;
    }
    ++inline_pending_;
    asio::post(uring_.context(), [this, res, done = std::move(done)]() mutable {
        --inline_pending_;
        flushed(res, std::move(done));
    });
}

void ImageFile::flushed(int res, Done done) {
    if (res < 0) {
        if (!durability_lost_) {
            durability_lost_ = vmha::Error(
                vmha::errc::io_error,
                fmt::format("fdatasync of \"{}\" failed ({}); written data may be lost, so "
                            "every later flush fails until imagesyncd restarts",
                            path_.string(), std::strerror(-res)));
        }
        done(*durability_lost_);
    } else {
        done({});
    }
}

void ImageFile::fallocate(int mode, std::uint64_t offset, std::uint64_t length,
                          std::function<void(int)> done) {
    io_uring_sqe sqe{};
    io_uring_prep_fallocate(&sqe, fd_, mode, static_cast<off_t>(offset),
                            static_cast<off_t>(length));
    uring_.submit(sqe, std::move(done));
}

void ImageFile::then_sync(bool fua, vmha::Status status, Done done) {
    if (!status || !fua) {
        done(std::move(status));
        return;
    }
    flush(std::move(done));
}

void ImageFile::trim(std::uint64_t offset, std::uint64_t length, bool fua, Done done) {
    written_since_flush_ += length;  // metadata to commit: counted as if written
    fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length,
              [this, offset, length, fua, done = std::move(done)](int res) mutable {
                  if (res < 0 && res != -EOPNOTSUPP) {
                      done(failure("punching a hole of", offset, length, -res));
                      return;
                  }
                  // No hole punching here: TRIM is advisory, so it is a successful no-op.
                  then_sync(fua, {}, std::move(done));
              });
}

void ImageFile::write_zeroes(std::uint64_t offset, std::uint64_t length, bool may_trim,
                             bool fast_only, bool fua, Done done) {
    written_since_flush_ += length;
    auto slow_path = [this, offset, length, fast_only, fua](Done d) {
        if (fast_only) {
            d(vmha::Error(vmha::errc::unsupported,
                          fmt::format("zeroing {} bytes at offset {} of \"{}\" would need "
                                      "writing zeroes, and a fast zero was asked for",
                                      length, offset, path_.string())));
            return;
        }
        auto z = std::make_shared<ZeroFill>();
        z->start = z->offset = offset;
        z->total = z->remaining = length;
        z->done = [this, fua, d = std::move(d)](vmha::Status s) mutable {
            then_sync(fua, std::move(s), std::move(d));
        };
        issue_zero_fill(std::move(z));
    };
    auto zero_range = [this, offset, length, fua, slow_path](Done d) {
        // Without KEEP_SIZE: zeroing past the end of a growable export's file extends it.
        fallocate(FALLOC_FL_ZERO_RANGE, offset, length,
                  [this, offset, length, fua, slow_path, d = std::move(d)](int res) mutable {
                      if (res == -EOPNOTSUPP) {
                          slow_path(std::move(d));
                      } else if (res < 0) {
                          d(failure("zeroing", offset, length, -res));
                      } else {
                          then_sync(fua, {}, std::move(d));
                      }
                  });
    };
    if (!may_trim) {
        zero_range(std::move(done));
        return;
    }
    fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length,
              [this, offset, length, fua, zero_range, done = std::move(done)](int res) mutable {
                  if (res == -EOPNOTSUPP) {
                      zero_range(std::move(done));
                  } else if (res < 0) {
                      done(failure("punching a hole of", offset, length, -res));
                  } else {
                      then_sync(fua, {}, std::move(done));
                  }
              });
}

void ImageFile::issue_zero_fill(std::shared_ptr<ZeroFill> z) {
    io_uring_sqe sqe{};
    const auto n = static_cast<unsigned>(std::min<std::uint64_t>(z->remaining, kZeroChunk));
    io_uring_prep_write(&sqe, fd_, zero_chunk(), n, z->offset);
    uring_.submit(sqe, [this, z](int res) {
        if (retryable(res)) {
            issue_zero_fill(z);
            return;
        }
        if (res <= 0) {
            z->done(failure("writing zeroes over", z->start, z->total, res < 0 ? -res : EIO));
            return;
        }
        z->offset += static_cast<std::uint64_t>(res);
        z->remaining -= static_cast<std::uint64_t>(res);
        if (z->remaining == 0) {
            z->done({});
            return;
        }
        issue_zero_fill(z);
    });
}

void ImageFile::cache(std::uint64_t offset, std::uint32_t length, Done done) {
    io_uring_sqe sqe{};
    io_uring_prep_fadvise(&sqe, fd_, offset, static_cast<off_t>(length), POSIX_FADV_WILLNEED);
    uring_.submit(sqe, [this, offset, length, done = std::move(done)](int res) {
        if (res < 0) {
            done(failure("read-ahead of", offset, length, -res));
        } else {
            done({});
        }
    });
}

vmha::Result<std::vector<ImageFile::Extent>> ImageFile::allocation(std::uint64_t offset,
                                                                   std::uint64_t length,
                                                                   std::size_t max_extents) const {
    std::vector<Extent> extents;
    auto add = [&extents](std::uint64_t len, bool hole) {
        if (len == 0) return;
        if (!extents.empty() && extents.back().hole == hole) {
            extents.back().length += len;
        } else {
            extents.push_back({len, hole});
        }
    };
    auto file_size = current_size();
    if (!file_size) return std::move(file_size).error();
    const std::uint64_t end = offset + length;
    std::uint64_t pos = offset;
    while (pos < end && extents.size() < max_extents) {
        if (pos >= *file_size) {
            add(end - pos, true);
            break;
        }
        const off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0) {
            const int e = errno;
            if (e == ENXIO) {  // no data from pos to the end of the file
                add(end - pos, true);
                break;
            }
            if (e == EINVAL || e == EOPNOTSUPP) {  // no SEEK_DATA here: all data
                add(end - pos, false);
                break;
            }
            return failure("mapping", pos, end - pos, e);
        }
        const auto data_at = static_cast<std::uint64_t>(data);
        if (data_at > pos) {
            const std::uint64_t hole_end = std::min(data_at, end);
            add(hole_end - pos, true);
            pos = hole_end;
            continue;
        }
        const off_t hole = ::lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
        if (hole < 0) return failure("mapping", pos, end - pos, errno);
        const std::uint64_t data_end = std::min(static_cast<std::uint64_t>(hole), end);
        if (data_end <= pos) {  // cannot happen on a sane file system; avoid looping
            add(end - pos, false);
            break;
        }
        add(data_end - pos, false);
        pos = data_end;
    }
    return extents;
}

}  // namespace imagesync
