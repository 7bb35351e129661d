// A receive buffer in front of a stream socket: read_exact() fills its output from the buffer,
// then reads the rest with one scatter read (readv) into the output first and the buffer after
// it, so one system call brings many small messages (NBD requests, replication frames) and a
// large payload lands in its destination without a copy through the buffer (only the part
// that came in behind its header is copied). try_take() is the synchronous fast path: it
// succeeds without suspending when the buffer already holds the whole message.
//
// Around a large message (kLargeMessage or more: a 1 MiB write, say), a read takes at most
// kTailAfterLarge bytes past its destination: enough for the next header, not most of the next
// payload. A full buffer's worth read behind a header would be copied again into that payload
// (up to 256 KiB of every 1 MiB write; that memmove was 2 % of a replicating pair's CPU
// samples at 1M QD8). Small messages keep the whole buffer, so a stream of them still takes one
// read for many.
//
// Owned by the coroutine that reads the socket; not thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "asio.h"

namespace imagesync {

template <typename Socket>
class BufferedReader {
public:
    static constexpr std::size_t kLargeMessage = 64 * 1024;
    static constexpr std::size_t kTailAfterLarge = 4096;

    explicit BufferedReader(Socket& socket, std::size_t capacity = 256 * 1024)
        : socket_(socket), buffer_(new std::byte[capacity]), capacity_(capacity) {}

    // Copies `out.size()` buffered bytes into `out` and returns true, or returns false (and
    // takes nothing) when fewer are buffered.
    bool try_take(std::span<std::byte> out) {
        if (end_ - begin_ < out.size()) return false;
        if (!out.empty()) std::memcpy(out.data(), buffer_.get() + begin_, out.size());
        begin_ += out.size();
        copied_ += out.size();
        last_large_ = out.size() >= kLargeMessage;
        return true;
    }

    std::size_t buffered() const { return end_ - begin_; }
    // Bytes copied from the buffer into destinations so far (the rest were read into place).
    std::uint64_t copied() const { return copied_; }

    asio::awaitable<boost::system::error_code> read_exact(std::span<std::byte> out) {
        // Past a large message, or the header behind one: read little beyond it.
        const std::size_t tail = out.size() >= kLargeMessage || last_large_
            ? std::min(capacity_, kTailAfterLarge)
            : capacity_;
        std::size_t done = 0;
        while (done < out.size()) {
            if (begin_ < end_) {
                const std::size_t n = std::min(out.size() - done, end_ - begin_);
                std::memcpy(out.data() + done, buffer_.get() + begin_, n);
                begin_ += n;
                done += n;
                copied_ += n;
                continue;
            }
            boost::system::error_code ec;
            const std::size_t rest = out.size() - done;
            const std::array<asio::mutable_buffer, 2> into{
                asio::buffer(out.data() + done, rest), asio::buffer(buffer_.get(), tail)};
            begin_ = end_ = 0;
            const std::size_t n = co_await socket_.async_read_some(
                into, asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return ec;
            if (n <= rest) {
                done += n;
            } else {
                done = out.size();
                end_ = n - rest;
            }
        }
        last_large_ = out.size() >= kLargeMessage;
        co_return boost::system::error_code{};
    }

private:
    Socket& socket_;
    std::unique_ptr<std::byte[]> buffer_;  // not zero-filled: only bytes read are used
    std::size_t capacity_;
    std::size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
    std::size_t end_ = 0;
    std::uint64_t copied_ = 0;
    bool last_large_ = false;  // the last message taken was large: so may the next one be
};

}  // namespace imagesync
