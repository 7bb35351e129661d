#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include <vmha/error.h>

namespace vmha {
namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "vmha"; }
    std::string message(int value) const override {
        return std::string(errc_name(static_cast<errc>(value)));
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const Category category;
    return category;
}

std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

std::string_view errc_name(errc e) noexcept {
    switch (e) {
        case errc::invalid_argument: return "invalid_argument";
        case errc::invalid_config: return "invalid_config";
        case errc::unreadable: return "unreadable";
        case errc::not_found: return "not_found";
        case errc::already_exists: return "already_exists";
        case errc::io_error: return "io_error";
        case errc::no_space: return "no_space";
        case errc::read_only: return "read_only";
        case errc::permission_denied: return "permission_denied";
        case errc::timeout: return "timeout";
        case errc::connection_lost: return "connection_lost";
        case errc::protocol_error: return "protocol_error";
        case errc::version_mismatch: return "version_mismatch";
        case errc::peer_mismatch: return "peer_mismatch";
        case errc::not_up_to_date: return "not_up_to_date";
        case errc::split_brain: return "split_brain";
        case errc::unsupported: return "unsupported";
        case errc::busy: return "busy";
        case errc::shutting_down: return "shutting_down";
        case errc::hypervisor_error: return "hypervisor_error";
        case errc::internal: return "internal";
    }
    return "unknown";
}

errc errc_from_errno(int errno_value) noexcept {
    switch (errno_value) {
        case ENOENT: return errc::not_found;
        case EEXIST: return errc::already_exists;
        case ENOSPC:
        case EDQUOT:
        case EFBIG: return errc::no_space;
        case EROFS: return errc::read_only;
        case EACCES:
        case EPERM: return errc::permission_denied;
        case ETIMEDOUT: return errc::timeout;
        case ECONNRESET:
        case ECONNREFUSED:
        case ECONNABORTED:
        case EPIPE:
        case ENOTCONN:
        case ESHUTDOWN: return errc::connection_lost;
        case EINVAL: return errc::invalid_argument;
        case EOPNOTSUPP: return errc::unsupported;
        case EBUSY:
        case EAGAIN: return errc::busy;
        default: return errc::io_error;
    }
}

void internal_error(std::string_view what, const char* file, int line, const char* function) {
    spdlog::critical("internal error at {}:{} ({}): {}", file, line, function, what);
    spdlog::shutdown();
    std::fprintf(stderr, "vmha: internal error at %s:%d: %.*s\n", file, line,
                 static_cast<int>(what.size()), what.data());
    std::abort();
}

}  // namespace vmha
