// Parsing of module files (one per protected VM). See docs/config-reference.md.
#include <algorithm>
#include <array>
#include <map>
#include <set>

#include <fmt/format.h>

#include "parse.h"
#include "reader.h"
#include <vmha/config/timezone.h>

namespace vmha::config::detail {
namespace {

constexpr std::array<Choice<HypervisorKind>, 2> hypervisor_choices = {{
    {"libvirt", HypervisorKind::libvirt},
    {"hyperv", HypervisorKind::hyperv},
}};
constexpr std::array<Choice<DiskFormat>, 3> format_choices = {{
    {"raw", DiskFormat::raw},
    {"qcow2", DiskFormat::qcow2},
    {"vhdx", DiskFormat::vhdx},
}};
constexpr std::array<Choice<CheckerKind>, 7> checker_choices = {{
    {"vm", CheckerKind::vm},
    {"process", CheckerKind::process},
    {"command", CheckerKind::command},
    {"tcp", CheckerKind::tcp},
    {"ping", CheckerKind::ping},
    {"interface", CheckerKind::interface},
    {"replication", CheckerKind::replication},
}};
constexpr std::array<Choice<CheckerAction>, 3> action_choices = {{
    {"restart", CheckerAction::restart},
    {"failover", CheckerAction::failover},
    {"wait", CheckerAction::wait},
}};
constexpr std::array<Choice<FailbackMode>, 3> failback_choices = {{
    {"manual", FailbackMode::manual},
    {"automatic", FailbackMode::automatic},
    {"scheduled", FailbackMode::scheduled},
}};
constexpr std::array<Choice<SplitBrainPolicy>, 2> split_brain_choices = {{
    {"disconnect", SplitBrainPolicy::disconnect},
    {"discard-zero-changes", SplitBrainPolicy::discard_zero_changes},
}};
constexpr std::array<Choice<WitnessKind>, 2> witness_choices = {{
    {"vmha", WitnessKind::vmha},
    {"etcd", WitnessKind::etcd},
}};

bool is_power_of_two(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::string stem(const std::string& path) {
    std::string base = path.substr(path.find_last_of('/') + 1);
    if (const auto dot = base.rfind('.'); dot != std::string::npos && dot > 0) base.resize(dot);
    return base;
}

DiskFormat format_from_extension(const std::string& path) {
    auto ends_with = [&](std::string_view suffix) {
        return path.size() >= suffix.size() &&
               path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with(".qcow2")) return DiskFormat::qcow2;
    if (ends_with(".vhdx")) return DiskFormat::vhdx;
    return DiskFormat::raw;
}

std::string item_path(std::string_view list, std::size_t i) { return fmt::format("{}[{}]", list, i); }

void read_vm(MapView& top, Module& m) {
    auto node = top.mapping("vm", true);
    if (!node) return;
    MapView vm(top.reader(), *node, "vm",
               {"name", "hypervisor", "domain_xml", "shutdown_timeout"}, "the vm section");
    if (auto v = vm.name("name", true)) m.vm.name = *v;
    if (auto v = vm.choice<HypervisorKind>("hypervisor", hypervisor_choices)) m.vm.hypervisor = *v;
    const bool libvirt = m.vm.hypervisor == HypervisorKind::libvirt;
    if (auto v = vm.path("domain_xml", libvirt)) m.vm.domain_xml = *v;
    if (auto v = vm.parsed<Duration>("shutdown_timeout", parse_duration, false, "a duration such as \"30s\"")) m.vm.shutdown_timeout = *v;
}

void read_disks(MapView& top, Module& m) {
    auto list = top.list("disks", true);
    if (!list) return;
    if (list->size() == 0) {
        top.reader().error(top.location_of("disks"), "disks",
                           "at least one disk to replicate is required");
    }
    std::map<std::string, SourceLocation> paths;
    std::map<std::string, SourceLocation> exports;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string path = item_path("disks", i);
        MapView d(top.reader(), (*list)[i], path, {"path", "export", "format", "target"}, "a disk");
        if (!d.valid()) continue;
        Disk disk;
        disk.where = d.location_of("path");
        if (auto v = d.path("path", true)) disk.path = *v;
        disk.format = format_from_extension(disk.path);
        if (auto v = d.choice<DiskFormat>("format", format_choices)) disk.format = *v;
        disk.export_name = stem(disk.path);
        if (auto v = d.name("export")) {
            disk.export_name = *v;
        } else if (d.get("export") == nullptr && !disk.path.empty() && !valid_name(disk.export_name)) {
            top.reader().error(disk.where, d.path_of("export"),
                               fmt::format("the file name gives the export name \"{}\", which is "
                                           "not a valid name; set \"export\"",
                                           disk.export_name));
            disk.export_name.clear();
        }
        if (auto v = d.string("target")) disk.target = *v;
        bool path_repeated = false;
        if (!disk.path.empty()) {
            if (auto [it, fresh] = paths.emplace(disk.path, disk.where); !fresh) {
                path_repeated = true;
                top.reader().error(disk.where, d.path_of("path"),
                                   fmt::format("disk \"{}\" is listed twice (first at {})",
                                               disk.path, it->second.to_string()));
            }
        }
        if (!disk.export_name.empty() && !path_repeated) {  // a repeated path says it already
            const SourceLocation at = d.get("export") ? d.location_of("export") : disk.where;
            if (auto [it, fresh] = exports.emplace(disk.export_name, at); !fresh) {
                top.reader().error(at, d.path_of("export"),
                                   fmt::format("export name \"{}\" is used by two disks (first at "
                                               "{}); set a distinct \"export\"",
                                               disk.export_name, it->second.to_string()));
            }
        }
        m.disks.push_back(std::move(disk));
    }
}

void read_nodes(MapView& top, Module& m) {
    auto list = top.list("nodes", true);
    if (!list) return;
    if (list->size() != 2) {
        top.reader().error(top.location_of("nodes"), "nodes",
                           fmt::format("a module names exactly two nodes, found {}", list->size()));
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string path = item_path("nodes", i);
        MapView n(top.reader(), (*list)[i], path,
                  {"name", "address", "hypervisor_uri", "replication_address", "control_port"},
                  "a node");
        if (!n.valid()) continue;
        ModuleNode node;
        node.where = n.location_of("name");
        if (auto v = n.name("name", true)) node.name = *v;
        if (auto v = n.parsed<Host>("address", parse_host, true, "an address")) node.address = *v;
        node.hypervisor_uri = m.vm.hypervisor == HypervisorKind::libvirt ? "qemu:///system" : "";
        if (auto v = n.string("hypervisor_uri", m.vm.hypervisor == HypervisorKind::hyperv)) {
            node.hypervisor_uri = *v;
        }
        if (auto v = n.parsed<Host>("replication_address", parse_host, false, "an address")) node.replication_address = *v;
        if (auto v = n.port("control_port", false)) node.control_port = *v;
        if (i == 1 && !node.name.empty() && node.name == m.nodes.front().name) {
            top.reader().error(node.where, n.path_of("name"),
                               fmt::format("both nodes of the module are \"{}\"; a module "
                                           "mirrors between two different nodes",
                                           node.name));
        }
        m.nodes.push_back(std::move(node));
    }
}

void read_replication(MapView& top, Module& m) {
    auto node = top.mapping("replication", true);
    if (!node) return;
    MapView r(top.reader(), *node, "replication",
              {"port", "timeout", "connect_timeout", "resync_rate", "activity_log_extent",
               "chunk_size", "split_brain", "tcp_congestion"},
              "the replication section");
    auto& rep = m.replication;
    rep.where = r.location_of("port");
    if (auto v = r.port("port", true)) rep.port = *v;
    if (auto v = r.parsed<Duration>("timeout", parse_duration, false, "a duration such as \"30s\"")) rep.timeout = *v;
    if (auto v = r.parsed<Duration>("connect_timeout", parse_duration, false, "a duration such as \"30s\"")) rep.connect_timeout = *v;
    if (auto v = r.parsed<std::uint64_t>("resync_rate", parse_rate, false, "a rate such as \"200MiB/s\"")) rep.resync_rate = *v;
    if (auto v = r.choice<SplitBrainPolicy>("split_brain", split_brain_choices)) rep.split_brain = *v;
    if (auto v = r.string("tcp_congestion")) {
        // The form only: which algorithms a kernel has is imagesyncd's check, on its node.
        const bool well_formed =
            !v->empty() && v->size() <= 15 &&
            v->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string::npos;
        if (!well_formed) {
            top.reader().error(r.location_of("tcp_congestion"), r.path_of("tcp_congestion"),
                               fmt::format("TCP congestion control \"{}\" is not a name: 1 to 15 "
                                           "characters of a-z, 0-9, _ and - (or \"system\")",
                                           *v));
        } else {
            rep.tcp_congestion = *v;
        }
    }
    if (auto v = r.parsed<std::uint64_t>("chunk_size", parse_size, false, "a size such as \"64KiB\"")) {
        if (!is_power_of_two(*v) || *v < 4096 || *v > (16u << 20)) {
            top.reader().error(r.location_of("chunk_size"), r.path_of("chunk_size"),
                               fmt::format("chunk size {} must be a power of two from 4 KiB to "
                                           "16 MiB",
                                           format_size(*v)));
        } else {
            rep.chunk_size = *v;
        }
    }
    if (auto v = r.parsed<std::uint64_t>("activity_log_extent", parse_size, false, "a size such as \"4MiB\"")) {
        if (!is_power_of_two(*v) || *v < (64u << 10) || *v > (1ull << 30)) {
            top.reader().error(r.location_of("activity_log_extent"),
                               r.path_of("activity_log_extent"),
                               fmt::format("activity-log extent {} must be a power of two from "
                                           "64 KiB to 1 GiB",
                                           format_size(*v)));
        } else {
            rep.activity_log_extent = *v;
        }
    }
    if (rep.activity_log_extent < rep.chunk_size) {
        const char* key = r.get("activity_log_extent") ? "activity_log_extent" : "chunk_size";
        top.reader().error(r.location_of(key), r.path_of(key),
                           fmt::format("the activity-log extent ({}) must not be smaller than the "
                                       "chunk size ({})",
                                       format_size(rep.activity_log_extent),
                                       format_size(rep.chunk_size)));
    }
    if (rep.timeout.count() <= 0) {
        top.reader().error(r.location_of("timeout"), r.path_of("timeout"),
                           "the replication timeout must be longer than 0s");
    }
    if (rep.connect_timeout.count() <= 0) {
        top.reader().error(r.location_of("connect_timeout"), r.path_of("connect_timeout"),
                           "the connect timeout must be longer than 0s");
    }
}

void read_heartbeat(MapView& top, Module& m) {
    auto node = top.mapping("heartbeat", true);
    if (!node) return;
    MapView h(top.reader(), *node, "heartbeat", {"interval", "timeout", "paths"},
              "the heartbeat section");
    auto& hb = m.heartbeat;
    if (auto v = h.parsed<Duration>("interval", parse_duration, false, "a duration such as \"30s\"")) hb.interval = *v;
    if (auto v = h.parsed<Duration>("timeout", parse_duration, false, "a duration such as \"30s\"")) hb.timeout = *v;
    if (hb.interval.count() <= 0) {
        top.reader().error(h.location_of("interval"), h.path_of("interval"),
                           "the heartbeat interval must be longer than 0s");
    } else if (hb.timeout < 2 * hb.interval) {
        top.reader().error(h.location_of("timeout"), h.path_of("timeout"),
                           fmt::format("timeout {} must be at least twice the interval {}, or "
                                       "one late heartbeat would declare the peer lost",
                                       format_duration(hb.timeout), format_duration(hb.interval)));
    }
    auto list = h.list("paths", true);
    if (!list) return;
    if (list->size() == 0) {
        top.reader().error(h.location_of("paths"), h.path_of("paths"),
                           "at least one heartbeat path is required");
    }
    std::set<std::string> names;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string path = item_path("heartbeat.paths", i);
        MapView p(top.reader(), (*list)[i], path, {"name", "port", "addresses"}, "a heartbeat path");
        if (!p.valid()) continue;
        HeartbeatPath hp;
        hp.name = fmt::format("path{}", i);
        if (auto v = p.name("name")) hp.name = *v;
        if (!names.insert(hp.name).second) {
            top.reader().error(p.location_of("name"), p.path_of("name"),
                               fmt::format("heartbeat path name \"{}\" is used twice", hp.name));
        }
        hp.where = p.location_of("port");
        if (auto v = p.port("port", true)) hp.port = *v;
        if (auto addresses = p.mapping("addresses", true)) {
            for (const auto& kv : *addresses) {
                const YAML::Node name_node = kv.first;  // copies: the iterator's are temporaries
                const YAML::Node value = kv.second;
                const std::string node_name = name_node.as<std::string>("");
                const std::string key = p.path_of("addresses") + "." + node_name;
                if (m.node(node_name) == nullptr) {
                    std::vector<std::string_view> names_known;
                    for (const auto& n : m.nodes) names_known.push_back(n.name);
                    std::string message = fmt::format("\"{}\" is not one of the module's nodes",
                                                      node_name);
                    if (auto hint = closest(node_name, names_known); !hint.empty()) {
                        message += fmt::format("; did you mean \"{}\"?", hint);
                    }
                    top.reader().error(name_node, key, std::move(message));
                    continue;
                }
                if (!value.IsScalar()) {
                    top.reader().error(value, key,
                                       fmt::format("expected an address, found {}",
                                                   describe(value)));
                    continue;
                }
                auto host = parse_host(value.Scalar());
                if (!host) {
                    top.reader().error(value, key, host.error().message);
                    continue;
                }
                hp.addresses.emplace(node_name, *host);
            }
            std::set<std::string> missing;
            for (const auto& n : m.nodes) {
                if (!n.name.empty() && !hp.addresses.contains(n.name) && missing.insert(n.name).second) {
                    top.reader().error(p.location_of("addresses"), p.path_of("addresses"),
                                       fmt::format("no address for node \"{}\" on this path",
                                                   n.name));
                }
            }
        }
        hb.paths.push_back(std::move(hp));
    }
}

CheckerAction default_action(CheckerKind kind) {
    switch (kind) {
        case CheckerKind::vm:
        case CheckerKind::process:
        case CheckerKind::command:
        case CheckerKind::tcp: return CheckerAction::restart;
        case CheckerKind::ping:
        case CheckerKind::interface: return CheckerAction::failover;
        case CheckerKind::replication: return CheckerAction::wait;
    }
    return CheckerAction::restart;
}

std::vector<std::string_view> checker_keys(std::optional<CheckerKind> kind) {
    std::vector<std::string_view> keys = {"type", "name", "action", "interval", "timeout",
                                          "failures"};
    if (!kind) {
        keys.insert(keys.end(), {"guest_agent", "process", "command", "host", "port", "interface"});
        return keys;
    }
    switch (*kind) {
        case CheckerKind::vm: keys.push_back("guest_agent"); break;
        case CheckerKind::process: keys.push_back("process"); break;
        case CheckerKind::command: keys.push_back("command"); break;
        case CheckerKind::tcp: keys.insert(keys.end(), {"host", "port"}); break;
        case CheckerKind::ping: keys.push_back("host"); break;
        case CheckerKind::interface: keys.push_back("interface"); break;
        case CheckerKind::replication: break;
    }
    return keys;
}

// A command line: a list of arguments, or one string split on blanks; the program by its
// absolute path. Used by the command checker and the fencing hook.
void read_command(MapView& c, std::vector<std::string>& command) {
    const YAML::Node* v = c.get("command", true);
    if (v == nullptr) return;
    if (v->IsScalar()) {
        std::string_view rest = v->Scalar();
        while (!rest.empty()) {
            const auto start = rest.find_first_not_of(" \t");
            if (start == std::string_view::npos) break;
            rest.remove_prefix(start);
            const auto end = rest.find_first_of(" \t");
            command.emplace_back(rest.substr(0, end));
            if (end == std::string_view::npos) break;
            rest.remove_prefix(end);
        }
    } else if (v->IsSequence()) {
        for (const auto& arg : *v) {
            if (!arg.IsScalar()) {
                c.reader().error(arg, c.path_of("command"),
                                 fmt::format("command arguments must be text, found {}",
                                             describe(arg)));
                return;
            }
            command.push_back(arg.Scalar());
        }
    } else {
        c.reader().error(c.location_of("command"), c.path_of("command"),
                         fmt::format("expected a command line or a list of arguments, found {}",
                                     describe(*v)));
        return;
    }
    if (command.empty()) {
        c.reader().error(c.location_of("command"), c.path_of("command"), "the command is empty");
    } else if (command.front().empty() || command.front().front() != '/') {
        c.reader().error(c.location_of("command"), c.path_of("command"),
                         fmt::format("program \"{}\" must be given by its absolute path",
                                     command.front()));
    }
}

void read_checker_command(MapView& c, Checker& checker) { read_command(c, checker.command); }

void read_checkers(MapView& top, Module& m) {
    auto list = top.list("checkers");
    if (!list) {
        Checker vm;  // default: watch the VM, restart it locally
        vm.name = "vm";
        m.checkers.push_back(vm);
        return;
    }
    if (list->size() == 0) {
        top.reader().error(top.location_of("checkers"), "checkers",
                           "an empty list leaves the VM unwatched; list at least one checker, or "
                           "leave \"checkers\" out for the default vm checker");
    }
    std::map<std::string, SourceLocation> names;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const std::string path = item_path("checkers", i);
        const YAML::Node& item = (*list)[i];
        // The type decides which other keys are allowed, so read it first.
        std::optional<CheckerKind> kind;
        if (item.IsMap() && item["type"] && item["type"].IsScalar()) {
            for (const auto& choice : checker_choices) {
                if (choice.name == item["type"].Scalar()) kind = choice.value;
            }
        }
        const std::string what =
            kind ? fmt::format("a {} checker", to_string(*kind)) : std::string("a checker");
        MapView c(top.reader(), item, path, checker_keys(kind), what);
        if (!c.valid()) continue;
        Checker checker;
        checker.where = c.location_of("type");
        (void)c.choice<CheckerKind>("type", checker_choices, true);
        if (!kind) continue;  // reported above; its other keys cannot be judged
        checker.kind = *kind;
        checker.name = std::string(to_string(*kind));
        if (auto v = c.name("name")) checker.name = *v;
        if (auto [it, fresh] = names.emplace(checker.name, c.location_of("name")); !fresh) {
            top.reader().error(c.location_of(c.get("name") ? "name" : "type"), c.path_of("name"),
                               fmt::format("checker name \"{}\" is used twice (first at {}); "
                                           "give each checker of one type its own \"name\"",
                                           checker.name, it->second.to_string()));
        }
        checker.action = default_action(*kind);
        if (auto v = c.choice<CheckerAction>("action", action_choices)) checker.action = *v;
        if (auto v = c.parsed<Duration>("interval", parse_duration, false, "a duration such as \"30s\"")) checker.interval = *v;
        if (auto v = c.parsed<Duration>("timeout", parse_duration, false, "a duration such as \"30s\"")) checker.timeout = *v;
        if (auto v = c.integer("failures", 1, 1000)) checker.failures = static_cast<unsigned>(*v);
        if (checker.interval.count() <= 0) {
            top.reader().error(c.location_of("interval"), c.path_of("interval"),
                               "a checker interval must be longer than 0s");
        }
        if (checker.timeout.count() <= 0) {
            top.reader().error(c.location_of("timeout"), c.path_of("timeout"),
                               "a checker timeout must be longer than 0s");
        }
        switch (*kind) {
            case CheckerKind::vm:
                if (auto v = c.boolean("guest_agent")) checker.guest_agent = *v;
                break;
            case CheckerKind::process:
                if (auto v = c.string("process", true)) checker.process = *v;
                break;
            case CheckerKind::command: read_checker_command(c, checker); break;
            case CheckerKind::tcp:
                if (auto v = c.parsed<Host>("host", parse_host, true, "an address")) checker.host = *v;
                if (auto v = c.port("port", true)) checker.port = *v;
                break;
            case CheckerKind::ping:
                if (auto v = c.parsed<Host>("host", parse_host, true, "an address")) checker.host = *v;
                break;
            case CheckerKind::interface:
                if (auto v = c.string("interface", true)) {
                    if (v->size() > 15 || v->find_first_of("/: \t") != std::string::npos) {
                        top.reader().error(c.location_of("interface"), c.path_of("interface"),
                                           fmt::format("\"{}\" is not a valid interface name "
                                                       "(at most 15 characters, no '/', ':' or blanks)",
                                                       *v));
                    } else {
                        checker.interface = *v;
                    }
                }
                break;
            case CheckerKind::replication: break;
        }
        m.checkers.push_back(std::move(checker));
    }
}

void read_restart(MapView& top, Module& m) {
    auto node = top.mapping("restart");
    if (!node) return;
    MapView r(top.reader(), *node, "restart", {"attempts", "window"}, "the restart section");
    if (auto v = r.integer("attempts", 0, 1000)) m.restart.attempts = static_cast<unsigned>(*v);
    if (auto v = r.parsed<Duration>("window", parse_duration, false, "a duration such as \"30s\"")) m.restart.window = *v;
}

void read_failback(MapView& top, Module& m) {
    auto node = top.mapping("failback");
    if (!node) return;
    MapView f(top.reader(), *node, "failback",
              {"mode", "preferred_node", "schedule", "timezone", "stable_for"},
              "the failback section");
    auto& fb = m.failback;
    if (auto v = f.choice<FailbackMode>("mode", failback_choices)) fb.mode = *v;
    if (auto v = f.name("preferred_node")) {
        fb.preferred_node = *v;
        if (m.node(*v) == nullptr && m.nodes.size() == 2 && !m.nodes[0].name.empty() &&
            !m.nodes[1].name.empty()) {
            std::vector<std::string_view> known = {m.nodes[0].name, m.nodes[1].name};
            std::string message =
                fmt::format("preferred node \"{}\" is not one of the module's nodes ({} and {})",
                            *v, m.nodes[0].name, m.nodes[1].name);
            if (auto hint = closest(*v, known); !hint.empty()) {
                message += fmt::format("; did you mean \"{}\"?", hint);
            }
            top.reader().error(f.location_of("preferred_node"), f.path_of("preferred_node"),
                               std::move(message));
        }
    }
    if (auto v = f.parsed<CronSchedule>("schedule", &CronSchedule::parse, false,
                                        "a cron expression such as \"0 2 * * 0\"")) {
        if (!v->next_after(CivilMinute{2000, 1, 1, 0, 0})) {
            top.reader().error(f.location_of("schedule"), f.path_of("schedule"),
                               fmt::format("schedule \"{}\" never fires (no such date)", v->text()));
        } else {
            fb.schedule = *v;
        }
    }
    if (auto v = f.string("timezone")) {
        if (auto zone = TimeZone::load(*v)) {
            fb.timezone = *v;
        } else {
            top.reader().error(f.location_of("timezone"), f.path_of("timezone"),
                               fmt::format("{}, e.g. \"Europe/Paris\" or \"UTC\"", zone.error().message));
        }
    }
    if (auto v = f.parsed<Duration>("stable_for", parse_duration, false, "a duration such as \"30s\"")) fb.stable_for = *v;
    if (fb.mode == FailbackMode::scheduled && f.get("schedule") == nullptr) {
        top.reader().error(f.location_of("mode"), f.path_of("schedule"),
                           "mode \"scheduled\" needs a cron \"schedule\", e.g. \"0 2 * * 0\"");
    }
    if (fb.mode != FailbackMode::scheduled && f.get("schedule") != nullptr) {
        top.reader().error(f.location_of("schedule"), f.path_of("schedule"),
                           fmt::format("a schedule is only used with mode \"scheduled\" (mode is "
                                       "\"{}\")",
                                       to_string(fb.mode)));
    }
    if (fb.mode != FailbackMode::manual && f.get("preferred_node") == nullptr) {
        top.reader().error(f.location_of("mode"), f.path_of("preferred_node"),
                           fmt::format("mode \"{}\" needs a \"preferred_node\" to move the VM "
                                       "back to",
                                       to_string(fb.mode)));
    }
}

void read_fencing(MapView& top, Module& m) {
    auto node = top.mapping("fencing");
    if (!node) return;
    MapView f(top.reader(), *node, "fencing", {"command", "timeout"}, "the fencing section");
    Fencing fencing;
    fencing.where = f.location_of("command");
    read_command(f, fencing.command);
    // Placeholders: {peer}, {self}, {module}; anything else in braces is a mistake.
    for (const auto& arg : fencing.command) {
        for (std::size_t open = arg.find('{'); open != std::string::npos; open = arg.find('{', open + 1)) {
            const auto close = arg.find('}', open);
            const std::string word = close == std::string::npos ? arg.substr(open) : arg.substr(open, close - open + 1);
            if (word != "{peer}" && word != "{self}" && word != "{module}") {
                top.reader().error(f.location_of("command"), f.path_of("command"),
                                   fmt::format("unknown placeholder \"{}\" in \"{}\"; the placeholders are "
                                               "{{peer}}, {{self}} and {{module}}",
                                               word, arg));
                break;
            }
        }
    }
    if (auto v = f.parsed<Duration>("timeout", parse_duration, false, "a duration such as \"60s\"")) {
        if (*v < std::chrono::seconds(1) || *v > std::chrono::hours(1)) {
            top.reader().error(f.location_of("timeout"), f.path_of("timeout"),
                               "the fencing timeout must be 1s to 1h");
        } else {
            fencing.timeout = *v;
        }
    }
    if (!fencing.command.empty()) m.fencing = std::move(fencing);
}

void read_witness(MapView& top, Module& m) {
    auto node = top.mapping("witness");
    if (!node) {
        if (top.get("witness") != nullptr) return;  // present but not a mapping: reported
        top.reader().warning(top.node(), "witness",
                             "no witness: if the link between the nodes breaks, both may go "
                             "ALONE and run the VM; the split brain is detected when they "
                             "reconnect, and one side's writes will have to be discarded; "
                             "configure a witness");
        return;
    }
    MapView w(top.reader(), *node, "witness", {"type", "endpoints", "lease", "margin", "name", "prefix"},
              "the witness section");
    Witness witness;
    if (auto v = w.choice<WitnessKind>("type", witness_choices)) witness.kind = *v;
    if (auto v = w.parsed<Duration>("lease", parse_duration, false, "a duration such as \"30s\"")) witness.lease = *v;
    if (auto v = w.parsed<Duration>("margin", parse_duration, false, "a duration such as \"1s\"")) witness.margin = *v;
    if (auto v = w.name("name")) {
        if (witness.kind == WitnessKind::vmha) {
            witness.name = *v;
        } else {
            top.reader().error(w.location_of("name"), w.path_of("name"),
                               "\"name\" is the vmha witness's certificate name; an etcd witness has none");
        }
    }
    if (auto v = w.string("prefix")) {
        if (witness.kind != WitnessKind::etcd) {
            top.reader().error(w.location_of("prefix"), w.path_of("prefix"),
                               "\"prefix\" is the etcd key prefix; a vmha witness has none");
        } else if (v->size() < 2 || v->front() != '/' || v->back() != '/') {
            top.reader().error(w.location_of("prefix"), w.path_of("prefix"),
                               fmt::format("prefix \"{}\" must start and end with '/'", *v));
        } else {
            witness.prefix = *v;
        }
    }
    if (auto list = w.list("endpoints", true)) {
        for (std::size_t i = 0; i < list->size(); ++i) {
            const YAML::Node& e = (*list)[i];
            const std::string key = item_path(w.path_of("endpoints"), i);
            if (!e.IsScalar()) {
                top.reader().error(e, key, fmt::format("expected \"HOST:PORT\", found {}", describe(e)));
                continue;
            }
            auto hp = parse_host_port(e.Scalar());
            if (!hp) {
                top.reader().error(e, key, hp.error().message);
                continue;
            }
            witness.endpoints.push_back(*hp);
        }
        if (witness.kind == WitnessKind::vmha && list->size() != 1) {
            top.reader().error(w.location_of("endpoints"), w.path_of("endpoints"),
                               fmt::format("a vmha witness has exactly one endpoint, found {}",
                                           list->size()));
        }
        if (witness.kind == WitnessKind::etcd && list->size() == 0) {
            top.reader().error(w.location_of("endpoints"), w.path_of("endpoints"),
                               "an etcd witness needs at least one endpoint");
        }
    }
    if (witness.lease <= m.heartbeat.timeout) {
        top.reader().error(w.location_of("lease"), w.path_of("lease"),
                           fmt::format("lease {} must be longer than the heartbeat timeout {}",
                                       format_duration(witness.lease),
                                       format_duration(m.heartbeat.timeout)));
    }
    // The lease must leave time after the margin (with vmhad's 1% clock-drift allowance).
    if (witness.margin.count() * 100 >= witness.lease.count() * 99) {
        top.reader().error(w.location_of("margin"), w.path_of("margin"),
                           fmt::format("margin {} leaves no time of the {} lease (it must be below 99% of it)",
                                       format_duration(witness.margin), format_duration(witness.lease)));
    }
    m.witness = std::move(witness);
}

void read_health_check(MapView& top, Module& m) {
    auto node = top.mapping("health_check");
    if (!node) return;
    MapView h(top.reader(), *node, "health_check", {"port", "allow"}, "the health_check section");
    m.health_check.where = h.location_of("port");
    if (auto v = h.port("port", true)) m.health_check.port = *v;
    if (auto list = h.list("allow")) {
        for (std::size_t i = 0; i < list->size(); ++i) {
            const YAML::Node& e = (*list)[i];
            const std::string key = item_path(h.path_of("allow"), i);
            if (!e.IsScalar()) {
                top.reader().error(e, key, fmt::format("expected a network such as "
                                                       "\"10.0.0.0/24\", found {}",
                                                       describe(e)));
                continue;
            }
            auto cidr = parse_cidr(e.Scalar());
            if (!cidr) {
                top.reader().error(e, key, cidr.error().message);
                continue;
            }
            m.health_check.allow.push_back(*cidr);
        }
    }
}

// Two listeners of one module on the same port would fail at start; say so now.
void check_module_ports(Reader& reader, const Module& m) {
    std::map<std::pair<std::uint16_t, bool>, const Module::Port*> seen;
    const auto ports = m.ports();
    for (const auto& p : ports) {
        if (auto [it, fresh] = seen.emplace(std::pair{p.port, p.udp}, &p); !fresh && !p.udp) {
            reader.error(p.where, p.key,
                         fmt::format("port {} is also used by {} (at {})", p.port, it->second->key,
                                     it->second->where.to_string()));
        }
    }
}

}  // namespace

Module parse_module(Reader& reader, const YAML::Node& root) {
    Module m;
    MapView top(reader, root, "",
                {"module", "vm", "disks", "nodes", "replication", "heartbeat", "checkers",
                 "restart", "failback", "witness", "fencing", "health_check"},
                "a module file");
    if (!top.valid()) return m;
    m.where = top.location_of("module");
    if (auto v = top.name("module", true)) m.name = *v;
    read_vm(top, m);
    read_disks(top, m);
    read_nodes(top, m);
    read_replication(top, m);
    read_heartbeat(top, m);
    read_checkers(top, m);
    read_restart(top, m);
    read_failback(top, m);
    read_witness(top, m);
    read_fencing(top, m);
    read_health_check(top, m);
    check_module_ports(reader, m);
    if (!m.name.empty()) {
        const std::string& file = reader.file();
        const std::string base = file.substr(file.find_last_of('/') + 1);
        if (base != m.name + ".yaml" && base != m.name + ".yml") {
            reader.warning(root["module"], "module",
                           fmt::format("module \"{}\" is in a file named \"{}\"; name the file "
                                       "\"{}.yaml\" so that operators find it",
                                       m.name, base, m.name));
        }
    }
    return m;
}

}  // namespace vmha::config::detail
