// virsh 9.0's read-only domain commands over the HA-managed domains. Each function follows its
// virsh counterpart line by line (same libvirt calls, same formats, same error sentences), so
// that the output is the same byte for byte.
#include "commands.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <libvirt/virterror.h>

#include "../cli/admin_client.h"
#include "domain_xml.h"
#include "table.h"

namespace vmha::virsh {

void Output::print(std::string_view text) const {
    (void)std::fwrite(text.data(), 1, text.size(), stdout);
}

void Output::extra(std::string_view text) const {
    if (!quiet_) print(text);
}

void Output::error(std::string_view message) const {
    to_stderr("error: ", message);
}

void Output::warning(std::string_view message) const {
    to_stderr("warning: ", message);
}

void Output::to_stderr(std::string_view prefix, std::string_view message) {
    (void)std::fflush(stdout);
    const std::string line = std::string(prefix).append(message).append("\n");
    (void)std::fwrite(line.data(), 1, line.size(), stderr);
    (void)std::fflush(stderr);
}

const nlohmann::json* VmhadStatus::module(const std::string& name) const {
    if (!reached || !status.is_object() || !status.contains("modules") ||
        !status["modules"].is_array()) {
        return nullptr;
    }
    for (const auto& m : status["modules"]) {
        if (m.is_object() && m.value("name", "") == name) return &m;
    }
    return nullptr;
}

namespace {

using Kind = OptionDef::Kind;

const OptionDef domain_option{"domain", Kind::data, true};

const std::vector<CommandDef>& command_defs() {
    static const std::vector<CommandDef> defs = {
        {"list",
         {{"inactive"},
          {"all"},
          {"transient"},
          {"persistent"},
          {"with-snapshot"},
          {"without-snapshot"},
          {"with-checkpoint"},
          {"without-checkpoint"},
          {"state-running"},
          {"state-paused"},
          {"state-shutoff"},
          {"state-other"},
          {"autostart"},
          {"no-autostart"},
          {"with-managed-save"},
          {"without-managed-save"},
          {"uuid"},
          {"name"},
          {"id"},
          {"table"},
          {"managed-save"},
          {"title"},
          {"ha"}}},
        {"domstate", {domain_option, {"reason"}}},
        {"dominfo", {domain_option}},
        {"domblklist", {domain_option, {"inactive"}, {"details"}}},
        {"domid", {domain_option}},
        {"domuuid", {domain_option}},
        {"domname", {domain_option}},
        {"ha-status", {{"domain", Kind::data, false}}},
        {"help", {{"command", Kind::data, false}}},
    };
    return defs;
}

// ---- states, as virsh names them (virshDomainStateToString and friends) ----

std::string_view pick(std::initializer_list<std::string_view> names, int i,
                      std::string_view fallback) {
    if (i < 0 || static_cast<std::size_t>(i) >= names.size()) return fallback;
    return names.begin()[i];
}

std::string_view state_name(int state) {
    return pick({"no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed",
                 "pmsuspended"},
                state, "no state");
}

std::string_view reason_name(int state, int reason) {
    switch (state) {
        case VIR_DOMAIN_RUNNING:
            return pick({"unknown", "booted", "migrated", "restored", "from snapshot", "unpaused",
                         "migration canceled", "save canceled", "event wakeup", "crashed",
                         "post-copy", "post-copy failed"},
                        reason, "unknown");
        case VIR_DOMAIN_PAUSED:
            return pick({"unknown", "user", "migrating", "saving", "dumping", "I/O error",
                         "watchdog", "from snapshot", "shutting down", "creating snapshot",
                         "crashed", "starting up", "post-copy", "post-copy failed", "api error"},
                        reason, "unknown");
        case VIR_DOMAIN_SHUTDOWN:
            return pick({"unknown", "user"}, reason, "unknown");
        case VIR_DOMAIN_SHUTOFF:
            return pick({"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved",
                         "failed", "from snapshot", "daemon"},
                        reason, "unknown");
        case VIR_DOMAIN_CRASHED:
            return pick({"unknown", "panicked"}, reason, "unknown");
        default:  // nostate, blocked, pmsuspended: only "unknown"
            return "unknown";
    }
}

// virshDomainState(): the state, and the reason when asked; -1 on failure.
int domain_state(virDomainPtr dom, int* reason) {
    int state = 0;
    int r = 0;
    if (virDomainGetState(dom, &state, &r, 0) < 0) return -1;
    if (reason != nullptr) *reason = r;
    return state;
}

std::string uuid_of(virDomainPtr dom) {
    char uuid[VIR_UUID_STRING_BUFLEN] = "";
    if (virDomainGetUUIDString(dom, uuid) < 0) return {};
    return uuid;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// ---- domain lookup: virshLookupDomainBy() over the HA-managed domains ----

enum LookupBy : unsigned { by_id = 1, by_uuid = 2, by_name = 4 };

HaDomain* lookup(Context& ctx, const std::string& word, unsigned by) {
    auto& domains = ctx.inventory.domains();
    if (by & by_id) {
        int id = -1;
        const char* end = word.data() + word.size();
        auto [ptr, ec] = std::from_chars(word.data(), end, id);
        if (ec == std::errc() && ptr == end && id >= 0) {
            for (auto& d : domains) {
                if (d.copy().active &&
                    virDomainGetID(d.copy().dom.get()) == static_cast<unsigned>(id))
                    return &d;
            }
        }
    }
    if ((by & by_uuid) && word.size() == VIR_UUID_STRING_BUFLEN - 1) {
        for (auto& d : domains) {
            if (lower(uuid_of(d.copy().dom.get())) == lower(word)) return &d;
        }
    }
    if (by & by_name) {
        for (auto& d : domains) {
            if (d.name == word) return &d;
        }
    }
    virResetLastError();
    ctx.out.error(fmt::format("failed to get domain '{}'", word));
    return nullptr;
}

HaDomain* domain_arg(Context& ctx, const Command& cmd, unsigned by = by_id | by_uuid | by_name) {
    return lookup(ctx, *cmd.value("domain"), by);
}

// ---- vmhad, for the HA columns ----

VmhadStatus ask_status(const Context& ctx);

std::string ha_cell(const VmhadStatus& vmhad, const std::string& module) {
    if (!vmhad.reached) return "vmhad not running";
    const nlohmann::json* m = vmhad.module(module);
    if (m == nullptr) return "not loaded";
    return fmt::format("{} {}", m->value("state", "?"), m->value("data_state", "?"));
}

// ---- list ----

bool cmd_list(Context& ctx, const Command& cmd) {
    const bool managed = cmd.has("managed-save");
    const bool opt_title = cmd.has("title");
    bool opt_table = cmd.has("table");
    const bool opt_uuid = cmd.has("uuid");
    const bool opt_name = cmd.has("name");
    const bool opt_id = cmd.has("id");
    const bool opt_ha = cmd.has("ha");

    unsigned flags = VIR_CONNECT_LIST_DOMAINS_ACTIVE;
    if (cmd.has("inactive") || cmd.has("state-shutoff")) flags = VIR_CONNECT_LIST_DOMAINS_INACTIVE;
    if (cmd.has("all")) flags = VIR_CONNECT_LIST_DOMAINS_INACTIVE | VIR_CONNECT_LIST_DOMAINS_ACTIVE;
    const std::pair<const char*, unsigned> filters[] = {
        {"persistent", VIR_CONNECT_LIST_DOMAINS_PERSISTENT},
        {"transient", VIR_CONNECT_LIST_DOMAINS_TRANSIENT},
        {"with-managed-save", VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE},
        {"without-managed-save", VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE},
        {"autostart", VIR_CONNECT_LIST_DOMAINS_AUTOSTART},
        {"no-autostart", VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART},
        {"with-snapshot", VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT},
        {"without-snapshot", VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT},
        {"with-checkpoint", VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT},
        {"without-checkpoint", VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT},
        {"state-running", VIR_CONNECT_LIST_DOMAINS_RUNNING},
        {"state-paused", VIR_CONNECT_LIST_DOMAINS_PAUSED},
        {"state-shutoff", VIR_CONNECT_LIST_DOMAINS_SHUTOFF},
        {"state-other", VIR_CONNECT_LIST_DOMAINS_OTHER},
    };
    for (const auto& [name, bit] : filters) {
        if (cmd.has(name)) flags |= bit;
    }
    if (opt_table && opt_name) {
        ctx.out.error("Options --table and --name are mutually exclusive");
        return false;
    }
    if (opt_table && opt_uuid) {
        ctx.out.error("Options --table and --uuid are mutually exclusive");
        return false;
    }
    if (opt_table && opt_id) {
        ctx.out.error("Options --table and --id are mutually exclusive");
        return false;
    }
    if (!opt_uuid && !opt_name && !opt_id) opt_table = true;

    // virshDomainListCollect(): the filters of virConnectListAllDomains, one group at a time.
    auto match = [&](unsigned group) {
        return (flags & group) != 0;
    };
    auto has = [&](unsigned bit) {
        return (flags & bit) != 0;
    };
    std::vector<HaDomain*> list;
    for (auto& d : ctx.inventory.domains()) {
        virDomainPtr dom = d.copy().dom.get();
        if (match(VIR_CONNECT_LIST_DOMAINS_ACTIVE | VIR_CONNECT_LIST_DOMAINS_INACTIVE)) {
            const bool active = virDomainIsActive(dom) == 1;
            if (!((has(VIR_CONNECT_LIST_DOMAINS_ACTIVE) && active) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_INACTIVE) && !active))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_PERSISTENT | VIR_CONNECT_LIST_DOMAINS_TRANSIENT)) {
            const int persistent = virDomainIsPersistent(dom);
            if (persistent < 0) {
                ctx.out.error("Failed to get domain persistence info");
                return false;
            }
            if (!((has(VIR_CONNECT_LIST_DOMAINS_PERSISTENT) && persistent) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_TRANSIENT) && !persistent))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_RUNNING | VIR_CONNECT_LIST_DOMAINS_PAUSED |
                  VIR_CONNECT_LIST_DOMAINS_SHUTOFF | VIR_CONNECT_LIST_DOMAINS_OTHER)) {
            const int state = domain_state(dom, nullptr);
            if (state < 0) {
                ctx.out.error("Failed to get domain state");
                return false;
            }
            const bool other = state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED &&
                               state != VIR_DOMAIN_SHUTOFF;
            if (!((has(VIR_CONNECT_LIST_DOMAINS_RUNNING) && state == VIR_DOMAIN_RUNNING) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_PAUSED) && state == VIR_DOMAIN_PAUSED) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_SHUTOFF) && state == VIR_DOMAIN_SHUTOFF) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_OTHER) && other))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_AUTOSTART | VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART)) {
            int autostart = 0;
            if (virDomainGetAutostart(dom, &autostart) < 0) {
                ctx.out.error("Failed to get domain autostart state");
                return false;
            }
            if (!((has(VIR_CONNECT_LIST_DOMAINS_AUTOSTART) && autostart) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART) && !autostart))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE | VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE)) {
            const int saved = virDomainHasManagedSaveImage(dom, 0);
            if (saved < 0) {
                ctx.out.error("Failed to check for managed save image");
                return false;
            }
            if (!((has(VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE) && saved) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE) && !saved))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT | VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT)) {
            const int n = virDomainSnapshotNum(dom, 0);
            if (n < 0) {
                ctx.out.error("Failed to get snapshot count");
                return false;
            }
            if (!((has(VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT) && n > 0) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT) && n == 0))) {
                continue;
            }
        }
        if (match(VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT |
                  VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT)) {
            const int n = virDomainListAllCheckpoints(dom, nullptr, 0);
            if (n < 0) {
                ctx.out.error("Failed to get checkpoint count");
                return false;
            }
            if (!((has(VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT) && n > 0) ||
                  (has(VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT) && n == 0))) {
                continue;
            }
        }
        list.push_back(&d);
    }

    // virshDomainSorter(): running domains by id, then the others by name, case-insensitively.
    constexpr unsigned inactive = static_cast<unsigned>(-1);
    std::stable_sort(list.begin(), list.end(), [](const HaDomain* a, const HaDomain* b) {
        const unsigned ida = virDomainGetID(a->copy().dom.get());
        const unsigned idb = virDomainGetID(b->copy().dom.get());
        if (ida == inactive && idb == inactive)
            return ::strcasecmp(a->name.c_str(), b->name.c_str()) < 0;
        if (ida != inactive && idb != inactive) return ida < idb;
        return ida != inactive;
    });

    std::optional<VmhadStatus> vmhad;
    std::vector<std::string> header;
    if (opt_table) {
        header = {"Id", "Name", "State"};
        if (opt_title) header.emplace_back("Title");
        if (opt_ha) {
            header.emplace_back("Node");
            header.emplace_back("HA");
            vmhad = ask_status(ctx);
        }
    }
    Table table(header.empty() ? std::vector<std::string>{""} : header);
    for (HaDomain* d : list) {
        virDomainPtr dom = d->copy().dom.get();
        const unsigned id = virDomainGetID(dom);
        const std::string id_text = id != inactive ? fmt::format("{}", static_cast<int>(id)) : "-";
        if (opt_table) {
            const int state = domain_state(dom, nullptr);
            if (state < 0) continue;  // removed meanwhile
            std::string state_text(state_name(state));
            if (managed && state == VIR_DOMAIN_SHUTOFF &&
                virDomainHasManagedSaveImage(dom, 0) > 0) {
                state_text = "saved";
            }
            std::vector<std::string> row{id_text, virDomainGetName(dom), state_text};
            if (opt_title) {
                auto title = domain_title(dom);
                if (!title) return false;
                row.push_back(*title);
            }
            if (opt_ha) {
                row.push_back(d->copy().node);
                row.push_back(ha_cell(*vmhad, d->module));
            }
            table.add_row(std::move(row));
        } else {
            std::string line;
            const char* sep = "";
            if (opt_uuid) {
                std::string uuid = uuid_of(dom);
                if (uuid.empty()) {
                    ctx.out.error("Failed to get domain's UUID");
                    return false;
                }
                line += uuid;
                sep = " ";
            }
            if (opt_id) {
                if (id == inactive && !opt_uuid && !opt_name) continue;
                line += sep + id_text;
                sep = " ";
            }
            if (opt_name) line += sep + std::string(virDomainGetName(dom));
            ctx.out.print(line + "\n");
        }
    }
    if (opt_table) ctx.out.print(table.render(!ctx.out.quiet()));
    return true;
}

// ---- domstate, dominfo, domid, domuuid, domname ----

bool cmd_domstate(Context& ctx, const Command& cmd) {
    HaDomain* d = domain_arg(ctx, cmd);
    if (d == nullptr) return false;
    int reason = 0;
    const int state = domain_state(d->copy().dom.get(), &reason);
    if (state < 0) return false;
    if (cmd.has("reason")) {
        ctx.out.print(fmt::format("{} ({})\n", state_name(state), reason_name(state, reason)));
    } else {
        ctx.out.print(fmt::format("{}\n", state_name(state)));
    }
    return true;
}

std::string label(std::string_view name, std::string_view value) {
    return fmt::format("{:<15} {}\n", name, value);
}

bool cmd_dominfo(Context& ctx, const Command& cmd) {
    HaDomain* d = domain_arg(ctx, cmd);
    if (d == nullptr) return false;
    virDomainPtr dom = d->copy().dom.get();
    bool ok = true;
    const unsigned id = virDomainGetID(dom);
    ctx.out.print(id == static_cast<unsigned>(-1)
                      ? label("Id:", "-")
                      : label("Id:", fmt::format("{}", static_cast<int>(id))));
    ctx.out.print(label("Name:", virDomainGetName(dom)));
    if (std::string uuid = uuid_of(dom); !uuid.empty()) ctx.out.print(label("UUID:", uuid));
    if (char* os = virDomainGetOSType(dom)) {
        ctx.out.print(label("OS Type:", os));
        std::free(os);
    }
    virDomainInfo info{};
    if (virDomainGetInfo(dom, &info) == 0) {
        ctx.out.print(label("State:", state_name(info.state)));
        ctx.out.print(label("CPU(s):", fmt::format("{}", static_cast<int>(info.nrVirtCpu))));
        if (info.cpuTime != 0) {
            const double used = static_cast<double>(info.cpuTime) / 1000000000.0;
            ctx.out.print(label("CPU time:", fmt::format("{:.1f}s", used)));
        }
        if (info.maxMem != UINT_MAX) {
            ctx.out.print(label("Max memory:", fmt::format("{} KiB", info.maxMem)));
        } else {
            ctx.out.print(label("Max memory:", "no limit"));
        }
        ctx.out.print(label("Used memory:", fmt::format("{} KiB", info.memory)));
    } else {
        ok = false;
    }
    const int persistent = virDomainIsPersistent(dom);
    ctx.out.print(label("Persistent:", persistent < 0 ? "unknown" : persistent ? "yes" : "no"));
    int autostart = 0;
    if (virDomainGetAutostart(dom, &autostart) == 0) {
        ctx.out.print(label("Autostart:", autostart ? "enable" : "disable"));
    }
    const int saved = virDomainHasManagedSaveImage(dom, 0);
    ctx.out.print(label("Managed save:", saved < 0 ? "unknown" : saved ? "yes" : "no"));

    virSecurityModel model{};
    if (virNodeGetSecurityModel(d->copy().conn, &model) == -1) {
        const virError* e = virGetLastError();
        if (e == nullptr || e->code != VIR_ERR_NO_SUPPORT) return false;
        virResetLastError();
    } else if (model.model[0] != '\0') {
        ctx.out.print(label("Security model:", model.model));
        ctx.out.print(label("Security DOI:", model.doi));
        virSecurityLabel seclabel{};
        if (virDomainGetSecurityLabel(dom, &seclabel) == -1) return false;
        if (seclabel.label[0] != '\0') {
            ctx.out.print(label("Security label:",
                                fmt::format("{} ({})", seclabel.label,
                                            seclabel.enforcing ? "enforcing" : "permissive")));
        }
    }
    char** messages = nullptr;
    const int n = virDomainGetMessages(dom, &messages, 0);
    if (n > 0) {
        for (int i = 0; messages[i] != nullptr; ++i) {
            ctx.out.print(label(i == 0 ? "Messages:" : "", messages[i]));
        }
    }
    if (messages != nullptr) {
        for (int i = 0; messages[i] != nullptr; ++i) std::free(messages[i]);
        std::free(messages);
    }
    if (n < 0) virResetLastError();  // virsh ignores a failure here
    return ok;
}

bool cmd_domid(Context& ctx, const Command& cmd) {
    HaDomain* d = domain_arg(ctx, cmd, by_name | by_uuid);
    if (d == nullptr) return false;
    const unsigned id = virDomainGetID(d->copy().dom.get());
    ctx.out.print(id == static_cast<unsigned>(-1) ? std::string("-\n")
                                                  : fmt::format("{}\n", static_cast<int>(id)));
    return true;
}

bool cmd_domuuid(Context& ctx, const Command& cmd) {
    HaDomain* d = domain_arg(ctx, cmd, by_name | by_id);
    if (d == nullptr) return false;
    std::string uuid = uuid_of(d->copy().dom.get());
    if (uuid.empty()) {
        ctx.out.error("failed to get domain UUID");
        return false;
    }
    ctx.out.print(uuid + "\n");
    return true;
}

bool cmd_domname(Context& ctx, const Command& cmd) {
    HaDomain* d = domain_arg(ctx, cmd, by_id | by_uuid);
    if (d == nullptr) return false;
    ctx.out.print(fmt::format("{}\n", virDomainGetName(d->copy().dom.get())));
    return true;
}

// ---- domblklist ----

bool cmd_domblklist(Context& ctx, const Command& cmd) {
    const bool details = cmd.has("details");
    HaDomain* d = domain_arg(ctx, cmd);
    if (d == nullptr) return false;
    const unsigned flags = cmd.has("inactive") ? VIR_DOMAIN_XML_INACTIVE : 0;
    char* xml = virDomainGetXMLDesc(d->copy().dom.get(), flags);
    if (xml == nullptr) return false;
    std::string text(xml);
    std::free(xml);
    auto disks = disks_of(text);
    if (!disks) {
        ctx.out.error("failed to parse the domain XML");
        return false;
    }
    Table table(details ? std::vector<std::string>{"Type", "Device", "Target", "Source"}
                        : std::vector<std::string>{"Target", "Source"});
    for (const auto& disk : *disks) {
        if (details && (!disk.type || !disk.device)) {
            ctx.out.print("unable to query block list details");
            return false;
        }
        if (!disk.target) {
            ctx.out.error("unable to query block list");
            return false;
        }
        if (disk.type == "nvme" && !disk.source) {
            ctx.out.error("Unable to query NVMe disk address");
            return false;
        }
        const std::string source = disk.source.value_or("-");
        if (details) {
            table.add_row({*disk.type, *disk.device, *disk.target, source});
        } else {
            table.add_row({*disk.target, source});
        }
    }
    ctx.out.print(table.render(!ctx.out.quiet()));
    return true;
}

// ---- ha-status ----

bool cmd_ha_status(Context& ctx, const Command& cmd) {
    const std::string* only = cmd.value("domain");
    const VmhadStatus vmhad = ask_status(ctx);
    bool ok = true;
    for (const auto& u : ctx.inventory.unreachable()) {
        ctx.out.warning(fmt::format("node '{}': cannot reach the hypervisor at '{}': {}", u.node,
                                    u.uri, u.message));
    }
    if (!vmhad.reached) {
        ctx.out.warning(fmt::format("vmhad is not running: cannot ask '{}': {}", ctx.admin_socket,
                                    vmhad.problem));
    }
    Table table({"Module", "Domain", "Node", "State", "HA", "Data", "Peer"});
    bool found = only == nullptr;
    auto peer_cell = [&](const std::string& module) -> std::string {
        const nlohmann::json* m = vmhad.module(module);
        if (m == nullptr || !m->contains("peer") || !(*m)["peer"].is_object()) return "-";
        const auto& p = (*m)["peer"];
        return fmt::format("{} {} {}", p.value("node", "?"), p.value("state", "?"),
                           p.value("data_state", "?"));
    };
    auto data_cell = [&](const std::string& module) -> std::string {
        const nlohmann::json* m = vmhad.module(module);
        return m == nullptr ? "-" : m->value("data_state", "-");
    };
    for (const auto& module : ctx.setup.modules) {
        if (only != nullptr && *only != module.name && *only != module.vm.name) continue;
        found = true;
        const HaDomain* d = nullptr;
        for (const auto& h : ctx.inventory.domains()) {
            if (h.module == module.name) d = &h;
        }
        std::string node = "-";
        std::string state = "undefined";
        if (d != nullptr) {
            node = d->copy().node;
            const int s = domain_state(d->copy().dom.get(), nullptr);
            state = s < 0 ? "unknown" : std::string(state_name(s));
            const auto active = d->active_nodes();
            if (active.size() > 1) {
                std::string nodes;
                for (const auto& n : active) nodes += (nodes.empty() ? "" : ", ") + n;
                ctx.out.error(
                    fmt::format("domain '{}' of module '{}' is active on several nodes: {}",
                                d->name, module.name, nodes));
                node = nodes;
                ok = false;
            }
        }
        table.add_row({module.name, module.vm.name, node, state, ha_cell(vmhad, module.name),
                       data_cell(module.name), peer_cell(module.name)});
    }
    if (!found) {
        ctx.out.error(fmt::format("failed to get domain '{}'", *only));
        return false;
    }
    ctx.out.print(table.render(!ctx.out.quiet()));
    return ok;
}

}  // namespace

namespace {

VmhadStatus ask_status(const Context& ctx) {
    VmhadStatus s;
    auto reply = cli::ask_vmhad(ctx.admin_socket, {{"verb", "status"}}, std::chrono::seconds(5));
    if (!reply.reached) {
        s.problem = reply.problem;
        return s;
    }
    if (!reply.body.is_object() || !reply.body.value("ok", false)) {
        s.problem = reply.body.is_object() ? reply.body.value("error", "no status") : "no status";
        return s;
    }
    s.reached = true;
    s.status = reply.body.value("result", nlohmann::json::object());
    return s;
}

// The virsh commands that change something, and the vmha verb that does it for an HA-managed
// VM (docs/operator-guide.md). vmha decides where a module's VM runs, so starting, stopping or
// moving it behind vmha's back would be undone or, worse, start it on both nodes.
struct Refused {
    std::string_view command;
    std::string_view use;  // "{}" is the module
};
constexpr Refused refused_commands[] = {
    {"start", "vmha start {}"},
    {"create", "vmha start {}"},
    {"resume", "vmha start {}"},
    {"autostart", "vmha start {}"},
    {"shutdown", "vmha stop {}"},
    {"destroy", "vmha stop {}"},
    {"suspend", "vmha stop {}"},
    {"managedsave", "vmha stop {}"},
    {"save", "vmha stop {}"},
    {"restore", "vmha start {}"},
    {"dompmsuspend", "vmha stop {}"},
    {"dompmwakeup", "vmha start {}"},
    {"reboot", "vmha restart {}"},
    {"reset", "vmha restart {}"},
    {"migrate", "vmha swap {}"},
    {"migrate-setmaxdowntime", "vmha swap {}"},
    {"migrate-setspeed", "vmha swap {}"},
    {"migrate-postcopy", "vmha swap {}"},
    {"define", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"undefine", "the module file (vmha stops managing {} when it is removed)"},
    {"edit", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"domrename", "the module file's vm.name"},
    {"setmem", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"setmaxmem", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"setvcpus", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"attach-disk", "the module file's disks, then 'vmha restart {}'"},
    {"detach-disk", "the module file's disks, then 'vmha restart {}'"},
    {"attach-device", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"detach-device", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"attach-interface", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"detach-interface", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"update-device", "the module file's vm.domain_xml, then 'vmha restart {}'"},
    {"blockcopy", "'vmha resync {}' (imagesyncd replicates the disks)"},
    {"blockcommit", "'vmha resync {}' (imagesyncd replicates the disks)"},
    {"blockpull", "'vmha resync {}' (imagesyncd replicates the disks)"},
    {"blockresize", "the module file's disks, then 'vmha restart {}'"},
    {"snapshot-create",
     "'vmha verify {}' or 'vmha resync {}' (imagesyncd replicates the disks; snapshots would fork "
     "them)"},
    {"snapshot-create-as",
     "'vmha verify {}' or 'vmha resync {}' (imagesyncd replicates the disks; snapshots would fork "
     "them)"},
    {"snapshot-revert",
     "'vmha verify {}' or 'vmha resync {}' (imagesyncd replicates the disks; snapshots would fork "
     "them)"},
    {"snapshot-delete", "'vmha status {}'"},
    {"inject-nmi", "'vmha restart {}'"},
    {"send-key", "'vmha restart {}'"},
    {"console", "'vmha status {}' (vmha-virsh only reads)"},
};

// virsh commands that only read, which vmha-virsh does not reproduce.
constexpr std::string_view other_virsh_commands[] = {
    "dumpxml",
    "domiflist",
    "domifaddr",
    "domifstat",
    "domblkinfo",
    "domblkstat",
    "domblkerror",
    "domcontrol",
    "domjobinfo",
    "dommemstat",
    "domstats",
    "domtime",
    "domhostname",
    "domdisplay",
    "vcpuinfo",
    "vcpucount",
    "vncdisplay",
    "schedinfo",
    "memtune",
    "blkiotune",
    "numatune",
    "desc",
    "metadata",
    "nodeinfo",
    "hostname",
    "uri",
    "version",
    "capabilities",
    "sysinfo",
    "net-list",
    "pool-list",
    "vol-list",
    "snapshot-list",
    "snapshot-info",
    "checkpoint-list",
    "domfsinfo",
    "guestinfo",
    "event",
    "qemu-monitor-command",
};

}  // namespace

const CommandDef* find_command(std::string_view name) {
    for (const auto& def : command_defs()) {
        if (def.name == name) return &def;
    }
    return nullptr;
}

bool run_command(Context& ctx, const Command& cmd) {
    if (cmd.name == "list") return cmd_list(ctx, cmd);
    if (cmd.name == "domstate") return cmd_domstate(ctx, cmd);
    if (cmd.name == "dominfo") return cmd_dominfo(ctx, cmd);
    if (cmd.name == "domblklist") return cmd_domblklist(ctx, cmd);
    if (cmd.name == "domid") return cmd_domid(ctx, cmd);
    if (cmd.name == "domuuid") return cmd_domuuid(ctx, cmd);
    if (cmd.name == "domname") return cmd_domname(ctx, cmd);
    if (cmd.name == "ha-status") return cmd_ha_status(ctx, cmd);
    internal_error(fmt::format("command \"{}\" has a definition but no implementation", cmd.name));
}

std::optional<std::string> refusal(std::string_view name, const std::string& module) {
    for (const auto& r : refused_commands) {
        if (r.command != name) continue;
        std::string use(r.use);
        for (auto at = use.find("{}"); at != std::string::npos;
             at = use.find("{}", at + module.size())) {
            use.replace(at, 2, module);
        }
        if (r.use.starts_with("vmha ")) {
            return fmt::format("vmha-virsh is read-only: use '{}'", use);
        }
        return fmt::format("vmha-virsh is read-only: use {}", use);
    }
    for (const auto& c : other_virsh_commands) {
        if (c == name) {
            return fmt::format(
                "vmha-virsh does not implement '{}': use 'virsh -r -c URI {}' on the node "
                "that runs the domain ('vmha-virsh ha-status' tells which)",
                name, name);
        }
    }
    return std::nullopt;
}

std::string usage_text() {
    return R"(vmha-virsh: the read-only virsh commands, for the VMs that vmha keeps highly available.

Usage: vmha-virsh [OPTIONS] COMMAND [ARGS]

Options:
  -c, --connect URI    ask only this hypervisor (still only HA-managed domains)
  -q, --quiet          no table headers, no blank line after the output
  -r, --readonly       accepted; every connection is read-only anyway
  -h, --help           this text
  -v, --version        vmha's version
  --config FILE        the node file (default /etc/vmha/vmha.yaml); its modules_dir names the
                       HA-managed domains and the two nodes' hypervisor URIs
  --socket PATH        vmhad's admin socket (default: the node file's admin_socket)
  -d, -e, -k, -K, -l   accepted and ignored (virsh's debug, escape, keepalive and log options)

Commands (output byte for byte as virsh 9.0's):
  list [--all] [--inactive] [--state-running] [--state-paused] [--state-shutoff]
       [--state-other] [--persistent] [--transient] [--autostart] [--no-autostart]
       [--with-managed-save] [--without-managed-save] [--with-snapshot] [--without-snapshot]
       [--with-checkpoint] [--without-checkpoint] [--name] [--uuid] [--id] [--table]
       [--managed-save] [--title] [--ha]
  domstate DOMAIN [--reason]
  dominfo DOMAIN
  domblklist DOMAIN [--inactive] [--details]
  domid DOMAIN          domuuid DOMAIN          domname DOMAIN
vmha's own:
  list --ha             adds the columns Node (where the copy shown is) and HA (vmhad's state)
  ha-status [DOMAIN]    per module: domain, node, state, vmhad's state, data state, peer

Each domain is looked for on both nodes of its module; the copy shown is the one that runs
(running or paused), else this node's. Commands that change a domain are refused with the vmha
verb to use (start, stop, restart, swap, ...). Exit status: 0 success, 1 failure (as virsh).
See docs/vmha-virsh.md.
)";
}

}  // namespace vmha::virsh
