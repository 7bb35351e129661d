// Loading and checking configuration files.
//
// Every function here collects *all* findings instead of stopping at the first, each located
// as file:line:column with the key's path (e.g. "checkers[1].action") and a reason a user can
// act on. Errors make a file (or a set of files) invalid; warnings do not.
//
// Checks that need several files at once — a module name or disk path used twice, a port used
// by two modules on one node, more than 32 modules on a node — run in check_set().
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <vmha/config/config.h>

namespace vmha::config {

enum class Severity { error, warning };

struct Finding {
    Severity severity = Severity::error;
    SourceLocation where;
    std::string key;      // dotted path of the key, e.g. "heartbeat.paths[0].port"
    std::string message;  // the reason, a sentence without a trailing period

    // "file:line:column: key: reason" (warnings: "file:line:column: key: warning: reason").
    std::string to_string() const;
};

struct Findings {
    std::vector<Finding> items;
    bool unreadable = false;  // some file could not be read at all

    bool has_errors() const;
    void error(SourceLocation where, std::string key, std::string message);
    void warning(SourceLocation where, std::string key, std::string message);
};

enum class FileKind { module, node, unknown };

struct LoadedFile {
    std::string path;
    FileKind kind = FileKind::unknown;
    bool valid = false;            // no error-level finding in this file
    std::optional<Module> module;  // kind == module: what could be parsed (complete if valid)
    std::optional<Node> node;      // kind == node: likewise
};

// Parses one file's text (the name is only used in findings) and decides by its top-level key
// ("module:" or "node:") which kind it is. Findings are appended.
LoadedFile parse_file(const std::string& file_name, const std::string& text, Findings& findings);

// Reads and parses a file; an unreadable file sets findings.unreadable.
LoadedFile load_file(const std::string& path, Findings& findings);

// Checks across files: module names, disk paths, ports per node, the per-node module limit,
// and, with a node file, that every module names that node.
void check_set(const std::vector<LoadedFile>& files, Findings& findings);

// What the daemon does at start: the node file, then every *.yaml in its modules_dir.
struct NodeSetup {
    Node node;
    std::vector<Module> modules;
};
std::optional<NodeSetup> load_node_setup(const std::string& node_file, Findings& findings);

}  // namespace vmha::config
