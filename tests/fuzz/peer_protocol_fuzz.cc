// libFuzzer target: the replication protocol's frame decoder on arbitrary bytes, fed in
// arbitrary pieces. It must never crash, over-read or allocate from an unchecked length; a
// message it accepts must encode back to the bytes it came from.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "peer/peer_protocol.h"

using namespace imagesync::peer;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    // The first byte picks how the stream is split, as a socket might.
    const std::size_t piece = 1 + data[0] % 64;
    const auto* bytes = reinterpret_cast<const std::byte*>(data + 1);
    const std::size_t n = size - 1;
    FrameDecoder decoder;
    std::size_t at = 0;
    std::size_t frame_start = 0;
    while (at < n) {
        const std::size_t take = std::min(piece, n - at);
        decoder.feed(ByteView(bytes + at, take));
        at += take;
        while (true) {
            auto r = decoder.next();
            if (!r) return 0;  // refused: the connection would be closed
            if (!r->has_value()) break;
            const Message& m = **r;
            Bytes again;
            encode(m, again);
            // Re-encoding an accepted frame gives the same bytes (canonical encoding).
            if (frame_start + again.size() > n ||
                std::memcmp(again.data(), bytes + frame_start, again.size()) != 0) {
                __builtin_trap();
            }
            frame_start += again.size();
        }
    }
    return 0;
}
