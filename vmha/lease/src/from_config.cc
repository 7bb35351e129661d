#include <fmt/format.h>

#include <vmha/lease/from_config.h>

namespace vmha::lease {

Result<std::unique_ptr<LeaseBackend>> make_backend(boost::asio::any_io_executor executor,
                                                   const config::Witness& witness,
                                                   const config::Node& node) {
    if (witness.kind == config::WitnessKind::etcd) {
        EtcdBackendOptions o;
        for (const auto& e : witness.endpoints) o.endpoints.emplace_back(e.host.text, e.port);
        o.prefix = witness.prefix;
        return make_etcd_backend(std::move(executor), std::move(o));
    }
    if (!node.tls) {
        return Error(
            errc::invalid_config,
            fmt::format("node \"{}\" has no \"tls\" section: it cannot authenticate to the witness",
                        node.name));
    }
    if (witness.endpoints.size() != 1) {
        return Error(errc::invalid_config,
                     fmt::format("a vmha witness has exactly one endpoint, found {}",
                                 witness.endpoints.size()));
    }
    WitnessBackendOptions o;
    o.host = witness.endpoints.front().host.text;
    o.port = witness.endpoints.front().port;
    o.node = node.name;
    o.tls = {node.tls->ca, node.tls->cert, node.tls->key};
    o.witness_name = witness.name;
    return make_witness_backend(std::move(executor), std::move(o));
}

LeaseTiming timing_of(const config::Witness& witness) {
    LeaseTiming t;
    t.margin = witness.margin;
    return t;
}

LeaseKey key_of(const config::Module& module) {
    if (module.nodes.size() != 2) {
        internal_error(
            fmt::format("module \"{}\" has {} nodes, not two", module.name, module.nodes.size()));
    }
    return LeaseKey{pair_name(module.nodes[0].name, module.nodes[1].name), module.name};
}

}  // namespace vmha::lease
