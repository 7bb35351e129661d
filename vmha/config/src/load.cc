// Reading files, telling module files from node files, and the checks across files.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "parse.h"
#include "reader.h"

namespace vmha::config {

LoadedFile parse_file(const std::string& file_name, const std::string& text, Findings& findings) {
    LoadedFile out;
    out.path = file_name;
    detail::Reader reader(file_name, findings);
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        reader.error(reader.at(e.mark), "(syntax)", fmt::format("YAML syntax error: {}", e.msg));
        return out;
    }
    const bool is_module = root.IsMap() && root["module"];
    const bool is_node = root.IsMap() && root["node"];
    if (is_module && is_node) {
        reader.error(root["node"], "node",
                     "a file is either a module file (\"module:\") or a node file (\"node:\"), "
                     "not both");
        return out;
    }
    if (is_module) {
        out.kind = FileKind::module;
        out.module = detail::parse_module(reader, root);
    } else if (is_node) {
        out.kind = FileKind::node;
        out.node = detail::parse_node(reader, root);
    } else if (root.IsNull()) {
        reader.error(SourceLocation{file_name, 1, 1}, "(file)",
                     "the file is empty; a module file starts with \"module: NAME\", a node "
                     "file with \"node: NAME\"");
    } else {
        reader.error(root, "(file)",
                     "neither a module file (no \"module:\" key) nor a node file (no \"node:\" "
                     "key)");
    }
    out.valid = reader.error_count() == 0;
    return out;
}

LoadedFile load_file(const std::string& path, Findings& findings) {
    std::ifstream in(path, std::ios::binary);
    std::error_code ec;
    if (!in || std::filesystem::is_directory(path, ec)) {
        const int err = errno;
        findings.unreadable = true;
        findings.error(SourceLocation{path, 0, 0}, "(file)",
                       fmt::format("cannot read the file: {}",
                                   std::filesystem::is_directory(path, ec) ? "it is a directory"
                                                                           : std::strerror(err)));
        LoadedFile out;
        out.path = path;
        return out;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_file(path, text.str(), findings);
}

void check_set(const std::vector<LoadedFile>& files, Findings& findings) {
    std::map<std::string, const Module*> names;
    std::map<std::string, std::pair<const Module*, SourceLocation>> disks;
    std::map<std::string, std::vector<const Module*>> per_node;
    std::vector<const Node*> nodes;

    for (const auto& f : files) {
        if (f.node) nodes.push_back(&*f.node);
        if (!f.module) continue;
        const Module& m = *f.module;
        if (!m.name.empty()) {
            if (auto [it, fresh] = names.emplace(m.name, &m); !fresh) {
                findings.error(m.where, "module",
                               fmt::format("module \"{}\" is already defined at {}", m.name,
                                           it->second->where.to_string()));
            }
        }
        for (std::size_t i = 0; i < m.disks.size(); ++i) {
            const Disk& d = m.disks[i];
            if (d.path.empty()) continue;
            auto [it, fresh] = disks.emplace(d.path, std::pair{&m, d.where});
            const Module& other = *it->second.first;
            const bool share_a_node = m.nodes.size() == 2 &&
                                      (other.node(m.nodes[0].name) != nullptr ||
                                       other.node(m.nodes[1].name) != nullptr);
            if (!fresh && &other != &m && share_a_node) {
                findings.error(d.where, fmt::format("disks[{}].path", i),
                               fmt::format("disk \"{}\" is also replicated by module \"{}\" (at "
                                           "{}); a disk belongs to one module",
                                           d.path, it->second.first->name,
                                           it->second.second.to_string()));
            }
        }
        for (const auto& n : m.nodes) {
            if (n.name.empty()) continue;
            auto& list = per_node[n.name];
            list.push_back(&m);
            if (list.size() == max_modules_per_node + 1) {
                findings.error(n.where, "nodes",
                               fmt::format("node \"{}\" is named by more than {} modules; a node "
                                           "runs at most {} modules",
                                           n.name, max_modules_per_node, max_modules_per_node));
            } else if (list.size() > max_modules_per_node + 1) {
                findings.error(n.where, "nodes",
                               fmt::format("node \"{}\" is named by {} modules; a node runs at "
                                           "most {} modules",
                                           n.name, list.size(), max_modules_per_node));
            }
        }
    }

    // Ports: two modules that share a node cannot listen on the same port there.
    std::vector<const Module*> modules;
    for (const auto& f : files) {
        if (f.module) modules.push_back(&*f.module);
    }
    for (std::size_t b = 0; b < modules.size(); ++b) {
        const auto ports_b = modules[b]->ports();
        for (const auto& pb : ports_b) {
            bool reported = false;
            for (std::size_t a = 0; a < b && !reported; ++a) {
                std::string shared;
                for (const auto& n : modules[b]->nodes) {
                    if (!n.name.empty() && modules[a]->node(n.name) != nullptr) {
                        shared = n.name;
                        break;
                    }
                }
                if (shared.empty()) continue;
                for (const auto& pa : modules[a]->ports()) {
                    if (pa.port == pb.port && pa.udp == pb.udp) {
                        findings.error(pb.where, pb.key,
                                       fmt::format("port {} is also used by module \"{}\" ({} at "
                                                   "{}) on node \"{}\"",
                                                   pb.port, modules[a]->name, pa.key,
                                                   pa.where.to_string(), shared));
                        reported = true;
                        break;
                    }
                }
            }
        }
    }

    // Node files: two with one name, and modules that do not name the node.
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            if (!nodes[i]->name.empty() && nodes[i]->name == nodes[j]->name) {
                findings.error(nodes[i]->where, "node",
                               fmt::format("node \"{}\" is already defined at {}", nodes[i]->name,
                                           nodes[j]->where.to_string()));
            }
        }
    }
    if (nodes.size() == 1 && !nodes[0]->name.empty()) {
        for (const Module* m : modules) {
            if (m->nodes.size() == 2 && m->node(nodes[0]->name) == nullptr &&
                !m->nodes[0].name.empty() && !m->nodes[1].name.empty()) {
                findings.error(m->nodes[0].where, "nodes",
                               fmt::format("module \"{}\" runs on \"{}\" and \"{}\", not on this "
                                           "node \"{}\" ({})",
                                           m->name, m->nodes[0].name, m->nodes[1].name,
                                           nodes[0]->name, nodes[0]->where.to_string()));
            }
        }
    }
}

std::optional<NodeSetup> load_node_setup(const std::string& node_file, Findings& findings) {
    std::vector<LoadedFile> files;
    files.push_back(load_file(node_file, findings));
    if (files.front().kind != FileKind::node) {
        if (files.front().kind == FileKind::module) {
            findings.error(SourceLocation{node_file, 1, 1}, "node",
                           "this is a module file; the daemon needs the node file "
                           "(/etc/vmha/vmha.yaml)");
        }
        return std::nullopt;
    }
    const Node node = *files.front().node;  // a copy: `files` grows below
    std::error_code ec;
    std::vector<std::string> module_files;
    for (const auto& entry : std::filesystem::directory_iterator(node.modules_dir, ec)) {
        const auto ext = entry.path().extension();
        if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
            module_files.push_back(entry.path().string());
        }
    }
    if (ec) {
        findings.unreadable = true;
        findings.error(node.where, "modules_dir",
                       fmt::format("cannot list modules directory \"{}\": {}", node.modules_dir,
                                   ec.message()));
        return std::nullopt;
    }
    std::sort(module_files.begin(), module_files.end());
    for (const auto& path : module_files) {
        files.push_back(load_file(path, findings));
        if (files.back().kind == FileKind::node) {
            findings.error(SourceLocation{path, 1, 1}, "node",
                           "a node file in the modules directory; only module files belong here");
        }
    }
    check_set(files, findings);
    if (findings.has_errors()) return std::nullopt;
    NodeSetup setup{node, {}};
    for (auto& f : files) {
        if (f.module) setup.modules.push_back(std::move(*f.module));
    }
    return setup;
}

}  // namespace vmha::config
