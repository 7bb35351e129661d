// A receive buffer in front of a stream socket: read_exact() fills its output from the buffer
// and refills the buffer with one read_some of up to `capacity` bytes, so one system call
// brings many small messages (NBD requests, replication frames). A read at least as large as
// the buffer goes straight into its destination. try_take() is the synchronous fast path: it
// succeeds without suspending when the buffer already holds the whole message.
//
// Owned by the coroutine that reads the socket; not thread-safe.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "asio.h"

namespace imagesync {

template <typename Socket>
class BufferedReader {
public:
    explicit BufferedReader(Socket& socket, std::size_t capacity = 256 * 1024)
        : socket_(socket), buffer_(new std::byte[capacity]), capacity_(capacity) {}

    // Copies `out.size()` buffered bytes into `out` and returns true, or returns false (and
    // takes nothing) when fewer are buffered.
    bool try_take(std::span<std::byte> out) {
        if (end_ - begin_ < out.size()) return false;
        if (!out.empty()) std::memcpy(out.data(), buffer_.get() + begin_, out.size());
        begin_ += out.size();
        return true;
    }

    std::size_t buffered() const { return end_ - begin_; }

    asio::awaitable<boost::system::error_code> read_exact(std::span<std::byte> out) {
        std::size_t done = 0;
        while (done < out.size()) {
            if (begin_ < end_) {
                const std::size_t n = std::min(out.size() - done, end_ - begin_);
                std::memcpy(out.data() + done, buffer_.get() + begin_, n);
                begin_ += n;
                done += n;
                continue;
            }
            boost::system::error_code ec;
            if (out.size() - done >= capacity_) {
                co_await asio::async_read(socket_,
                                          asio::buffer(out.data() + done, out.size() - done),
                                          asio::redirect_error(asio::use_awaitable, ec));
                co_return ec;
            }
            begin_ = 0;
            end_ = co_await socket_.async_read_some(asio::buffer(buffer_.get(), capacity_),
                                                    asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                end_ = 0;
                co_return ec;
            }
        }
        co_return boost::system::error_code{};
    }

private:
    Socket& socket_;
    std::unique_ptr<std::byte[]> buffer_;  // not zero-filled: only bytes read are used
    std::size_t capacity_;
    std::size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
    std::size_t end_ = 0;
};

}  // namespace imagesync
