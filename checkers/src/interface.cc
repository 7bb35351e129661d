// The interface checker: the link of a network interface is up, as sysfs reports it.
#include <fstream>

#include <fmt/format.h>
#include <sys/stat.h>

#include "blocking_probe.h"
#include "probes.h"

namespace vmha::checkers::detail {

namespace {

// The first line of a sysfs attribute; nullopt when it cannot be read (carrier of a link
// that is administratively down reads EINVAL).
std::optional<std::string> read_attribute(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line)) return std::nullopt;
    return line;
}

}  // namespace

CheckResult judge_interface(const std::string& sysfs, const std::string& interface) {
    const std::string dir = fmt::format("{}/class/net/{}", sysfs, interface);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        return make_result(Verdict::failed,
                           fmt::format("interface \"{}\" does not exist on this node", interface));
    }
    const auto operstate = read_attribute(dir + "/operstate");
    const auto carrier = read_attribute(dir + "/carrier");
    if (!operstate) {
        return make_result(
            Verdict::unknown,
            fmt::format("interface \"{}\": \"{}/operstate\" could not be read", interface, dir));
    }
    // "up", or "unknown" (drivers without operstate, e.g. lo and dummy) with a carrier.
    if (*operstate == "up" || (*operstate == "unknown" && carrier && *carrier == "1")) {
        return make_result(Verdict::healthy, fmt::format("interface \"{}\" link is up", interface));
    }
    return make_result(Verdict::failed,
                       fmt::format("interface \"{}\" link is down (operstate \"{}\", carrier {})",
                                   interface, *operstate, carrier ? *carrier : "unreadable"));
}

std::unique_ptr<Probe> make_interface_probe(boost::asio::any_io_executor executor,
                                            boost::asio::thread_pool& blocking, std::string sysfs,
                                            std::string interface) {
    return std::make_unique<BlockingProbe>(
        std::move(executor), blocking,
        [sysfs = std::move(sysfs), interface = std::move(interface)] {
            return judge_interface(sysfs, interface);
        });
}

}  // namespace vmha::checkers::detail
