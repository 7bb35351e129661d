// Internal: the per-file parsers behind parse_file().
#pragma once

#include <yaml-cpp/yaml.h>

#include <vmha/config/config.h>

namespace vmha::config::detail {

class Reader;

Module parse_module(Reader& reader, const YAML::Node& root);
Node parse_node(Reader& reader, const YAML::Node& root);

}  // namespace vmha::config::detail
