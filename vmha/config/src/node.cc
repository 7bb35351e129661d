// Parsing of the node file (/etc/vmha/vmha.yaml). See docs/config-reference.md.
#include <fmt/format.h>

#include <vmha/log.h>

#include "parse.h"
#include "reader.h"

namespace vmha::config::detail {

Node parse_node(Reader& reader, const YAML::Node& root) {
    Node n;
    MapView top(reader, root, "",
                {"node", "state_dir", "run_dir", "modules_dir", "admin_socket", "tls", "log"},
                "a node file");
    if (!top.valid()) return n;
    n.where = top.location_of("node");
    if (auto v = top.name("node", true)) n.name = *v;
    if (auto v = top.path("state_dir")) n.state_dir = *v;
    if (auto v = top.path("run_dir")) n.run_dir = *v;
    if (auto v = top.path("modules_dir")) n.modules_dir = *v;
    if (auto v = top.path("admin_socket")) {
        // sun_path holds 108 bytes including the terminating NUL.
        if (v->size() > 107) {
            reader.error(top.location_of("admin_socket"), "admin_socket",
                         fmt::format("socket path is {} characters long; a unix socket path "
                                     "has at most 107",
                                     v->size()));
        } else {
            n.admin_socket = *v;
        }
    }
    if (auto node = top.mapping("tls")) {
        MapView t(reader, *node, "tls", {"ca", "cert", "key"}, "the tls section");
        Tls tls;
        if (auto v = t.path("ca", true)) tls.ca = *v;
        if (auto v = t.path("cert", true)) tls.cert = *v;
        if (auto v = t.path("key", true)) tls.key = *v;
        n.tls = tls;
    } else {
        reader.warning(root, "tls",
                       "no tls section: the control channel between nodes will not start "
                       "until certificates are configured");
    }
    if (auto node = top.mapping("log")) {
        MapView l(reader, *node, "log", {"level"}, "the log section");
        if (auto v = l.string("level")) {
            if (parse_log_level(*v)) {
                n.log_level = *v;
            } else {
                reader.error(l.location_of("level"), "log.level",
                             fmt::format("log level \"{}\" is not one of error, warn (or "
                                         "warning), info, debug, trace or off",
                                         *v));
            }
        }
    }
    return n;
}

}  // namespace vmha::config::detail
