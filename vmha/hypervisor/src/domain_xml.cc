// rewrite_domain_xml(): the module's domain XML, with its replicated disks served over NBD.
#include <vmha/hypervisor/domain_xml.h>

#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

namespace vmha::hv {
namespace {

// libxml2 speaks unsigned char; these casts are its documented way to pass C strings.
const xmlChar* x(const char* s) { return reinterpret_cast<const xmlChar*>(s); }
const char* c(const xmlChar* s) { return reinterpret_cast<const char*>(s); }

struct DocFree {
    void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
struct ParserFree {
    void operator()(xmlParserCtxt* ctxt) const { xmlFreeParserCtxt(ctxt); }
};
struct BufferFree {
    void operator()(xmlBuffer* buffer) const { xmlBufferFree(buffer); }
};

bool is_element(const xmlNode* node, const char* name) {
    return node->type == XML_ELEMENT_NODE && std::strcmp(c(node->name), name) == 0;
}

xmlNode* child(xmlNode* parent, const char* name) {
    for (xmlNode* n = parent->children; n != nullptr; n = n->next) {
        if (is_element(n, name)) return n;
    }
    return nullptr;
}

std::string attribute(xmlNode* node, const char* name) {
    if (node == nullptr) return {};
    xmlChar* value = xmlGetProp(node, x(name));
    if (value == nullptr) return {};
    std::string result = c(value);
    xmlFree(value);
    return result;
}

std::string text(xmlNode* node) {
    if (node == nullptr) return {};
    xmlChar* content = xmlNodeGetContent(node);
    if (content == nullptr) return {};
    std::string result = c(content);
    xmlFree(content);
    return result;
}

std::string describe(const NbdDisk& disk) {
    if (!disk.target.empty()) return fmt::format("target \"{}\" (image \"{}\")", disk.target, disk.image_path);
    return fmt::format("image \"{}\"", disk.image_path);
}

bool matches(xmlNode* disk_node, const NbdDisk& disk) {
    if (!disk.target.empty()) return attribute(child(disk_node, "target"), "dev") == disk.target;
    return attribute(child(disk_node, "source"), "file") == disk.image_path;
}

std::string_view format_name(config::DiskFormat format) {
    switch (format) {
        case config::DiskFormat::raw: return "raw";
        case config::DiskFormat::qcow2: return "qcow2";
        case config::DiskFormat::vhdx: return "vhdx";
    }
    internal_error("unknown DiskFormat");
}

// Turns one <disk type='file'> into the NBD disk described by `disk`.
void rewrite_disk(xmlNode* disk_node, const NbdDisk& disk) {
    xmlSetProp(disk_node, x("type"), x("network"));
    if (attribute(disk_node, "device").empty()) xmlSetProp(disk_node, x("device"), x("disk"));

    xmlNode* driver = child(disk_node, "driver");
    if (driver == nullptr) {
        driver = xmlNewNode(nullptr, x("driver"));
        if (disk_node->children != nullptr) {
            xmlAddPrevSibling(disk_node->children, driver);
        } else {
            xmlAddChild(disk_node, driver);
        }
    }
    const std::string format{format_name(disk.format)};
    xmlSetProp(driver, x("name"), x("qemu"));
    xmlSetProp(driver, x("type"), x(format.c_str()));
    xmlSetProp(driver, x("cache"), x("none"));
    xmlSetProp(driver, x("error_policy"), x("stop"));
    xmlSetProp(driver, x("rerror_policy"), x("stop"));
    xmlUnsetProp(driver, x("io"));  // aio applies to files only; QEMU drops it for NBD

    xmlNode* source = xmlNewNode(nullptr, x("source"));
    xmlSetProp(source, x("protocol"), x("nbd"));
    xmlSetProp(source, x("name"), x(disk.export_name.c_str()));
    xmlNode* host = xmlNewChild(source, nullptr, x("host"), nullptr);
    xmlSetProp(host, x("transport"), x("unix"));
    xmlSetProp(host, x("socket"), x(disk.nbd_socket.c_str()));

    if (xmlNode* old = child(disk_node, "source"); old != nullptr) {
        xmlReplaceNode(old, source);
        xmlFreeNode(old);
    } else {
        xmlAddNextSibling(driver, source);
    }
}

}  // namespace

Result<std::string> rewrite_domain_xml(const DomainSpec& spec, const std::string& uuid_text) {
    const std::string who = fmt::format("domain \"{}\"", spec.name);
    for (const NbdDisk& disk : spec.disks) {
        if ((disk.image_path.empty() && disk.target.empty()) || disk.nbd_socket.empty() ||
            disk.export_name.empty()) {
            return Error(errc::invalid_argument,
                         fmt::format("{}: replicated disk {} needs an image path or target, an NBD "
                                     "socket and an export name (socket \"{}\", export \"{}\")",
                                     who, describe(disk), disk.nbd_socket, disk.export_name));
        }
    }

    std::unique_ptr<xmlParserCtxt, ParserFree> parser(xmlNewParserCtxt());
    if (!parser) return Error(errc::internal, fmt::format("{}: libxml2 could not allocate a parser", who));
    if (spec.xml.size() > static_cast<std::size_t>(INT32_MAX)) {
        return Error(errc::invalid_argument, fmt::format("{}: the domain XML is too large", who));
    }
    std::unique_ptr<xmlDoc, DocFree> doc(xmlCtxtReadMemory(
        parser.get(), spec.xml.data(), static_cast<int>(spec.xml.size()), "domain.xml", nullptr,
        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
    if (!doc) {
        const xmlError* e = xmlCtxtGetLastError(parser.get());
        std::string why = e != nullptr && e->message != nullptr ? e->message : "unknown error";
        while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
        return Error(errc::invalid_argument,
                     fmt::format("{}: the domain XML does not parse: line {}: {}", who,
                                 e != nullptr ? e->line : 0, why));
    }

    xmlNode* root = xmlDocGetRootElement(doc.get());
    if (root == nullptr || !is_element(root, "domain")) {
        return Error(errc::invalid_argument,
                     fmt::format("{}: the domain XML's root element is <{}>, not <domain>", who,
                                 root != nullptr ? c(root->name) : ""));
    }
    if (const std::string name = text(child(root, "name")); name != spec.name) {
        return Error(errc::invalid_argument,
                     fmt::format("{}: the domain XML names the domain \"{}\"", who, name));
    }

    std::vector<xmlNode*> file_disks;
    if (xmlNode* devices = child(root, "devices"); devices != nullptr) {
        for (xmlNode* n = devices->children; n != nullptr; n = n->next) {
            if (is_element(n, "disk") && attribute(n, "type") == "file") file_disks.push_back(n);
        }
    }

    // Match every replicated disk first, so that a failure leaves nothing half rewritten.
    std::vector<xmlNode*> matched(spec.disks.size(), nullptr);
    for (std::size_t i = 0; i < spec.disks.size(); ++i) {
        for (xmlNode* n : file_disks) {
            if (!matches(n, spec.disks[i])) continue;
            if (matched[i] != nullptr) {
                return Error(errc::invalid_argument,
                             fmt::format("{}: replicated disk {} matches more than one <disk "
                                         "type='file'> of the domain XML",
                                         who, describe(spec.disks[i])));
            }
            matched[i] = n;
        }
        if (matched[i] == nullptr) {
            return Error(errc::invalid_argument,
                         fmt::format("{}: replicated disk {} is not a <disk type='file'> of the "
                                     "domain XML",
                                     who, describe(spec.disks[i])));
        }
        for (std::size_t j = 0; j < i; ++j) {
            if (matched[j] == matched[i]) {
                return Error(errc::invalid_argument,
                             fmt::format("{}: replicated disks {} and {} are the same <disk> of "
                                         "the domain XML",
                                         who, describe(spec.disks[j]), describe(spec.disks[i])));
            }
        }
    }
    for (std::size_t i = 0; i < spec.disks.size(); ++i) rewrite_disk(matched[i], spec.disks[i]);
    if (!uuid_text.empty() && child(root, "uuid") == nullptr) {
        xmlNode* uuid = xmlNewNode(nullptr, x("uuid"));
        xmlNodeSetContent(uuid, x(uuid_text.c_str()));
        xmlAddNextSibling(child(root, "name"), uuid);
    }

    std::unique_ptr<xmlBuffer, BufferFree> buffer(xmlBufferCreate());
    if (!buffer || xmlNodeDump(buffer.get(), doc.get(), root, 0, 0) < 0) {
        return Error(errc::internal, fmt::format("{}: libxml2 could not serialize the domain XML", who));
    }
    std::string result(c(xmlBufferContent(buffer.get())),
                       static_cast<std::size_t>(xmlBufferLength(buffer.get())));
    result.push_back('\n');
    return result;
}

}  // namespace vmha::hv
