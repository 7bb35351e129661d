// virsh 9.0's argument parsing, reproduced: getopt_long("+:c:d:e:hk:K:l:qrtvV") for the global
// options and vshCommandParse() + vshCommandCheckOpts() for a command's.
#include "args.h"

#include <algorithm>

#include <fmt/format.h>

namespace vmha::virsh {
namespace {

// Global options: the short letter (0 when there is none), the long name, and whether an
// argument follows. Those vmha-virsh has no use for are accepted and ignored, as scripts pass
// them (debug level, log file, escape character, keepalive).
struct GlobalDef {
    char letter;
    std::string_view name;
    bool takes_argument;
};
constexpr GlobalDef global_defs[] = {
    {'c', "connect", true},
    {'d', "debug", true},
    {'e', "escape", true},
    {'h', "help", false},
    {'k', "keepalive-interval", true},
    {'K', "keepalive-count", true},
    {'l', "log", true},
    {'q', "quiet", false},
    {'r', "readonly", false},
    {'v', "version", false},
    {'V', "", false},  // -V: the long version; only the letter
    {0, "config", true},
    {0, "socket", true},
};

const GlobalDef* find_letter(char c) {
    for (const auto& d : global_defs) {
        if (d.letter == c) return &d;
    }
    return nullptr;
}

const GlobalDef* find_long(std::string_view name) {
    for (const auto& d : global_defs) {
        if (!d.name.empty() && d.name == name) return &d;
    }
    return nullptr;
}

void apply(GlobalOptions& o, const GlobalDef& d, const std::string& arg) {
    switch (d.letter) {
        case 'c':
            o.connect = arg;
            return;
        case 'h':
            o.help = true;
            return;
        case 'q':
            o.quiet = true;
            return;
        case 'r':
            o.readonly = true;
            return;
        case 'v':
        case 'V':
            o.version = true;
            return;
        default:
            break;
    }
    if (d.name == "config") o.config = arg;
    if (d.name == "socket") o.socket = arg;
}

}  // namespace

const std::string* Command::value(std::string_view option) const {
    auto it = values.find(option);
    return it == values.end() ? nullptr : &it->second;
}

std::variant<GlobalParse, UsageError> parse_global(const std::vector<std::string>& argv) {
    GlobalParse result;
    std::size_t i = 1;
    while (i < argv.size()) {
        const std::string& word = argv[i];
        if (word == "--") {
            ++i;
            break;
        }
        if (word.size() < 2 || word[0] != '-') break;  // the command
        if (word[1] == '-') {
            const auto eq = word.find('=');
            const std::string name =
                word.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
            const GlobalDef* d = find_long(name);
            if (d == nullptr || (!d->takes_argument && eq != std::string::npos)) {
                return UsageError{fmt::format("unsupported option '{}'. See --help.", word)};
            }
            std::string arg;
            if (d->takes_argument) {
                if (eq != std::string::npos) {
                    arg = word.substr(eq + 1);
                } else if (i + 1 < argv.size()) {
                    arg = argv[++i];
                } else if (d->letter != 0) {
                    return UsageError{fmt::format("option '-{}'/'--{}' requires an argument",
                                                  d->letter, d->name)};
                } else {
                    return UsageError{fmt::format("option '--{}' requires an argument", d->name)};
                }
            }
            apply(result.options, *d, arg);
            ++i;
            continue;
        }
        // A cluster of short options: "-qr", "-cURI", "-c URI".
        for (std::size_t k = 1; k < word.size(); ++k) {
            const GlobalDef* d = find_letter(word[k]);
            if (d == nullptr)
                return UsageError{fmt::format("unsupported option '-{}'. See --help.", word[k])};
            if (!d->takes_argument) {
                apply(result.options, *d, "");
                continue;
            }
            std::string arg;
            if (k + 1 < word.size()) {
                arg = word.substr(k + 1);
            } else if (i + 1 < argv.size()) {
                arg = argv[++i];
            } else {
                return UsageError{
                    fmt::format("option '-{}'/'--{}' requires an argument", d->letter, d->name)};
            }
            apply(result.options, *d, arg);
            break;
        }
        ++i;
    }
    result.rest.assign(argv.begin() + static_cast<std::ptrdiff_t>(std::min(i, argv.size())),
                       argv.end());
    return result;
}

std::variant<Command, UsageError> parse_command(const CommandDef& def,
                                                const std::vector<std::string>& words) {
    Command cmd;
    cmd.name = std::string(def.name);
    bool data_only = false;
    auto find = [&](std::string_view name) -> const OptionDef* {
        for (const auto& o : def.options) {
            if (o.name == name) return &o;
        }
        return nullptr;
    };
    for (std::size_t i = 0; i < words.size(); ++i) {
        const std::string& word = words[i];
        if (!data_only && word.size() > 2 && word.starts_with("--")) {
            const auto eq = word.find('=');
            const std::string name =
                word.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
            const OptionDef* o = find(name);
            if (o == nullptr) {
                return UsageError{
                    fmt::format("command '{}' doesn't support option --{}", def.name, name)};
            }
            if (cmd.has(o->name))
                return UsageError{fmt::format("option --{} already seen", o->name)};
            if (o->kind == OptionDef::Kind::boolean) {
                if (eq != std::string::npos) {
                    return UsageError{fmt::format("invalid '=' after option --{}", o->name)};
                }
                cmd.values.emplace(std::string(o->name), "");
                continue;
            }
            std::string value;
            if (eq != std::string::npos) {
                value = word.substr(eq + 1);
            } else if (i + 1 < words.size()) {
                value = words[++i];
            } else {
                return UsageError{fmt::format("expected syntax: --{} <string>", o->name)};
            }
            cmd.values.emplace(std::string(o->name), std::move(value));
            continue;
        }
        if (word == "--") {
            data_only = true;
            continue;
        }
        // Data: the first positional option not given yet.
        const OptionDef* target = nullptr;
        for (const auto& o : def.options) {
            if (o.kind == OptionDef::Kind::data && !cmd.has(o.name)) {
                target = &o;
                break;
            }
        }
        if (target == nullptr) return UsageError{fmt::format("unexpected data '{}'", word)};
        cmd.values.emplace(std::string(target->name), word);
    }
    for (const auto& o : def.options) {
        if (o.required && !cmd.has(o.name)) {
            return UsageError{
                o.kind == OptionDef::Kind::data
                    ? fmt::format("command '{}' requires <{}> option", def.name, o.name)
                    : fmt::format("command '{}' requires --{} option", def.name, o.name)};
        }
    }
    return cmd;
}

}  // namespace vmha::virsh
