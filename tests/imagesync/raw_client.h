// A deliberately simple NBD client on a raw socket, for sending exactly the bytes a test
// wants (including malformed ones). It encodes on its own instead of reusing imagesync's codec,
// so a codec bug cannot hide itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"

namespace imagesync_test {

using Bytes = std::vector<unsigned char>;

inline void be16(Bytes& b, std::uint16_t v) {
    b.push_back(static_cast<unsigned char>(v >> 8));
    b.push_back(static_cast<unsigned char>(v));
}
inline void be32(Bytes& b, std::uint32_t v) {
    be16(b, static_cast<std::uint16_t>(v >> 16));
    be16(b, static_cast<std::uint16_t>(v));
}
inline void be64(Bytes& b, std::uint64_t v) {
    be32(b, static_cast<std::uint32_t>(v >> 32));
    be32(b, static_cast<std::uint32_t>(v));
}
inline std::uint64_t from_be(const Bytes& b, std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | b[at + i];
    return v;
}

constexpr std::uint64_t kIHaveOpt = 0x49484156454F5054ULL;
constexpr std::uint32_t kRequestMagic = 0x25609513;
constexpr std::uint32_t kSimpleReplyMagic = 0x67446698;
constexpr std::uint32_t kStructuredReplyMagic = 0x668e33ef;

enum : std::uint16_t { kRead = 0, kWrite = 1, kDisc = 2, kFlush = 3, kTrim = 4, kZeroes = 6 };

class RawClient {
  public:
    explicit RawClient(const fs::path& socket) : fd_(connect_unix(socket)) {}
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;
    ~RawClient() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool connected() const { return fd_ >= 0; }

    bool send(const Bytes& b) {
        std::size_t done = 0;
        while (done < b.size()) {
            const ssize_t n = ::send(fd_, b.data() + done, b.size() - done, MSG_NOSIGNAL);
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }

    // Exactly n bytes, or nullopt on end of file, error or a 10 s deadline.
    std::optional<Bytes> recv(std::size_t n) {
        Bytes b(n);
        std::size_t done = 0;
        while (done < n) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 10000) <= 0) return std::nullopt;
            const ssize_t r = ::recv(fd_, b.data() + done, n - done, 0);
            if (r <= 0) return std::nullopt;
            done += static_cast<std::size_t>(r);
        }
        return b;
    }

    // True when the server closed the connection (end of file within 10 s).
    bool closed_by_server() {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) return false;
        unsigned char c = 0;
        return ::recv(fd_, &c, 1, 0) == 0;
    }

    // Greeting and client flags.
    bool hello() {
        auto greeting = recv(18);
        if (!greeting || from_be(*greeting, 0, 8) != 0x4e42444d41474943ULL) return false;
        if (from_be(*greeting, 8, 8) != kIHaveOpt) return false;
        if (from_be(*greeting, 16, 2) != 3) return false;
        Bytes client_flags;
        be32(client_flags, 3);
        return send(client_flags);
    }

    bool option(std::uint32_t opt, const Bytes& data) {
        Bytes b;
        be64(b, kIHaveOpt);
        be32(b, opt);
        be32(b, static_cast<std::uint32_t>(data.size()));
        b.insert(b.end(), data.begin(), data.end());
        return send(b);
    }

    struct OptionReply {
        std::uint32_t option = 0;
        std::uint32_t type = 0;
        Bytes data;
    };
    std::optional<OptionReply> option_reply() {
        auto h = recv(20);
        if (!h || from_be(*h, 0, 8) != 0x0003e889045565a9ULL) return std::nullopt;
        OptionReply r;
        r.option = static_cast<std::uint32_t>(from_be(*h, 8, 4));
        r.type = static_cast<std::uint32_t>(from_be(*h, 12, 4));
        const auto len = static_cast<std::size_t>(from_be(*h, 16, 4));
        auto d = recv(len);
        if (!d) return std::nullopt;
        r.data = std::move(*d);
        return r;
    }

    // hello + (STRUCTURED_REPLY) + GO; returns the export size, or nullopt.
    std::optional<std::uint64_t> open(const std::string& export_name, bool structured) {
        if (!hello()) return std::nullopt;
        if (structured) {
            if (!option(8, {})) return std::nullopt;
            auto ack = option_reply();
            if (!ack || ack->type != 1) return std::nullopt;
        }
        Bytes go;
        be32(go, static_cast<std::uint32_t>(export_name.size()));
        go.insert(go.end(), export_name.begin(), export_name.end());
        be16(go, 0);
        if (!option(7, go)) return std::nullopt;
        std::optional<std::uint64_t> size;
        for (;;) {
            auto r = option_reply();
            if (!r) return std::nullopt;
            if (r->type == 1) return size;  // ACK
            if (r->type != 3) return std::nullopt;
            if (from_be(r->data, 0, 2) == 0) {
                size = from_be(r->data, 2, 8);
                flags = static_cast<std::uint16_t>(from_be(r->data, 10, 2));
            }
        }
    }

    bool request(std::uint16_t type, std::uint16_t cmd_flags, std::uint64_t cookie,
                 std::uint64_t offset, std::uint32_t length, const Bytes& payload = {},
                 std::uint32_t magic = kRequestMagic) {
        Bytes b;
        be32(b, magic);
        be16(b, cmd_flags);
        be16(b, type);
        be64(b, cookie);
        be64(b, offset);
        be32(b, length);
        b.insert(b.end(), payload.begin(), payload.end());
        return send(b);
    }

    struct SimpleReply {
        std::uint32_t error = 0;
        std::uint64_t cookie = 0;
    };
    std::optional<SimpleReply> simple_reply() {
        auto h = recv(16);
        if (!h || from_be(*h, 0, 4) != kSimpleReplyMagic) return std::nullopt;
        return SimpleReply{static_cast<std::uint32_t>(from_be(*h, 4, 4)), from_be(*h, 8, 8)};
    }

    struct Chunk {
        std::uint16_t flags = 0;
        std::uint16_t type = 0;
        std::uint64_t cookie = 0;
        Bytes payload;
    };
    std::optional<Chunk> chunk() {
        auto h = recv(20);
        if (!h || from_be(*h, 0, 4) != kStructuredReplyMagic) return std::nullopt;
        Chunk c;
        c.flags = static_cast<std::uint16_t>(from_be(*h, 4, 2));
        c.type = static_cast<std::uint16_t>(from_be(*h, 6, 2));
        c.cookie = from_be(*h, 8, 8);
        auto p = recv(static_cast<std::size_t>(from_be(*h, 16, 4)));
        if (!p) return std::nullopt;
        c.payload = std::move(*p);
        return c;
    }

    std::uint16_t flags = 0;  // transmission flags from GO

  private:
    int fd_ = -1;
};

}  // namespace imagesync_test
