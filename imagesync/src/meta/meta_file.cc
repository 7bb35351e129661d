#include "meta/meta_file.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace imagesync::meta {
namespace {

std::string errno_text(int e) { return std::system_category().message(e); }

vmha::Error errno_error(int e, std::string what) {
    return vmha::Error(vmha::errc_from_errno(e), fmt::format("{}: {}", what, errno_text(e)));
}

vmha::Status fsync_directory(const std::filesystem::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno_error(errno, fmt::format("cannot open directory \"{}\"", dir.string()));
    int rc = ::fsync(fd);
    int e = errno;
    ::close(fd);
    if (rc != 0) return errno_error(e, fmt::format("cannot fsync directory \"{}\"", dir.string()));
    return {};
}

}  // namespace

vmha::Result<std::unique_ptr<BlockingMetaFile>> BlockingMetaFile::open(
    const std::filesystem::path& path, bool create) {
    int flags = O_RDWR | O_CLOEXEC;
    bool created = false;
    int fd = ::open(path.c_str(), flags);
    if (fd < 0 && errno == ENOENT && create) {
        fd = ::open(path.c_str(), flags | O_CREAT | O_EXCL, 0600);
        created = fd >= 0;
    }
    if (fd < 0) {
        return errno_error(errno, fmt::format("cannot open metadata file \"{}\"", path.string()));
    }
    if (created) {
        auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
        if (auto st = fsync_directory(dir); !st) {
            ::close(fd);
            return std::move(st).error();
        }
    }
    return std::unique_ptr<BlockingMetaFile>(new BlockingMetaFile(path, fd));
}

BlockingMetaFile::~BlockingMetaFile() { ::close(fd_); }

vmha::Result<std::vector<std::byte>> BlockingMetaFile::read(std::uint64_t offset, std::size_t length) {
    std::vector<std::byte> out(length);
    std::size_t done = 0;
    while (done < length) {
        ssize_t n = ::pread(fd_, out.data() + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error(errno, fmt::format("cannot read {} bytes at offset {} of \"{}\"",
                                                  length, offset, path_.string()));
        }
        if (n == 0) break;  // end of file
        done += static_cast<std::size_t>(n);
    }
    out.resize(done);
    return out;
}

void BlockingMetaFile::write_pages(std::vector<Page> pages, DoneCallback done) {
    for (const Page& page : pages) {
        if (page.bytes.size() != kPageSize) {
            vmha::internal_error(fmt::format("page {} for \"{}\" has {} bytes, not {}", page.index,
                                             path_.string(), page.bytes.size(), kPageSize));
        }
        const std::uint64_t offset = page.index * kPageSize;
        std::size_t written = 0;
        while (written < kPageSize) {
            ssize_t n = ::pwrite(fd_, page.bytes.data() + written, kPageSize - written,
                                 static_cast<off_t>(offset + written));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                int e = n < 0 ? errno : EIO;
                done(errno_error(e, fmt::format("cannot write metadata page {} of \"{}\"",
                                                page.index, path_.string())));
                return;
            }
            written += static_cast<std::size_t>(n);
        }
    }
    if (::fdatasync(fd_) != 0) {
        done(errno_error(errno, fmt::format("cannot fdatasync \"{}\"", path_.string())));
        return;
    }
    done({});
}

}  // namespace imagesync::meta
