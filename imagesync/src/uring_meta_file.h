// The daemon's MetaFile (meta/meta_file.h): metadata pages written and fdatasync'ed through the
// process's io_uring, so that a dirty-map commit or an activity-log transaction never blocks
// the event loop. read() is blocking (start-up only).
//
// Owned by the io_context's single thread.
#pragma once

#include <filesystem>
#include <memory>

#include <vmha/error.h>

#include "meta/meta_file.h"
#include "uring.h"

namespace imagesync {

class UringMetaFile final : public meta::MetaFile {
public:
    // Opens `path` read-write; with `create`, creates it when missing (and fsyncs the directory).
    static vmha::Result<std::unique_ptr<UringMetaFile>> open(Uring& uring,
                                                             const std::filesystem::path& path,
                                                             bool create);
    ~UringMetaFile() override;
    UringMetaFile(const UringMetaFile&) = delete;
    UringMetaFile& operator=(const UringMetaFile&) = delete;

    vmha::Result<std::vector<std::byte>> read(std::uint64_t offset, std::size_t length) override;
    // All pages are written in parallel, then one fdatasync; `done` after it.
    void write_pages(std::vector<meta::Page> pages, meta::DoneCallback done) override;
    std::string describe() const override { return path_.string(); }

private:
    UringMetaFile(Uring& uring, std::filesystem::path path, int fd)
        : uring_(uring), path_(std::move(path)), fd_(fd) {}

    Uring& uring_;
    std::filesystem::path path_;
    int fd_;
};

}  // namespace imagesync
