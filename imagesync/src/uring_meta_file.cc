#include "uring_meta_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace imagesync {

namespace {

vmha::Error failure(const std::filesystem::path& path, const char* what, int error) {
    return vmha::Error(vmha::errc_from_errno(error),
                       fmt::format("metadata file \"{}\": {} failed: {}", path.string(), what,
                                   std::strerror(error)));
}

}  // namespace

vmha::Result<std::unique_ptr<UringMetaFile>> UringMetaFile::open(Uring& uring,
                                                                 const std::filesystem::path& path,
                                                                 bool create) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) return failure(path, "open", errno);
    if (create) {
        const auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
        const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            ::fsync(dfd);
            ::close(dfd);
        }
    }
    return std::unique_ptr<UringMetaFile>(new UringMetaFile(uring, path, fd));
}

UringMetaFile::~UringMetaFile() {
    if (fd_ >= 0) ::close(fd_);
}

vmha::Result<std::vector<std::byte>> UringMetaFile::read(std::uint64_t offset, std::size_t length) {
    std::vector<std::byte> out(length);
    std::size_t got = 0;
    while (got < length) {
        const ssize_t n = ::pread(fd_, out.data() + got, length - got, static_cast<off_t>(offset + got));
        if (n < 0) {
            if (errno == EINTR) continue;
            return failure(path_, "read", errno);
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    return out;
}

void UringMetaFile::write_pages(std::vector<meta::Page> pages, meta::DoneCallback done) {
    struct Batch {
        std::vector<meta::Page> pages;
        std::size_t remaining = 0;
        int error = 0;
        meta::DoneCallback done;
    };
    auto batch = std::make_shared<Batch>();
    batch->pages = std::move(pages);
    batch->remaining = batch->pages.size();
    batch->done = std::move(done);
    auto sync = [this, batch] {
        if (batch->error != 0) {
            batch->done(failure(path_, "write", batch->error));
            return;
        }
        io_uring_sqe sqe{};
        io_uring_prep_fsync(&sqe, fd_, IORING_FSYNC_DATASYNC);
        uring_.submit(sqe, [this, batch](int res) {
            if (res < 0) {
                batch->done(failure(path_, "fdatasync", -res));
            } else {
                batch->done({});
            }
        });
    };
    if (batch->remaining == 0) {
        sync();
        return;
    }
    for (const auto& page : batch->pages) {
        io_uring_sqe sqe{};
        io_uring_prep_write(&sqe, fd_, page.bytes.data(), static_cast<unsigned>(page.bytes.size()),
                            page.index * meta::kPageSize);
        uring_.submit(sqe, [batch, sync, expected = page.bytes.size()](int res) {
            if (res < 0 && batch->error == 0) batch->error = -res;
            // A short write of a 4 KiB page to a regular file does not happen; treat it as EIO.
            if (res >= 0 && static_cast<std::size_t>(res) != expected && batch->error == 0) {
                batch->error = EIO;
            }
            if (--batch->remaining == 0) sync();
        });
    }
}

}  // namespace imagesync
