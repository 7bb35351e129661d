#include <fmt/format.h>

#include <vmha/config/config.h>
#include <vmha/config/load.h>

namespace vmha::config {

std::string SourceLocation::to_string() const {
    if (line == 0) return file;
    return fmt::format("{}:{}:{}", file, line, column);
}

const ModuleNode* Module::node(const std::string& node_name) const {
    for (const auto& n : nodes) {
        if (n.name == node_name) return &n;
    }
    return nullptr;
}

const ModuleNode* Module::peer_of(const std::string& node_name) const {
    if (nodes.size() != 2) return nullptr;
    if (nodes[0].name == node_name) return &nodes[1];
    if (nodes[1].name == node_name) return &nodes[0];
    return nullptr;
}

std::vector<Module::Port> Module::ports() const {
    std::vector<Port> out;
    if (replication.port != 0) out.push_back({replication.port, false, "replication.port", replication.where});
    for (std::size_t i = 0; i < heartbeat.paths.size(); ++i) {
        const auto& p = heartbeat.paths[i];
        if (p.port != 0) out.push_back({p.port, true, fmt::format("heartbeat.paths[{}].port", i), p.where});
    }
    if (health_check.port != 0) out.push_back({health_check.port, false, "health_check.port", health_check.where});
    return out;
}

std::string_view to_string(HypervisorKind v) {
    return v == HypervisorKind::libvirt ? "libvirt" : "hyperv";
}

std::string_view to_string(DiskFormat v) {
    switch (v) {
        case DiskFormat::raw: return "raw";
        case DiskFormat::qcow2: return "qcow2";
        case DiskFormat::vhdx: return "vhdx";
    }
    return "raw";
}

std::string_view to_string(CheckerKind v) {
    switch (v) {
        case CheckerKind::vm: return "vm";
        case CheckerKind::process: return "process";
        case CheckerKind::command: return "command";
        case CheckerKind::tcp: return "tcp";
        case CheckerKind::ping: return "ping";
        case CheckerKind::interface: return "interface";
        case CheckerKind::replication: return "replication";
    }
    return "vm";
}

std::string_view to_string(CheckerAction v) {
    switch (v) {
        case CheckerAction::restart: return "restart";
        case CheckerAction::failover: return "failover";
        case CheckerAction::wait: return "wait";
    }
    return "restart";
}

std::string_view to_string(SplitBrainPolicy v) {
    switch (v) {
        case SplitBrainPolicy::disconnect: return "disconnect";
        case SplitBrainPolicy::discard_zero_changes: return "discard-zero-changes";
    }
    return "?";
}

std::string_view to_string(FailbackMode v) {
    switch (v) {
        case FailbackMode::manual: return "manual";
        case FailbackMode::automatic: return "automatic";
        case FailbackMode::scheduled: return "scheduled";
    }
    return "manual";
}

std::string_view to_string(WitnessKind v) { return v == WitnessKind::vmha ? "vmha" : "etcd"; }

std::string Finding::to_string() const {
    if (severity == Severity::warning) {
        return fmt::format("{}: {}: warning: {}", where.to_string(), key, message);
    }
    return fmt::format("{}: {}: {}", where.to_string(), key, message);
}

bool Findings::has_errors() const {
    for (const auto& f : items) {
        if (f.severity == Severity::error) return true;
    }
    return unreadable;
}

void Findings::error(SourceLocation where, std::string key, std::string message) {
    items.push_back({Severity::error, std::move(where), std::move(key), std::move(message)});
}

void Findings::warning(SourceLocation where, std::string key, std::string message) {
    items.push_back({Severity::warning, std::move(where), std::move(key), std::move(message)});
}

}  // namespace vmha::config
