#include "meta/fake_meta_file.h"

#include <algorithm>

#include <fmt/format.h>

namespace imagesync::meta {

vmha::Result<std::vector<std::byte>> FakeMetaFile::read(std::uint64_t offset, std::size_t length) {
    if (offset >= bytes_.size()) return std::vector<std::byte>{};
    auto begin = bytes_.begin() + static_cast<std::ptrdiff_t>(offset);
    auto n = std::min<std::uint64_t>(length, bytes_.size() - offset);
    return std::vector<std::byte>(begin, begin + static_cast<std::ptrdiff_t>(n));
}

void FakeMetaFile::fail_write(std::size_t n, vmha::errc code) {
    fail_at_call_ = write_calls_ + n;
    fail_code_ = code;
}

void FakeMetaFile::write_pages(std::vector<Page> pages, DoneCallback done) {
    ++write_calls_;
    Pending p{std::move(pages), std::move(done), std::nullopt};
    if (write_calls_ == fail_at_call_) p.failure = fail_code_;
    if (deferred_) {
        pending_.push_back(std::move(p));
        return;
    }
    finish(std::move(p));
}

bool FakeMetaFile::complete_next() {
    if (pending_.empty()) return false;
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    finish(std::move(p));
    return true;
}

void FakeMetaFile::finish(Pending p) {
    if (p.failure) {
        p.done(vmha::Error(*p.failure, fmt::format("injected failure writing \"{}\"", name_)));
        return;
    }
    for (const Page& page : p.pages) apply(page, page.bytes.size());
    pages_written_ += p.pages.size();
    p.done({});
}

void FakeMetaFile::apply(const Page& page, std::size_t length) {
    const std::uint64_t offset = page.index * kPageSize;
    if (bytes_.size() < offset + page.bytes.size()) bytes_.resize(offset + page.bytes.size());
    std::copy_n(page.bytes.begin(), length, bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
}

void FakeMetaFile::crash(Crash mode) {
    if (!pending_.empty() && !pending_.front().failure) {
        const std::vector<Page>& pages = pending_.front().pages;
        if (mode == Crash::tear_oldest && !pages.empty()) apply(pages.front(), kPageSize / 2);
        if (mode == Crash::land_oldest) {
            for (const Page& page : pages) apply(page, page.bytes.size());
        }
    }
    pending_.clear();
}

}  // namespace imagesync::meta
