// Payload buffers for the data path: allocated without zero-filling (every byte is written by
// a socket read or a file read before anything reads it) and recycled, so a steady stream of
// requests of similar sizes allocates nothing.
//
// Buffers come in power-of-two capacities from 4 KiB to 4 MiB; each size class keeps up to
// kMaxCachedPerClass returned buffers. Larger buffers are allocated to size and freed on return.
//
// The memory is page-aligned (kBufferAlign) and whole pages (a capacity is a multiple of
// kBufferAlign), so that a payload of whole pages can be written to the image with O_DIRECT
// ("Direct writes" in image_file.h), which needs an aligned buffer, and so that a buffer's pages
// are its own: unshare_pages() may swap them without touching other memory.
//
// Owned by one event loop thread; not thread-safe. A Buffer may outlive its pool only if it is
// never given back.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include <sys/mman.h>

namespace imagesync {

inline constexpr std::size_t kBufferAlign = 4096;

inline constexpr std::size_t round_up_to_pages(std::size_t bytes) {
    return (bytes + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
}

// Gives the pages under `data` (which must start a buffer of this pool, page-aligned and of
// whole pages) fresh, zero-filled ones: whoever still holds the old pages (a pipe or a socket
// that a zero-copy send lent them to, replication/send_thread.h) keeps reading the bytes it
// was given, and what this process writes there next goes to new pages. The range is rounded
// out to whole pages, which the buffer owns. Returns false if the kernel refused (memory
// locked with mlock, say).
inline bool unshare_pages(std::span<const std::byte> data) noexcept {
    if (data.empty()) return true;
    const auto begin = reinterpret_cast<std::uintptr_t>(data.data());  // NOLINT: an address
    const std::uintptr_t first = begin / kBufferAlign * kBufferAlign;
    const std::uintptr_t end = round_up_to_pages(begin + data.size());
    return ::madvise(reinterpret_cast<void*>(first), end - first,  // NOLINT: an address
                     MADV_DONTNEED) == 0;
}

struct BufferFree {
    void operator()(std::byte* p) const noexcept {
        ::operator delete[](p, std::align_val_t{kBufferAlign});
    }
};
// Payload memory: from allocate_buffer, freed by BufferFree.
using BufferMemory = std::unique_ptr<std::byte[], BufferFree>;

inline BufferMemory allocate_buffer(std::size_t bytes) {
    return BufferMemory(
        static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{kBufferAlign})));
}

class Buffer {
  public:
    Buffer() = default;
    Buffer(BufferMemory data, std::size_t size, std::size_t capacity)
        : data_(std::move(data)), size_(size), capacity_(capacity) {}

    std::byte* data() { return data_.get(); }
    const std::byte* data() const { return data_.get(); }
    std::size_t size() const { return size_; }
    std::size_t capacity() const { return capacity_; }
    bool empty() const { return size_ == 0; }
    std::span<std::byte> span() { return {data_.get(), size_}; }
    std::span<const std::byte> span() const { return {data_.get(), size_}; }
    // Gives up ownership of the memory (capacity() bytes, from allocate_buffer: adopt it back
    // with BufferMemory(p)).
    std::byte* release() {
        size_ = 0;
        return data_.release();
    }

  private:
    friend class BufferPool;
    BufferMemory data_;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

class BufferPool {
  public:
    static constexpr std::size_t kMinClassBytes = 4096;
    static constexpr std::size_t kMaxClassBytes = 4u << 20;
    static constexpr std::size_t kMaxCachedPerClass = 64;

    // Room for every cached buffer is reserved up front, so give() never allocates (it may run
    // in a deleter).
    BufferPool() {
        for (auto& c : classes_) c.reserve(kMaxCachedPerClass);
    }

    // A buffer of `size` bytes (uninitialised); an empty Buffer for size 0.
    Buffer take(std::size_t size) {
        if (size == 0) return {};
        if (size > kMaxClassBytes) {
            const std::size_t capacity = round_up_to_pages(size);
            return Buffer(allocate_buffer(capacity), size, capacity);
        }
        const std::size_t capacity = std::bit_ceil(std::max(size, kMinClassBytes));
        auto& cached = classes_[class_of(capacity)];
        if (!cached.empty()) {
            Buffer b = std::move(cached.back());
            cached.pop_back();
            b.size_ = size;
            return b;
        }
        ++allocations_;
        return Buffer(allocate_buffer(capacity), size, capacity);
    }

    // Takes a buffer back for reuse (or frees it).
    void give(Buffer buffer) noexcept {
        if (buffer.capacity_ < kMinClassBytes || buffer.capacity_ > kMaxClassBytes ||
            !std::has_single_bit(buffer.capacity_)) {
            return;
        }
        auto& cached = classes_[class_of(buffer.capacity_)];
        if (cached.size() < kMaxCachedPerClass) cached.push_back(std::move(buffer));
    }

    // Buffers allocated from the heap so far (not counting those above the largest class).
    std::size_t allocations() const { return allocations_; }
    std::size_t cached() const {
        std::size_t n = 0;
        for (const auto& c : classes_) n += c.size();
        return n;
    }

  private:
    static constexpr std::size_t kClasses =
        std::countr_zero(kMaxClassBytes) - std::countr_zero(kMinClassBytes) + 1;
    static std::size_t class_of(std::size_t capacity) {
        return static_cast<std::size_t>(std::countr_zero(capacity) -
                                        std::countr_zero(kMinClassBytes));
    }

    std::array<std::vector<Buffer>, kClasses> classes_;
    std::size_t allocations_ = 0;
};

}  // namespace imagesync
