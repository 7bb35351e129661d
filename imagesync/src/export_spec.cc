// Command-line vocabulary of imagesyncd: roles, export specifications, sizes.
#include <charconv>
#include <limits>

#include <fmt/format.h>

#include <imagesync/server.h>

namespace imagesync {

std::optional<Role> parse_role(std::string_view text) {
    if (text == "primary") return Role::primary;
    if (text == "secondary") return Role::secondary;
    return std::nullopt;
}

std::string_view role_name(Role role) {
    return role == Role::primary ? "primary" : "secondary";
}

vmha::Result<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t value = 0;
    const char* begin = text.data();
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(begin, end, value);
    if (ec != std::errc{} || ptr == begin) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("size \"{}\" is not a number of bytes", text));
    }
    const std::string_view suffix(ptr, static_cast<std::size_t>(end - ptr));
    unsigned shift = 0;
    if (suffix.empty()) {
        shift = 0;
    } else if (suffix == "K" || suffix == "k") {
        shift = 10;
    } else if (suffix == "M") {
        shift = 20;
    } else if (suffix == "G") {
        shift = 30;
    } else if (suffix == "T") {
        shift = 40;
    } else {
        return vmha::Error(
            vmha::errc::invalid_argument,
            fmt::format("size \"{}\" has an unknown suffix \"{}\" (use K, M, G or T)", text,
                        suffix));
    }
    if (shift > 0 && value > (std::numeric_limits<std::uint64_t>::max() >> shift)) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("size \"{}\" does not fit in 64 bits", text));
    }
    return value << shift;
}

vmha::Result<ExportSpec> parse_export_spec(std::string_view text) {
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0) {
        return vmha::Error(
            vmha::errc::invalid_argument,
            fmt::format("export \"{}\" is not of the form NAME=PATH[,size=SIZE]", text));
    }
    ExportSpec spec;
    spec.name = std::string(text.substr(0, eq));
    if (spec.name.size() > 4096) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("export name \"{}...\" is longer than 4096 bytes",
                                       spec.name.substr(0, 32)));
    }
    std::string_view rest = text.substr(eq + 1);
    const auto comma = rest.find(",size=");
    std::string_view path = rest;
    if (comma != std::string_view::npos) {
        path = rest.substr(0, comma);
        auto size = parse_size(rest.substr(comma + 6));
        if (!size) {
            return vmha::Error(vmha::errc::invalid_argument,
                               fmt::format("export \"{}\": {}", spec.name, size.error().message));
        }
        if (*size == 0 || *size % 512 != 0) {
            return vmha::Error(
                vmha::errc::invalid_argument,
                fmt::format("export \"{}\": size {} is not a positive multiple of 512 bytes",
                            spec.name, *size));
        }
        spec.size = *size;
    }
    if (path.empty()) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("export \"{}\" has an empty path", spec.name));
    }
    spec.path = std::filesystem::path(path);
    return spec;
}

}  // namespace imagesync
