// The dirty map: which chunks of an export were written while the peer could not receive them.
//
// One bit per chunk (default 64 KiB, a power of two from 4 KiB to 64 MiB), kept in memory
// (1 TiB at 64 KiB = 2 MiB of bits) and in a metadata file:
//   page 0      header: magic "vmhadirt", version u32 (1), flags u32 (reserved, 0),
//               chunk size u32, zero u32, export size u64, bitmap pages u64, XXH3-64 of 0..39
//   page 1+i    bits [i*32768, (i+1)*32768): chunk c is bit c%8 of byte c/8 of the bitmap
//
// The rule it serves: a write is acknowledged only once its chunks' bits are durable. mark()
// sets bits in memory and either calls its callback at once (every touched bit was already
// durable) or queues it for a group commit: the bitmap pages dirtied since the last commit
// are written and made durable in one MetaFile::write_pages(), then every waiter of that commit
// is released. Marks arriving while a commit is in flight go to the next one. Bitmap pages
// carry no checksum on purpose: a torn page mixes old and new sectors, and both are safe
// (new bits only add chunks; a clear that did not land leaves a chunk dirty, to be resent).
//
// clear() (after the resync copied a range) and mark_all() (full resync) complete the API;
// next_dirty_range() walks dirty chunks in offset order, coalesced, for the resync.
//
// Failure is sticky: after a failed commit every waiting and later mark() fails with that
// error, because nothing written from then on could be acknowledged safely.
//
// Threading: owned by one event loop; not thread-safe. The map must outlive the MetaFile's
// pending writes (their callbacks refer to it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <vmha/error.h>

#include "meta/meta_file.h"

namespace imagesync::meta {

inline constexpr std::uint32_t kDefaultChunkSize = 64 * 1024;

class DirtyMap {
public:
    // A new, all-clean map for an export. Its header and every bitmap page are written at once;
    // flush() reports when that is durable.
    static vmha::Result<std::unique_ptr<DirtyMap>> create(MetaFile& file, std::uint64_t export_size,
                                                          std::uint32_t chunk_size = kDefaultChunkSize);
    // The map stored in `file`, which must have been made for this export size and chunk size.
    static vmha::Result<std::unique_ptr<DirtyMap>> load(MetaFile& file, std::uint64_t export_size,
                                                        std::uint32_t chunk_size = kDefaultChunkSize);

    DirtyMap(const DirtyMap&) = delete;
    DirtyMap& operator=(const DirtyMap&) = delete;

    // Marks [offset, offset+length) dirty. Returns false after calling `done` at once (every
    // touched bit already durable, or the map has failed); true when `done` will be called by a
    // group commit. A range beyond the export is a bug (internal_error).
    bool mark(std::uint64_t offset, std::uint64_t length, DoneCallback done);
    // Marks the whole export dirty (full resync); `done` as for mark().
    bool mark_all(DoneCallback done);
    // Clears the chunks lying wholly inside [offset, offset+length) (the export's end counts as
    // a chunk end). Call only once the resync target has made that range durable (its flush or
    // FUA completed) and no write touched it since the copy read it: a cleared bit is never
    // resent, even if the resync restarts. Made durable lazily, with the next commit or flush().
    void clear(std::uint64_t offset, std::uint64_t length);
    // Makes every in-memory change durable, including clears; `done` as for mark().
    bool flush(DoneCallback done);

    bool is_dirty(std::uint64_t offset) const;
    std::uint64_t dirty_chunks() const { return dirty_chunks_; }
    std::uint64_t dirty_bytes() const;
    // The first run of dirty chunks at or after the chunk holding `from`, coalesced, at most
    // `max_length` bytes long (0: unlimited, otherwise at least one chunk), clipped to the export.
    std::optional<ByteRange> next_dirty_range(std::uint64_t from, std::uint64_t max_length = 0) const;
    std::vector<ByteRange> dirty_ranges() const;

    std::uint64_t export_size() const { return export_size_; }
    std::uint32_t chunk_size() const { return chunk_size_; }
    std::uint64_t chunks() const { return chunks_; }
    // True while a commit is being written.
    bool committing() const { return in_flight_; }
    // The error that failed the map, or nullptr.
    const vmha::Error* failure() const { return failure_ ? &*failure_ : nullptr; }

private:
    DirtyMap(MetaFile& file, std::uint64_t export_size, std::uint32_t chunk_size);
    static vmha::Status check_geometry(const MetaFile& file, std::uint64_t export_size,
                                       std::uint32_t chunk_size);

    bool test_bit(std::uint64_t chunk) const;
    bool set_bit(std::uint64_t chunk);    // true if it was clear
    bool clear_bit(std::uint64_t chunk);  // true if it was set
    void note_changed(std::uint64_t page);
    bool wait_or_done(bool wait_next, bool wait_in_flight, DoneCallback done);
    void start_commit();
    void on_commit_done(vmha::Status status);
    Page header_page() const;
    Page bitmap_page(std::uint64_t page) const;
    std::uint64_t find_set(std::uint64_t from_chunk) const;
    std::uint64_t find_clear(std::uint64_t from_chunk, std::uint64_t limit) const;

    MetaFile& file_;
    std::uint64_t export_size_;
    std::uint32_t chunk_size_;
    std::uint64_t chunks_;
    std::uint64_t pages_;
    std::vector<std::uint64_t> words_;  // pages_ * 512 words
    std::uint64_t dirty_chunks_ = 0;

    // Group commit state, per bitmap page: changed since the last commit started / being written.
    std::vector<bool> page_pending_;
    std::vector<bool> page_in_flight_;
    std::vector<std::uint64_t> pending_pages_;
    std::vector<std::uint64_t> in_flight_pages_;
    bool header_pending_ = false;
    bool in_flight_ = false;
    std::vector<DoneCallback> next_waiters_;
    std::vector<DoneCallback> in_flight_waiters_;
    std::optional<vmha::Error> failure_;
};

}  // namespace imagesync::meta
