#include "replication/tcp_congestion.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace imagesync::replication {
namespace {

// The longest name the kernel takes: TCP_CA_NAME_MAX (16) counts the terminating zero.
constexpr std::size_t kNameMax = 15;

std::string proc_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line.empty() ? std::string("unknown") : line;
}

bool well_formed(std::string_view name) {
    if (name.empty() || name.size() > kNameMax) return false;
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

vmha::Status set_congestion_control(int fd, std::string_view name) {
    if (name == kSystemCongestion) return {};
    if (!well_formed(name)) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("TCP congestion control \"{}\" is not a name: 1 to {} "
                                       "characters of a-z, 0-9, _ and - (or \"{}\")",
                                       name, kNameMax, kSystemCongestion));
    }
    const std::string text(name);
    if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, text.data(),
                     static_cast<socklen_t>(text.size())) == 0) {
        return {};
    }
    const int e = errno;
    if (e == ENOENT) {
        return vmha::Error(vmha::errc::not_found,
                           fmt::format("TCP congestion control \"{}\" is not available on this "
                                       "kernel (available: {})",
                                       name, proc_line("/proc/sys/net/ipv4/tcp_available_congestion_control")));
    }
    if (e == EPERM) {
        return vmha::Error(vmha::errc::permission_denied,
                           fmt::format("TCP congestion control \"{}\" is not allowed for this "
                                       "process (allowed: {})",
                                       name, proc_line("/proc/sys/net/ipv4/tcp_allowed_congestion_control")));
    }
    return vmha::Error(vmha::errc_from_errno(e),
                       fmt::format("setting TCP congestion control \"{}\" failed: {}", name,
                                   std::strerror(e)));
}

vmha::Status check_congestion_control(std::string_view name) {
    if (name == kSystemCongestion) return {};
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 && errno == EAFNOSUPPORT) fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        const int e = errno;
        return vmha::Error(vmha::errc_from_errno(e),
                           fmt::format("cannot open a TCP socket to check congestion control "
                                       "\"{}\": {}",
                                       name, std::strerror(e)));
    }
    auto status = set_congestion_control(fd, name);
    ::close(fd);
    return status;
}

std::string congestion_control(int fd) {
    char name[kNameMax + 2] = {};
    socklen_t size = sizeof name - 1;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &size) != 0) return {};
    return std::string(name, ::strnlen(name, size));
}

}  // namespace imagesync::replication
