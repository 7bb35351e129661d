// The witness file (YAML; docs/witness.md, docs/config-reference.md "Witness file"):
//   name: witness1                 # the name its certificate carries (CN or SAN DNS)
//   listen: 0.0.0.0:7950
//   tls: {ca: ..., cert: ..., key: ...}
//   state_file: /var/lib/vmha-witness/leases.json
//   pairs:                         # optional; absent = any node with a certificate from the CA
//     - nodes: [hv1, hv2]
//       modules: [web1, db1]       # optional; absent = every module of the pair
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <vmha/error.h>

namespace vmha::witness {

struct AllowedPair {
    std::string pair;                  // "hv1+hv2"
    std::vector<std::string> modules;  // empty = every module
};

struct WitnessConfig {
    std::string name;
    std::string listen_host = "0.0.0.0";
    std::uint16_t listen_port = 7950;
    std::string tls_ca, tls_cert, tls_key;
    std::filesystem::path state_file = "/var/lib/vmha-witness/leases.json";
    std::optional<std::vector<AllowedPair>> pairs;  // nullopt = any pair

    // Whether `node` may take leases of `module` for `pair` (it must be one of the pair).
    Status allows(const std::string& node, const std::string& pair,
                  const std::string& module) const;
};

// Errors quote the file and the key.
Result<WitnessConfig> load_witness_config(const std::filesystem::path& file);

}  // namespace vmha::witness
