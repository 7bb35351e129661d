// The commands vmha-virsh answers, each printing exactly what virsh 9.0 prints for the same
// domain (tools/virsh-domain-monitor.c, tools/virsh-domain.c), plus `ha-status` and the `--ha`
// columns of `list`, which are vmha's own.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "args.h"
#include "inventory.h"

namespace vmha::virsh {

// stdout and stderr as virsh uses them: vshPrint, vshPrintExtra (not with -q) and vshError
// ("error: ..." on stderr, stdout flushed first so that 2>&1 keeps the order).
class Output {
  public:
    explicit Output(bool quiet) : quiet_(quiet) {}
    void print(std::string_view text) const;
    void extra(std::string_view text) const;
    void error(std::string_view message) const;
    void warning(std::string_view message) const;
    bool quiet() const { return quiet_; }

  private:
    static void to_stderr(std::string_view prefix, std::string_view message);
    bool quiet_;
};

// What vmhad said (or why it could not be asked), for the HA columns.
struct VmhadStatus {
    bool reached = false;
    std::string problem;    // when not reached
    nlohmann::json status;  // the status result: {"node", "modules": [...]}
    const nlohmann::json* module(const std::string& name) const;
};

struct Context {
    const GlobalOptions& options;
    const config::NodeSetup& setup;
    Inventory& inventory;
    const Output& out;
    std::string admin_socket;  // for the HA columns
};

// The definitions (options) of the commands implemented here, and of the refused ones.
const CommandDef* find_command(std::string_view name);

// Runs a parsed command; false when it failed (its error already printed).
bool run_command(Context& ctx, const Command& cmd);

// For a command vmha-virsh does not run: the refusal sentence, or nullopt if `name` is not a
// virsh command at all. `module` names the module when the domain is known ("MODULE" otherwise).
std::optional<std::string> refusal(std::string_view name, const std::string& module);

// The usage text of --help and `help`.
std::string usage_text();

}  // namespace vmha::virsh
