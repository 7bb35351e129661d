#include "meta/meta_store.h"

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "meta/detail/bytes.h"

namespace imagesync::meta {
namespace {

using namespace detail;

const std::uint64_t kMagic = magic("vmhameta");
constexpr std::uint8_t kFlagWasPrimary = 1;
constexpr std::uint8_t kFlagCrashedPrimary = 2;
constexpr std::size_t kChecksumAt = 88;

vmha::Error errno_error(int e, std::string what) {
    return vmha::Error(vmha::errc_from_errno(e),
                       fmt::format("{}: {}", what, std::system_category().message(e)));
}

vmha::Error corrupt(std::string_view name, std::string why) {
    return vmha::Error(vmha::errc::unreadable,
                       fmt::format("metadata file \"{}\" is corrupt: {}", name, why));
}

vmha::Status write_all(int fd, std::span<const std::byte> bytes, const std::string& name) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return errno_error(n < 0 ? errno : EIO, fmt::format("cannot write \"{}\"", name));
        done += static_cast<std::size_t>(n);
    }
    return {};
}

}  // namespace

std::vector<std::byte> encode_node_meta(const NodeMeta& m) {
    std::vector<std::byte> out(kNodeMetaSize);
    std::span<std::byte> b(out);
    put_u64(b, 0, kMagic);
    put_u32(b, 8, kNodeMetaVersion);
    put_u32(b, 12, 0);
    put_u32(b, 16, static_cast<std::uint32_t>(kNodeMetaSize));
    put_u32(b, 20, static_cast<std::uint32_t>(kHistorySize));
    put_u64(b, 24, m.gen.current);
    put_u64(b, 32, m.gen.bitmap);
    for (std::size_t i = 0; i < kHistorySize; ++i) put_u64(b, 40 + 8 * i, m.gen.history[i]);
    put_u8(b, 72, static_cast<std::uint8_t>(m.data_state));
    std::uint8_t flags = 0;
    if (m.was_primary) flags |= kFlagWasPrimary;
    if (m.crashed_primary) flags |= kFlagCrashedPrimary;
    put_u8(b, 73, flags);
    put_u8(b, 74, static_cast<std::uint8_t>(m.resync));
    put_u64(b, 80, m.resync_cursor);
    put_u64(b, kChecksumAt, checksum(b.first(kChecksumAt)));
    return out;
}

vmha::Result<NodeMeta> decode_node_meta(std::span<const std::byte> b, std::string_view name) {
    if (b.size() < 16) {
        return corrupt(name, fmt::format("it is {} bytes long, too short for a header", b.size()));
    }
    if (get_u64(b, 0) != kMagic) {
        return corrupt(name, "it does not start with the magic \"vmhameta\"");
    }
    const std::uint32_t version = get_u32(b, 8);
    if (version > kNodeMetaVersion) {
        return vmha::Error(vmha::errc::version_mismatch,
                           fmt::format("metadata file \"{}\" has format version {}, newer than the "
                                       "version {} this imagesync understands; refusing to use or "
                                       "replace it",
                                       name, version, kNodeMetaVersion));
    }
    if (version == 0) return corrupt(name, "its format version is 0");
    if (b.size() != kNodeMetaSize || get_u32(b, 16) != kNodeMetaSize) {
        return corrupt(name, fmt::format("it is {} bytes long and records a length of {}, but a "
                                         "version-{} record is {} bytes (torn or truncated)",
                                         b.size(), get_u32(b, 16), version, kNodeMetaSize));
    }
    const std::uint64_t stored = get_u64(b, kChecksumAt);
    const std::uint64_t actual = checksum(b.first(kChecksumAt));
    if (stored != actual) {
        return corrupt(name, fmt::format("its checksum is {:016x} but its contents hash to {:016x}",
                                         stored, actual));
    }
    if (std::uint32_t flags = get_u32(b, 12); flags != 0) {
        return vmha::Error(vmha::errc::version_mismatch,
                           fmt::format("metadata file \"{}\" sets flags {:#x} that this imagesync "
                                       "does not know; refusing to use or replace it",
                                       name, flags));
    }
    if (std::uint32_t n = get_u32(b, 20); n != kHistorySize) {
        return corrupt(name, fmt::format("it records {} history entries, not {}", n, kHistorySize));
    }
    NodeMeta m;
    m.gen.current = get_u64(b, 24);
    m.gen.bitmap = get_u64(b, 32);
    for (std::size_t i = 0; i < kHistorySize; ++i) m.gen.history[i] = get_u64(b, 40 + 8 * i);
    const std::uint8_t state = get_u8(b, 72);
    if (state > static_cast<std::uint8_t>(DataState::Outdated)) {
        return corrupt(name, fmt::format("its data state {} is not a known state", state));
    }
    m.data_state = static_cast<DataState>(state);
    const std::uint8_t flags = get_u8(b, 73);
    if ((flags & ~(kFlagWasPrimary | kFlagCrashedPrimary)) != 0) {
        return corrupt(name, fmt::format("its node flags {:#x} include unknown bits", flags));
    }
    m.was_primary = (flags & kFlagWasPrimary) != 0;
    m.crashed_primary = (flags & kFlagCrashedPrimary) != 0;
    const std::uint8_t resync = get_u8(b, 74);
    if (resync > static_cast<std::uint8_t>(ResyncKind::full)) {
        return corrupt(name, fmt::format("its resync kind {} is not a known kind", resync));
    }
    m.resync = static_cast<ResyncKind>(resync);
    m.resync_cursor = get_u64(b, 80);
    return m;
}

MetaStore::MetaStore(std::filesystem::path meta_dir)
    : dir_(std::move(meta_dir)), path_(dir_ / "node.meta"), tmp_path_(dir_ / "node.meta.tmp") {}

vmha::Result<std::optional<NodeMeta>> MetaStore::load() const {
    const std::string name = path_.string();
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            // A missing record means a new node; a missing directory means a wrong path.
            std::error_code ec;
            if (!std::filesystem::is_directory(dir_, ec)) {
                return vmha::Error(vmha::errc::not_found,
                                   fmt::format("metadata directory \"{}\" does not exist or is not "
                                               "a directory",
                                               dir_.string()));
            }
            return std::optional<NodeMeta>{};
        }
        return errno_error(errno, fmt::format("cannot open metadata file \"{}\"", name));
    }
    // Read one byte more than a record, so that a longer file is seen as such.
    std::vector<std::byte> bytes(kNodeMetaSize + 1);
    std::size_t got = 0;
    while (got < bytes.size()) {
        ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return errno_error(e, fmt::format("cannot read metadata file \"{}\"", name));
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    bytes.resize(got);
    auto decoded = decode_node_meta(bytes, name);
    if (!decoded) return std::move(decoded).error();
    return std::optional<NodeMeta>(std::move(*decoded));
}

vmha::Status MetaStore::save(const NodeMeta& meta) {
    // Never replace a file we cannot read: it may be a newer format, or the only evidence.
    if (auto existing = load(); !existing) {
        const vmha::Error& e = existing.error();
        if (e.is(vmha::errc::not_found)) return e;  // no directory: nothing to replace
        return vmha::Error(e.code, fmt::format("refusing to replace it: {}; move it aside to "
                                               "start this node's metadata over",
                                               e.message));
    }
    const std::vector<std::byte> bytes = encode_node_meta(meta);
    const std::string tmp = tmp_path_.string();
    int fd = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return errno_error(errno, fmt::format("cannot create \"{}\"", tmp));
    if (auto st = write_all(fd, bytes, tmp); !st) {
        ::close(fd);
        return st;
    }
    if (::fsync(fd) != 0) {
        int e = errno;
        ::close(fd);
        return errno_error(e, fmt::format("cannot fsync \"{}\"", tmp));
    }
    if (::close(fd) != 0) return errno_error(errno, fmt::format("cannot close \"{}\"", tmp));
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
        return errno_error(errno, fmt::format("cannot rename \"{}\" to \"{}\"", tmp, path_.string()));
    }
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return errno_error(errno, fmt::format("cannot open directory \"{}\"", dir_.string()));
    int rc = ::fsync(dfd);
    int e = errno;
    ::close(dfd);
    if (rc != 0) return errno_error(e, fmt::format("cannot fsync directory \"{}\"", dir_.string()));
    return {};
}

}  // namespace imagesync::meta
