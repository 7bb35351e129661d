// vmha-virsh: virsh's read-only status commands for the VMs vmha keeps highly available, on
// both nodes, with virsh 9.0's output byte for byte (docs/vmha-virsh.md).
#include <clocale>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <libvirt/virterror.h>

#include <vmha/config/load.h>

#include "args.h"
#include "commands.h"
#include "inventory.h"

namespace {

using namespace vmha::virsh;

void silent(void*, virErrorPtr) {}

// The domain word a refused command was given (its first data word or --domain), if any.
std::string domain_word(const std::vector<std::string>& words) {
    for (std::size_t i = 1; i < words.size(); ++i) {
        if (words[i] == "--domain" && i + 1 < words.size()) return words[i + 1];
        if (words[i].starts_with("--domain=")) return words[i].substr(9);
    }
    for (std::size_t i = 1; i < words.size(); ++i) {
        if (!words[i].starts_with("-")) return words[i];
    }
    return {};
}

// Loads the node file and its modules, printing every finding; nullopt when unusable.
std::optional<vmha::config::NodeSetup> load_setup(const GlobalOptions& options, const Output& out,
                                                  bool report) {
    vmha::config::Findings findings;
    auto setup = vmha::config::load_node_setup(options.config, findings);
    if (!setup && report) {
        for (const auto& f : findings.items) {
            if (f.severity == vmha::config::Severity::error) out.error(f.to_string());
        }
        if (findings.items.empty()) {
            out.error(fmt::format("cannot load the node file '{}'", options.config));
        }
    }
    return setup;
}

int run(const std::vector<std::string>& argv) {
    auto parsed = parse_global(argv);
    if (auto* e = std::get_if<UsageError>(&parsed)) {
        Output(false).error(e->message);
        return EXIT_FAILURE;
    }
    auto& global = std::get<GlobalParse>(parsed);
    const GlobalOptions& options = global.options;
    const Output out(options.quiet);
    if (options.help) {
        out.print(usage_text());
        return EXIT_SUCCESS;
    }
    if (options.version) {
        out.print(fmt::format("{}\n", VMHA_VERSION));
        return EXIT_SUCCESS;
    }
    if (global.rest.empty()) {
        out.error("vmha-virsh has no interactive shell: give a command (see --help)");
        return EXIT_FAILURE;
    }
    const std::string& name = global.rest.front();
    if (name == "help") {
        out.print(usage_text());
        return EXIT_SUCCESS;
    }
    const CommandDef* def = find_command(name);
    if (def == nullptr) {
        std::string module = "MODULE";
        if (auto setup = load_setup(options, out, false)) {
            const std::string word = domain_word(global.rest);
            for (const auto& m : setup->modules) {
                if (!word.empty() && (m.vm.name == word || m.name == word)) module = m.name;
            }
        }
        if (auto refused = refusal(name, module)) {
            out.error(*refused);
        } else {
            out.error(fmt::format("unknown command: '{}'", name));
        }
        return EXIT_FAILURE;
    }
    auto command =
        parse_command(*def, std::vector<std::string>(global.rest.begin() + 1, global.rest.end()));
    if (auto* e = std::get_if<UsageError>(&command)) {
        out.error(e->message);
        return EXIT_FAILURE;
    }
    auto setup = load_setup(options, out, true);
    if (!setup) return EXIT_FAILURE;
    std::string failure;
    auto inventory = Inventory::gather(*setup, options.connect, failure);
    if (!inventory) {
        out.error("failed to connect to the hypervisor");
        out.error(failure);
        return EXIT_FAILURE;
    }
    std::string admin_socket = setup->node.admin_socket;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): one thread
    if (const char* env = std::getenv("VMHA_ADMIN_SOCKET"); env != nullptr && *env != '\0')
        admin_socket = env;
    if (options.socket) admin_socket = *options.socket;
    Context ctx{options, *setup, *inventory, out, admin_socket};
    const bool ok = run_command(ctx, std::get<Command>(command));
    if (!ok) {
        // vshReportError(): libvirt's own sentence, when a libvirt call failed.
        if (std::string message = last_libvirt_message(); !message.empty()) out.error(message);
        virResetLastError();
    }
    out.extra("\n");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe,cert-err33-c): one thread; "C" if it fails
    std::setlocale(LC_ALL, "");  // as virsh: display widths of the table cells in this locale
    virSetErrorFunc(nullptr, silent);
    if (virInitialize() < 0) {
        Output(false).error("failed to initialize libvirt");
        return EXIT_FAILURE;
    }
    return run(std::vector<std::string>(argv, argv + argc));
}
