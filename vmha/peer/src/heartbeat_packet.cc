#include "heartbeat_packet.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fmt/format.h>

namespace vmha::peer::detail {

namespace {

void put_be(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void put_name(std::vector<std::uint8_t>& out, const std::string& name) {
    if (name.size() > 255) internal_error(fmt::format("heartbeat name \"{}\" is over 255 bytes", name));
    out.push_back(static_cast<std::uint8_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
}

std::array<std::uint8_t, heartbeat_mac_size> mac(std::span<const std::uint8_t> data, const HeartbeatKey& key) {
    std::array<std::uint8_t, heartbeat_mac_size> out{};
    unsigned int length = 0;
    if (HMAC(EVP_sha256(), key.key.data(), static_cast<int>(key.key.size()), data.data(), data.size(),
             out.data(), &length) == nullptr ||
        length != out.size()) {
        internal_error("HMAC-SHA256 failed");
    }
    return out;
}

// A bounds-checked reader over the packet.
struct Reader {
    std::span<const std::uint8_t> in;
    std::size_t at = 0;
    bool ok = true;

    std::uint64_t be(std::size_t bytes) {
        if (!ok || in.size() - at < bytes) {
            ok = false;
            return 0;
        }
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < bytes; ++i) v = v << 8 | in[at + i];
        at += bytes;
        return v;
    }
    std::string name() {
        const std::size_t n = be(1);
        if (!ok || in.size() - at < n) {
            ok = false;
            return {};
        }
        std::string s(in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(at + n));
        at += n;
        return s;
    }
};

}  // namespace

std::vector<std::uint8_t> seal_heartbeat(const HeartbeatFields& fields, const HeartbeatKey& key) {
    std::vector<std::uint8_t> out;
    out.reserve(max_heartbeat_size);
    put_be(out, heartbeat_magic, 4);
    put_be(out, heartbeat_version, 1);
    put_be(out, 0, 1);
    put_be(out, 0, 2);
    put_be(out, fields.session, 8);
    put_be(out, fields.sequence, 8);
    put_name(out, fields.module);
    put_name(out, fields.sender);
    put_name(out, fields.path);
    const auto tag = mac(out, key);
    out.insert(out.end(), tag.begin(), tag.end());
    return out;
}

Status open_heartbeat(std::span<const std::uint8_t> packet, const HeartbeatKey& key, const std::string& module,
                      const std::string& sender, const std::string& path, std::uint64_t& last_sequence) {
    if (packet.size() < 24 + 3 + heartbeat_mac_size || packet.size() > max_heartbeat_size) {
        return Error(errc::protocol_error, fmt::format("a heartbeat of {} bytes has an impossible size", packet.size()));
    }
    const std::size_t signed_size = packet.size() - heartbeat_mac_size;
    Reader r{packet.first(signed_size)};
    const auto magic = r.be(4);
    const auto version = r.be(1);
    const auto flags = r.be(1);
    const auto reserved = r.be(2);
    const auto session = r.be(8);
    const auto sequence = r.be(8);
    const std::string got_module = r.name();
    const std::string got_sender = r.name();
    const std::string got_path = r.name();
    if (!r.ok || r.at != signed_size) return Error(errc::protocol_error, "a heartbeat's names do not fit its size");
    if (magic != heartbeat_magic) return Error(errc::protocol_error, fmt::format("bad heartbeat magic 0x{:08x}", magic));
    if (version != heartbeat_version) {
        return Error(errc::version_mismatch, fmt::format("heartbeat version {} is not supported", version));
    }
    if (flags != 0 || reserved != 0) return Error(errc::protocol_error, "reserved heartbeat fields are not zero");
    if (got_module != module || got_sender != sender || got_path != path) {
        return Error(errc::peer_mismatch,
                     fmt::format("heartbeat for module \"{}\" from \"{}\" on path \"{}\" is not for this socket "
                                 "(expected module \"{}\" from \"{}\" on path \"{}\")",
                                 got_module, got_sender, got_path, module, sender, path));
    }
    if (session != key.session) {
        return Error(errc::peer_mismatch,
                     fmt::format("heartbeat session {:016x} is not the current one ({:016x})", session, key.session));
    }
    const auto expected = mac(packet.first(signed_size), key);
    if (CRYPTO_memcmp(expected.data(), packet.data() + signed_size, heartbeat_mac_size) != 0) {
        return Error(errc::protocol_error, "heartbeat HMAC does not verify");
    }
    if (sequence <= last_sequence) {
        return Error(errc::protocol_error,
                     fmt::format("replayed heartbeat sequence {} (last accepted {})", sequence, last_sequence));
    }
    last_sequence = sequence;
    return {};
}

}  // namespace vmha::peer::detail
