#include "meta/dirty_map.h"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "meta/detail/bytes.h"

namespace imagesync::meta {
namespace {

using namespace detail;

const std::uint64_t kMagic = magic("vmhadirt");
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderChecksumAt = 40;
constexpr std::uint64_t kBitsPerPage = kPageSize * 8;
constexpr std::uint64_t kWordsPerPage = kPageSize / 8;
constexpr std::uint32_t kMinChunk = 4096;
constexpr std::uint32_t kMaxChunk = 64u * 1024 * 1024;

std::uint64_t div_ceil(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace

DirtyMap::DirtyMap(MetaFile& file, std::uint64_t export_size, std::uint32_t chunk_size)
    : file_(file),
      export_size_(export_size),
      chunk_size_(chunk_size),
      chunks_(div_ceil(export_size, chunk_size)),
      pages_(div_ceil(chunks_, kBitsPerPage)),
      words_(pages_ * kWordsPerPage, 0),
      page_pending_(pages_, false),
      page_in_flight_(pages_, false) {}

vmha::Status DirtyMap::check_geometry(const MetaFile& file, std::uint64_t export_size,
                                      std::uint32_t chunk_size) {
    if (!is_power_of_two(chunk_size) || chunk_size < kMinChunk || chunk_size > kMaxChunk) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("dirty map \"{}\": chunk size {} is not a power of two "
                                       "between {} and {}",
                                       file.describe(), chunk_size, human_size(kMinChunk),
                                       human_size(kMaxChunk)));
    }
    if (export_size == 0) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("dirty map \"{}\": the export size is 0", file.describe()));
    }
    return {};
}

vmha::Result<std::unique_ptr<DirtyMap>> DirtyMap::create(MetaFile& file, std::uint64_t export_size,
                                                         std::uint32_t chunk_size) {
    if (auto st = check_geometry(file, export_size, chunk_size); !st) return std::move(st).error();
    std::unique_ptr<DirtyMap> map(new DirtyMap(file, export_size, chunk_size));
    map->header_pending_ = true;
    for (std::uint64_t p = 0; p < map->pages_; ++p) map->note_changed(p);
    map->start_commit();
    return map;
}

vmha::Result<std::unique_ptr<DirtyMap>> DirtyMap::load(MetaFile& file, std::uint64_t export_size,
                                                       std::uint32_t chunk_size) {
    if (auto st = check_geometry(file, export_size, chunk_size); !st) return std::move(st).error();
    const std::string name = file.describe();
    auto header = file.read(0, kPageSize);
    if (!header) return std::move(header).error();
    std::span<const std::byte> h(*header);
    auto corrupt = [&](std::string why) {
        return vmha::Error(vmha::errc::unreadable,
                           fmt::format("dirty map \"{}\" is corrupt: {}", name, why));
    };
    if (auto st = check_header(h, kMagic, "vmhadirt", kVersion, kHeaderChecksumAt, "dirty map", name);
        !st) {
        return std::move(st).error();
    }
    const std::uint32_t file_chunk = get_u32(h, 16);
    const std::uint64_t file_size = get_u64(h, 24);
    if (file_chunk != chunk_size) {
        return vmha::Error(vmha::errc::invalid_config,
                           fmt::format("dirty map \"{}\" was made with a chunk size of {} but the "
                                       "configured chunk size is {}",
                                       name, human_size(file_chunk), human_size(chunk_size)));
    }
    if (file_size != export_size) {
        return vmha::Error(vmha::errc::invalid_config,
                           fmt::format("dirty map \"{}\" was made for an export of {} bytes but the "
                                       "export is {} bytes",
                                       name, file_size, export_size));
    }
    std::unique_ptr<DirtyMap> map(new DirtyMap(file, export_size, chunk_size));
    if (std::uint64_t pages = get_u64(h, 32); pages != map->pages_) {
        return corrupt(fmt::format("it records {} bitmap pages but {} chunks need {}", pages,
                                   map->chunks_, map->pages_));
    }
    auto bits = file.read(kPageSize, map->pages_ * kPageSize);
    if (!bits) return std::move(bits).error();
    if (bits->size() != map->pages_ * kPageSize) {
        return corrupt(fmt::format("its bitmap is {} bytes long but should be {} (truncated)",
                                   bits->size(), map->pages_ * kPageSize));
    }
    std::span<const std::byte> b(*bits);
    for (std::size_t w = 0; w < map->words_.size(); ++w) map->words_[w] = get_u64(b, w * 8);
    // Bits past the last chunk are meaningless; keep them clear so that scans can ignore them.
    const std::uint64_t used_in_last = map->chunks_ % 64;
    const std::size_t last_word = static_cast<std::size_t>((map->chunks_ - 1) / 64);
    if (used_in_last != 0) map->words_[last_word] &= (std::uint64_t{1} << used_in_last) - 1;
    std::fill(map->words_.begin() + static_cast<std::ptrdiff_t>(last_word) + 1, map->words_.end(), 0);
    for (std::uint64_t w : map->words_) map->dirty_chunks_ += static_cast<std::uint64_t>(std::popcount(w));
    return map;
}

// ----- bits ----------------------------------------------------------------------------------

bool DirtyMap::test_bit(std::uint64_t chunk) const {
    return (words_[chunk / 64] >> (chunk % 64) & 1) != 0;
}

bool DirtyMap::set_bit(std::uint64_t chunk) {
    std::uint64_t& w = words_[chunk / 64];
    const std::uint64_t bit = std::uint64_t{1} << (chunk % 64);
    if ((w & bit) != 0) return false;
    w |= bit;
    ++dirty_chunks_;
    return true;
}

bool DirtyMap::clear_bit(std::uint64_t chunk) {
    std::uint64_t& w = words_[chunk / 64];
    const std::uint64_t bit = std::uint64_t{1} << (chunk % 64);
    if ((w & bit) == 0) return false;
    w &= ~bit;
    --dirty_chunks_;
    return true;
}

void DirtyMap::note_changed(std::uint64_t page) {
    if (page_pending_[page]) return;
    page_pending_[page] = true;
    pending_pages_.push_back(page);
}

// ----- marking -------------------------------------------------------------------------------

bool DirtyMap::mark(std::uint64_t offset, std::uint64_t length, DoneCallback done) {
    if (offset > export_size_ || length > export_size_ - offset) {
        vmha::internal_error(fmt::format("dirty map \"{}\": marking {} bytes at offset {} beyond "
                                         "the export's {} bytes",
                                         file_.describe(), length, offset, export_size_));
    }
    if (failure_) {
        done(*failure_);
        return false;
    }
    if (length == 0) {
        done({});
        return false;
    }
    bool wait_next = false;
    bool wait_in_flight = false;
    const std::uint64_t last = (offset + length - 1) / chunk_size_;
    for (std::uint64_t c = offset / chunk_size_; c <= last; ++c) {
        const std::uint64_t page = c / kBitsPerPage;
        if (set_bit(c)) {
            note_changed(page);
            wait_next = true;
        } else if (page_pending_[page]) {
            wait_next = true;  // set, but its page has not been written since
        } else if (page_in_flight_[page]) {
            wait_in_flight = true;
        }
    }
    return wait_or_done(wait_next, wait_in_flight, std::move(done));
}

bool DirtyMap::mark_all(DoneCallback done) {
    if (failure_) {
        done(*failure_);
        return false;
    }
    bool wait_in_flight = false;
    for (std::uint64_t c = 0; c < chunks_; c += 64) {
        const std::uint64_t n = std::min<std::uint64_t>(64, chunks_ - c);
        const std::uint64_t want = n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1;
        std::uint64_t& w = words_[c / 64];
        const std::uint64_t page = c / kBitsPerPage;
        if (w != want) {
            dirty_chunks_ += static_cast<std::uint64_t>(std::popcount(want & ~w));
            w = want;
            note_changed(page);
        } else if (page_in_flight_[page] && !page_pending_[page]) {
            wait_in_flight = true;
        }
    }
    return wait_or_done(!pending_pages_.empty(), wait_in_flight, std::move(done));
}

void DirtyMap::clear(std::uint64_t offset, std::uint64_t length) {
    if (offset > export_size_ || length > export_size_ - offset) {
        vmha::internal_error(fmt::format("dirty map \"{}\": clearing {} bytes at offset {} beyond "
                                         "the export's {} bytes",
                                         file_.describe(), length, offset, export_size_));
    }
    const std::uint64_t first = offset / chunk_size_ + (offset % chunk_size_ != 0 ? 1 : 0);
    const std::uint64_t end =
        offset + length == export_size_ ? chunks_ : (offset + length) / chunk_size_;
    for (std::uint64_t c = first; c < end; ++c) {
        if (clear_bit(c)) note_changed(c / kBitsPerPage);
    }
}

bool DirtyMap::flush(DoneCallback done) {
    if (failure_) {
        done(*failure_);
        return false;
    }
    return wait_or_done(!pending_pages_.empty() || header_pending_, in_flight_, std::move(done));
}

bool DirtyMap::wait_or_done(bool wait_next, bool wait_in_flight, DoneCallback done) {
    if (wait_next) {
        next_waiters_.push_back(std::move(done));
        start_commit();
        return true;
    }
    if (wait_in_flight) {
        in_flight_waiters_.push_back(std::move(done));
        return true;
    }
    done({});
    return false;
}

// ----- group commit --------------------------------------------------------------------------

void DirtyMap::start_commit() {
    if (in_flight_ || failure_ || (pending_pages_.empty() && !header_pending_)) return;
    std::vector<Page> pages;
    pages.reserve(pending_pages_.size() + 1);
    if (header_pending_) pages.push_back(header_page());
    std::sort(pending_pages_.begin(), pending_pages_.end());
    for (std::uint64_t p : pending_pages_) {
        pages.push_back(bitmap_page(p));
        page_pending_[p] = false;
        page_in_flight_[p] = true;
    }
    header_pending_ = false;
    in_flight_pages_ = std::move(pending_pages_);
    pending_pages_.clear();
    in_flight_waiters_ = std::move(next_waiters_);
    next_waiters_.clear();
    in_flight_ = true;
    file_.write_pages(std::move(pages), [this](vmha::Status st) { on_commit_done(std::move(st)); });
}

void DirtyMap::on_commit_done(vmha::Status status) {
    in_flight_ = false;
    for (std::uint64_t p : in_flight_pages_) page_in_flight_[p] = false;
    in_flight_pages_.clear();
    std::vector<DoneCallback> released = std::move(in_flight_waiters_);
    in_flight_waiters_.clear();
    if (!status) {
        failure_ = vmha::Error(status.error().code,
                               fmt::format("dirty map \"{}\" could not be made durable, so no "
                                           "further write can be acknowledged: {}",
                                           file_.describe(), status.error().message));
        std::vector<DoneCallback> next = std::move(next_waiters_);
        next_waiters_.clear();
        for (auto& w : released) w(*failure_);
        for (auto& w : next) w(*failure_);
        return;
    }
    start_commit();  // pages dirtied while this commit was in flight
    for (auto& w : released) w({});
}

Page DirtyMap::header_page() const {
    Page page{0, std::vector<std::byte>(kPageSize)};
    std::span<std::byte> h(page.bytes);
    put_u64(h, 0, kMagic);
    put_u32(h, 8, kVersion);
    put_u32(h, 12, 0);
    put_u32(h, 16, chunk_size_);
    put_u32(h, 20, 0);
    put_u64(h, 24, export_size_);
    put_u64(h, 32, pages_);
    put_u64(h, kHeaderChecksumAt, checksum(h.first(kHeaderChecksumAt)));
    return page;
}

Page DirtyMap::bitmap_page(std::uint64_t p) const {
    Page page{1 + p, std::vector<std::byte>(kPageSize)};
    std::span<std::byte> b(page.bytes);
    for (std::uint64_t i = 0; i < kWordsPerPage; ++i) put_u64(b, i * 8, words_[p * kWordsPerPage + i]);
    return page;
}

// ----- queries -------------------------------------------------------------------------------

bool DirtyMap::is_dirty(std::uint64_t offset) const {
    return offset < export_size_ && test_bit(offset / chunk_size_);
}

std::uint64_t DirtyMap::dirty_bytes() const {
    std::uint64_t bytes = dirty_chunks_ * chunk_size_;
    if (test_bit(chunks_ - 1)) bytes -= chunks_ * chunk_size_ - export_size_;
    return bytes;
}

std::uint64_t DirtyMap::find_set(std::uint64_t from) const {
    if (from >= chunks_) return chunks_;
    std::size_t w = static_cast<std::size_t>(from / 64);
    std::uint64_t word = words_[w] & (~std::uint64_t{0} << (from % 64));
    while (word == 0) {
        if (++w >= words_.size()) return chunks_;
        word = words_[w];
    }
    return std::min<std::uint64_t>(chunks_, w * 64 + static_cast<std::uint64_t>(std::countr_zero(word)));
}

std::uint64_t DirtyMap::find_clear(std::uint64_t from, std::uint64_t limit) const {
    if (from >= limit) return limit;
    std::size_t w = static_cast<std::size_t>(from / 64);
    std::uint64_t word = ~words_[w] & (~std::uint64_t{0} << (from % 64));
    while (word == 0) {
        if (++w >= words_.size() || w * 64 >= limit) return limit;
        word = ~words_[w];
    }
    return std::min<std::uint64_t>(limit, w * 64 + static_cast<std::uint64_t>(std::countr_zero(word)));
}

std::optional<ByteRange> DirtyMap::next_dirty_range(std::uint64_t from, std::uint64_t max_length) const {
    if (from >= export_size_) return std::nullopt;
    const std::uint64_t start = find_set(from / chunk_size_);
    if (start >= chunks_) return std::nullopt;
    std::uint64_t limit = chunks_;
    if (max_length != 0) {
        limit = std::min(chunks_, start + std::max<std::uint64_t>(1, max_length / chunk_size_));
    }
    const std::uint64_t end = find_clear(start + 1, limit);
    const std::uint64_t offset = start * chunk_size_;
    return ByteRange{offset, std::min(end * chunk_size_, export_size_) - offset};
}

std::vector<ByteRange> DirtyMap::dirty_ranges() const {
    std::vector<ByteRange> out;
    std::uint64_t from = 0;
    while (auto r = next_dirty_range(from)) {
        out.push_back(*r);
        from = r->end();
    }
    return out;
}

}  // namespace imagesync::meta
