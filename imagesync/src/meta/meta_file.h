// The I/O boundary of imagesync's persistent metadata (dirty map, activity log).
//
// A metadata file is a sequence of 4 KiB pages. The components in this folder never touch a
// file descriptor themselves: they hand whole pages to a MetaFile, which writes them and makes
// them durable (fdatasync or equivalent) before it reports completion. The daemon implements
// MetaFile on its io_uring; BlockingMetaFile (pwrite + fdatasync) serves tools and tests, and
// FakeMetaFile (fake_meta_file.h) injects faults and simulates crashes.
//
// Threading: a MetaFile and the component using it are owned by one event loop. `done` is
// called on that loop, exactly once, possibly before write_pages() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <vmha/error.h>

namespace imagesync::meta {

inline constexpr std::size_t kPageSize = 4096;

// One page of a metadata file: `bytes` (kPageSize of them) go at file offset index * kPageSize.
struct Page {
    std::uint64_t index = 0;
    std::vector<std::byte> bytes;
};

// A half-open byte range [offset, offset + length) of an export.
struct ByteRange {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::uint64_t end() const { return offset + length; }
    bool operator==(const ByteRange&) const = default;
};

using DoneCallback = std::function<void(vmha::Status)>;

class MetaFile {
public:
    virtual ~MetaFile() = default;

    // Startup only (blocking): up to `length` bytes at `offset`; fewer at the end of the file.
    virtual vmha::Result<std::vector<std::byte>> read(std::uint64_t offset, std::size_t length) = 0;

    // Writes every page, then makes them durable; calls `done` once with the first error, or
    // success only when every page is durable. Writes complete in the order they were issued.
    virtual void write_pages(std::vector<Page> pages, DoneCallback done) = 0;

    // The file's name, for error messages.
    virtual std::string describe() const = 0;
};

// pwrite + fdatasync on a regular file. write_pages() blocks and calls `done` before returning.
class BlockingMetaFile final : public MetaFile {
public:
    // Opens `path` read-write; with `create`, creates it when missing (and fsyncs its directory).
    static vmha::Result<std::unique_ptr<BlockingMetaFile>> open(const std::filesystem::path& path,
                                                                bool create);
    ~BlockingMetaFile() override;
    BlockingMetaFile(const BlockingMetaFile&) = delete;
    BlockingMetaFile& operator=(const BlockingMetaFile&) = delete;

    vmha::Result<std::vector<std::byte>> read(std::uint64_t offset, std::size_t length) override;
    void write_pages(std::vector<Page> pages, DoneCallback done) override;
    std::string describe() const override { return path_.string(); }

private:
    BlockingMetaFile(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
    std::filesystem::path path_;
    int fd_;
};

}  // namespace imagesync::meta
