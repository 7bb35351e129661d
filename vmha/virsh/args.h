// The command line as virsh 9.0 reads it (tools/virsh.c, tools/vsh.c), so that scripts written
// for virsh work unchanged:
//   vmha-virsh [GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS AND DATA]
// Global options stop at the first word that is not one (the command). A command's options may
// come anywhere after it, as "--name value" or "--name=value"; a bare word fills the next
// positional option (the domain); "--" makes every later word data. Mistakes are reported with
// virsh's own sentences ("command 'list' doesn't support option --al").
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace vmha::virsh {

inline constexpr const char* default_node_file = "/etc/vmha/vmha.yaml";

struct GlobalOptions {
    std::optional<std::string> connect;      // -c/--connect URI: only this connection
    bool quiet = false;                      // -q: no table headers, no trailing blank line
    bool readonly = false;                   // -r: accepted (every connection is read-only)
    bool help = false;                       // -h/--help
    bool version = false;                    // -v/-V/--version
    std::string config = default_node_file;  // --config: the node file (vmha's own option)
    std::optional<std::string> socket;       // --socket: vmhad's admin socket (vmha's own option)
};

// One option of a command, as virsh declares it (vshCmdOptDef).
struct OptionDef {
    enum class Kind { boolean, string, data };  // data: may be given positionally
    std::string_view name;
    Kind kind = Kind::boolean;
    bool required = false;
};

struct CommandDef {
    std::string_view name;
    std::vector<OptionDef> options;
};

// A parsed command: the options seen, with their values (booleans map to "").
struct Command {
    std::string name;
    std::map<std::string, std::string, std::less<>> values;

    bool has(std::string_view option) const { return values.contains(option); }
    const std::string* value(std::string_view option) const;
};

// Parsing failed: `message` is virsh's sentence (printed as "error: MESSAGE", exit status 1).
struct UsageError {
    std::string message;
};

struct GlobalParse {
    GlobalOptions options;
    std::vector<std::string> rest;  // the command and its words; empty when there is none
};

std::variant<GlobalParse, UsageError> parse_global(const std::vector<std::string>& argv);

// Parses the words after the command name against its definition, then checks that every
// required option was given.
std::variant<Command, UsageError> parse_command(const CommandDef& def,
                                                const std::vector<std::string>& words);

}  // namespace vmha::virsh
