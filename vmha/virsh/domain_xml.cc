// Domain XML through libxml2's XPath, with the expressions virsh uses.
#include "domain_xml.h"

#include <cstdlib>
#include <memory>

#include <fmt/format.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>

namespace vmha::virsh {
namespace {

struct DocFree {
    void operator()(xmlDocPtr d) const { xmlFreeDoc(d); }
};
struct ContextFree {
    void operator()(xmlXPathContextPtr c) const { xmlXPathFreeContext(c); }
};
struct ObjectFree {
    void operator()(xmlXPathObjectPtr o) const { xmlXPathFreeObject(o); }
};
using Doc = std::unique_ptr<xmlDoc, DocFree>;
using XPathContext = std::unique_ptr<xmlXPathContext, ContextFree>;
using XPathObject = std::unique_ptr<xmlXPathObject, ObjectFree>;

// virXPathString(): the string value, or nullopt when empty or not a string.
std::optional<std::string> xpath_string(xmlXPathContextPtr ctxt, const char* expr) {
    XPathObject obj(xmlXPathEval(reinterpret_cast<const xmlChar*>(expr), ctxt));
    if (!obj || obj->type != XPATH_STRING || obj->stringval == nullptr || obj->stringval[0] == 0) {
        return std::nullopt;
    }
    return std::string(reinterpret_cast<const char*>(obj->stringval));
}

struct Parsed {
    Doc doc;
    XPathContext ctxt;
};

std::optional<Parsed> parse(const std::string& xml) {
    Parsed p;
    p.doc.reset(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                              XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
    if (!p.doc) return std::nullopt;
    xmlNodePtr root = xmlDocGetRootElement(p.doc.get());
    if (root == nullptr) return std::nullopt;
    p.ctxt.reset(xmlXPathNewContext(p.doc.get()));
    if (!p.ctxt) return std::nullopt;
    p.ctxt->node = root;
    return p;
}

// "0x0000" or "5": libvirt's PCI address attributes.
unsigned parse_number(const std::optional<std::string>& text) {
    return text ? static_cast<unsigned>(std::strtoul(text->c_str(), nullptr, 0)) : 0;
}

}  // namespace

std::optional<std::vector<DiskRow>> disks_of(const std::string& xml) {
    auto p = parse(xml);
    if (!p) return std::nullopt;
    xmlXPathContextPtr ctxt = p->ctxt.get();
    XPathObject set(xmlXPathEval(reinterpret_cast<const xmlChar*>("./devices/disk"), ctxt));
    std::vector<DiskRow> rows;
    if (!set || set->type != XPATH_NODESET || set->nodesetval == nullptr) return rows;
    for (int i = 0; i < set->nodesetval->nodeNr; ++i) {
        ctxt->node = set->nodesetval->nodeTab[i];
        DiskRow row;
        row.type = xpath_string(ctxt, "string(./@type)");
        row.device = xpath_string(ctxt, "string(./@device)");
        row.target = xpath_string(ctxt, "string(./target/@dev)");
        if (row.type == "nvme") {
            auto ns = xpath_string(ctxt, "string(./source/@namespace)");
            auto domain = xpath_string(ctxt, "string(./source/address/@domain)");
            if (ns && domain) {
                row.source = fmt::format(
                    "nvme://{:04x}:{:02x}:{:02x}.{}/{}", parse_number(domain),
                    parse_number(xpath_string(ctxt, "string(./source/address/@bus)")),
                    parse_number(xpath_string(ctxt, "string(./source/address/@slot)")),
                    parse_number(xpath_string(ctxt, "string(./source/address/@function)")), *ns);
            }
        } else {
            row.source = xpath_string(ctxt,
                                      "string(./source/@file|./source/@dev|./source/@dir"
                                      "|./source/@name|./source/@volume|./source/@path)");
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

std::optional<std::string> domain_title(virDomainPtr dom) {
    if (char* title = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_TITLE, nullptr, 0)) {
        std::string t(title);
        std::free(title);
        return t;
    }
    const virError* e = virGetLastError();
    const int code = e != nullptr ? e->code : VIR_ERR_OK;
    if (code == VIR_ERR_NO_DOMAIN_METADATA) {
        virResetLastError();
        return std::string();
    }
    if (code != VIR_ERR_NO_SUPPORT) return std::nullopt;
    virResetLastError();
    char* xml = virDomainGetXMLDesc(dom, 0);
    if (xml == nullptr) return std::nullopt;
    std::string text(xml);
    std::free(xml);
    auto p = parse(text);
    if (!p) return std::string();
    return xpath_string(p->ctxt.get(), "string(./title[1])").value_or("");
}

}  // namespace vmha::virsh
