#include <vmha/peer/fingerprint.h>

#include <algorithm>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

namespace vmha::peer {

namespace {

// First 16 bytes of SHA-256, in hex: enough to tell values apart, short on the wire.
std::string short_hash(const std::string& text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) != 1 || length < 16) {
        internal_error("SHA-256 failed");
    }
    std::string out;
    for (unsigned int i = 0; i < 16; ++i) out += fmt::format("{:02x}", digest[i]);
    return out;
}

// Leaves are scalars, nulls and empty collections; the hashed text names the kind so that
// "[]" the string and an empty sequence differ.
void flatten(const YAML::Node& node, const std::string& path, Fingerprint& out) {
    switch (node.Type()) {
        case YAML::NodeType::Map:
            if (node.size() == 0) {
                out[path] = short_hash("map:");
                return;
            }
            for (const auto& item : node) {
                const std::string key = item.first.IsScalar() ? item.first.Scalar() : YAML::Dump(item.first);
                flatten(item.second, path.empty() ? key : path + "." + key, out);
            }
            return;
        case YAML::NodeType::Sequence:
            if (node.size() == 0) {
                out[path] = short_hash("seq:");
                return;
            }
            for (std::size_t i = 0; i < node.size(); ++i) flatten(node[i], fmt::format("{}[{}]", path, i), out);
            return;
        case YAML::NodeType::Scalar:
            out[path] = short_hash("scalar:" + node.Scalar());
            return;
        case YAML::NodeType::Null:
        case YAML::NodeType::Undefined:
            out[path] = short_hash("null:");
            return;
    }
}

}  // namespace

Result<Fingerprint> config_fingerprint(const std::string& yaml_text) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::Exception& e) {
        return Error(errc::invalid_config, fmt::format("the module file is not YAML: {}", e.what()));
    }
    Fingerprint out;
    flatten(root, "", out);
    return out;
}

std::vector<std::string> fingerprint_differences(const Fingerprint& here, const Fingerprint& peer) {
    std::vector<std::string> out;
    auto a = here.begin();
    auto b = peer.begin();
    while (a != here.end() || b != peer.end()) {
        if (b == peer.end() || (a != here.end() && a->first < b->first)) {
            out.push_back((a++)->first);
        } else if (a == here.end() || b->first < a->first) {
            out.push_back((b++)->first);
        } else {
            if (a->second != b->second) out.push_back(a->first);
            ++a;
            ++b;
        }
    }
    return out;
}

}  // namespace vmha::peer
