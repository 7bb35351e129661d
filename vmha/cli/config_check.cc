// `vmha config check FILE…`: every finding of every file, located, then a verdict.
#include <algorithm>
#include <cstdio>
#include <tuple>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vmha/config/load.h>

#include "commands.h"

namespace vmha::cli {
namespace {

std::string_view kind_name(config::FileKind k) {
    switch (k) {
        case config::FileKind::module: return "module";
        case config::FileKind::node: return "node";
        case config::FileKind::unknown: return "unknown";
    }
    return "unknown";
}

std::string summary(const config::LoadedFile& f) {
    if (f.module) {
        const auto& m = *f.module;
        std::string nodes;
        for (const auto& n : m.nodes) nodes += (nodes.empty() ? "" : ", ") + n.name;
        return fmt::format("module \"{}\": VM \"{}\" on {}, {} disk{}", m.name, m.vm.name, nodes,
                           m.disks.size(), m.disks.size() == 1 ? "" : "s");
    }
    if (f.node) return fmt::format("node \"{}\"", f.node->name);
    return "unknown";
}

}  // namespace

int config_check(const ConfigCheckOptions& options) {
    config::Findings findings;
    std::vector<config::LoadedFile> files;
    files.reserve(options.files.size());
    for (const auto& path : options.files) files.push_back(config::load_file(path, findings));
    config::check_set(files, findings);

    // Report file by file, top to bottom, whatever order the checks found things in.
    auto file_index = [&](const std::string& path) {
        for (std::size_t i = 0; i < files.size(); ++i) {
            if (files[i].path == path) return i;
        }
        return files.size();
    };
    std::stable_sort(findings.items.begin(), findings.items.end(),
                     [&](const config::Finding& a, const config::Finding& b) {
                         return std::tuple(file_index(a.where.file), a.where.line, a.where.column) <
                                std::tuple(file_index(b.where.file), b.where.line, b.where.column);
                     });
    std::size_t errors = 0;
    std::size_t warnings = 0;
    for (const auto& f : findings.items) {
        (f.severity == config::Severity::error ? errors : warnings) += 1;
    }
    const int status = findings.unreadable ? exit_unreadable
                       : errors > 0        ? exit_invalid
                                           : exit_ok;

    if (options.json) {
        nlohmann::json out;
        out["valid"] = status == exit_ok;
        out["errors"] = errors;
        out["warnings"] = warnings;
        out["files"] = nlohmann::json::array();
        for (const auto& f : files) {
            bool file_errors = false;
            for (const auto& item : findings.items) {
                if (item.where.file == f.path && item.severity == config::Severity::error) {
                    file_errors = true;
                }
            }
            nlohmann::json jf = {{"path", f.path}, {"kind", kind_name(f.kind)}, {"valid", !file_errors}};
            if (f.module && !f.module->name.empty()) jf["module"] = f.module->name;
            if (f.node && !f.node->name.empty()) jf["node"] = f.node->name;
            out["files"].push_back(std::move(jf));
        }
        out["findings"] = nlohmann::json::array();
        for (const auto& item : findings.items) {
            out["findings"].push_back({
                {"file", item.where.file},
                {"line", item.where.line},
                {"column", item.where.column},
                {"key", item.key},
                {"severity", item.severity == config::Severity::error ? "error" : "warning"},
                {"message", item.message},
            });
        }
        std::cout << out.dump(2) << '\n';
        return status;
    }

    for (const auto& item : findings.items) std::cout << item.to_string() << '\n';
    if (!options.quiet) {
        for (const auto& f : files) {
            bool file_errors = false;
            for (const auto& item : findings.items) {
                if (item.where.file == f.path && item.severity == config::Severity::error) {
                    file_errors = true;
                }
            }
            if (!file_errors) std::cout << f.path << ": OK, " << summary(f) << '\n';
        }
        std::cout << fmt::format("{} file{} checked: {} error{}, {} warning{}\n", files.size(),
                                 files.size() == 1 ? "" : "s", errors, errors == 1 ? "" : "s",
                                 warnings, warnings == 1 ? "" : "s");
    }
    return status;
}

}  // namespace vmha::cli
