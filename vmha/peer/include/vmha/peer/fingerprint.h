// Module config fingerprints: what two vmhad compare before they pair a module.
//
// The same module file is installed on both nodes. A fingerprint maps every leaf key path of
// the file (e.g. "replication.timeout", "checkers[1].port", "heartbeat.paths[0].addresses.hv1")
// to a hash of its value's canonical text, so that two nodes can say *which* keys differ
// without sending the file. Comments, key order and quoting do not change a fingerprint.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <vmha/error.h>

namespace vmha::peer {

using Fingerprint = std::map<std::string, std::string>;  // leaf key path -> value hash (hex)

// Fails (invalid_config) only when the text is not YAML.
Result<Fingerprint> config_fingerprint(const std::string& yaml_text);

// Key paths whose hashes differ, or that exist on one side only, sorted.
std::vector<std::string> fingerprint_differences(const Fingerprint& here, const Fingerprint& peer);

}  // namespace vmha::peer
