#include <fmt/format.h>

#include <checkers/factory.h>

#include "probes.h"

namespace vmha::checkers {

namespace {

Error refuse(const config::Checker& c, std::string_view why) {
    return Error(errc::invalid_argument,
                 fmt::format("checker \"{}\" ({}): {}", c.name, config::to_string(c.kind), why));
}

}  // namespace

Result<std::unique_ptr<Checker>> make_checker(const config::Checker& c, CheckerContext ctx) {
    using config::CheckerKind;
    if (!ctx.executor) return refuse(c, "no executor was given");
    if (c.interval.count() <= 0) return refuse(c, "the interval must be positive");
    if (c.timeout.count() <= 0) return refuse(c, "the timeout must be positive");
    const detail::Schedule schedule{c.interval, c.failures == 0 ? 1u : c.failures};
    const bool needs_pool = c.kind == CheckerKind::vm || c.kind == CheckerKind::process ||
                            c.kind == CheckerKind::interface;
    if (needs_pool && ctx.blocking == nullptr)
        return refuse(c, "no blocking thread pool was given");

    std::unique_ptr<detail::Probe> probe;
    switch (c.kind) {
        case CheckerKind::vm: {
            if (ctx.hypervisor == nullptr) return refuse(c, "no hypervisor was given");
            if (ctx.domain.empty()) return refuse(c, "no domain name was given");
            detail::VmOptions options{ctx.hypervisor, ctx.domain, c.guest_agent, c.timeout};
            return detail::make_vm_checker(c.name, ctx.executor, *ctx.blocking, schedule,
                                           std::move(options), ctx.events);
        }
        case CheckerKind::process:
            if (c.process.empty()) return refuse(c, "no process name was given");
            probe = detail::make_process_probe(ctx.executor, *ctx.blocking, c.process);
            break;
        case CheckerKind::command:
            if (c.command.empty() || c.command.front().empty()) {
                return refuse(c, "no command was given");
            }
            probe = detail::make_command_probe(ctx.executor, c.command, c.timeout);
            break;
        case CheckerKind::tcp:
            if (!c.host || c.host->text.empty()) return refuse(c, "no host was given");
            if (c.port == 0) return refuse(c, "no port was given");
            probe = detail::make_tcp_probe(ctx.executor, c.host->text, c.port, c.timeout);
            break;
        case CheckerKind::interface:
            if (c.interface.empty()) return refuse(c, "no interface was given");
            if (c.interface.find('/') != std::string::npos || c.interface == "." ||
                c.interface == "..") {
                return refuse(c, fmt::format("\"{}\" is not an interface name", c.interface));
            }
            probe =
                detail::make_interface_probe(ctx.executor, *ctx.blocking, ctx.sysfs, c.interface);
            break;
        case CheckerKind::ping:
            if (!c.host || c.host->text.empty()) return refuse(c, "no host was given");
            probe = detail::make_ping_probe(ctx.executor, c.host->text, c.timeout);
            break;
        case CheckerKind::replication:
            return Error(errc::unsupported,
                         fmt::format("checker \"{}\": the module watches replication itself "
                                     "through imagesyncd; no separate checker is made",
                                     c.name));
    }
    if (!probe) internal_error(fmt::format("checker \"{}\": unknown kind", c.name));
    return std::unique_ptr<Checker>(
        std::make_unique<detail::ProbingChecker>(c.name, ctx.executor, schedule, std::move(probe)));
}

}  // namespace vmha::checkers
