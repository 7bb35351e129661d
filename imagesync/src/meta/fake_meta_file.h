// An in-memory MetaFile for tests: fault injection, deferred completion and simulated crashes.
//
// The fake keeps the *durable* image of the file: pages reach it only when a write completes
// successfully. In deferred mode writes wait until the test calls complete_next(), so a test
// can hold a commit in flight, pile more work behind it, and then crash() — dropping every
// pending write (optionally tearing the oldest one) exactly as a power loss would.
//
// Threading: single-threaded, like the components it stands in for.
#pragma once

#include <deque>
#include <optional>

#include "meta/meta_file.h"

namespace imagesync::meta {

class FakeMetaFile final : public MetaFile {
public:
    explicit FakeMetaFile(std::string name = "fake.meta") : name_(std::move(name)) {}

    vmha::Result<std::vector<std::byte>> read(std::uint64_t offset, std::size_t length) override;
    void write_pages(std::vector<Page> pages, DoneCallback done) override;
    std::string describe() const override { return name_; }

    // The `n`-th write_pages() call from now (1 = the next one) fails with `code`; its pages
    // are not applied.
    void fail_write(std::size_t n, vmha::errc code = vmha::errc::io_error);
    // When deferred, writes complete only through complete_next().
    void set_deferred(bool deferred) { deferred_ = deferred; }
    // Completes the oldest pending write (applying its pages unless it is set to fail) and calls
    // its callback. False when nothing is pending.
    bool complete_next();
    // Power loss: pending writes are dropped without callbacks, except that the oldest one may
    // have reached the disk in part (tear_oldest: the first half of its first page) or in full
    // (land_oldest: written, but the completion was never reported).
    enum class Crash { drop_pending, tear_oldest, land_oldest };
    void crash(Crash mode = Crash::drop_pending);

    std::size_t pending_writes() const { return pending_.size(); }
    std::size_t write_calls() const { return write_calls_; }
    std::size_t pages_written() const { return pages_written_; }
    // The durable bytes, for inspection and deliberate corruption.
    std::vector<std::byte>& bytes() { return bytes_; }

private:
    struct Pending {
        std::vector<Page> pages;
        DoneCallback done;
        std::optional<vmha::errc> failure;
    };
    void apply(const Page& page, std::size_t length);
    void finish(Pending p);

    std::string name_;
    std::vector<std::byte> bytes_;
    std::deque<Pending> pending_;
    bool deferred_ = false;
    std::size_t write_calls_ = 0;
    std::size_t pages_written_ = 0;
    std::size_t fail_at_call_ = 0;  // 0 = none
    vmha::errc fail_code_ = vmha::errc::io_error;
};

}  // namespace imagesync::meta
