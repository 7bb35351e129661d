// The lease backend and timing a module's `witness` section asks for (module file), with
// the node's own TLS files (node file). For vmhad's module hosts.
#pragma once

#include <memory>

#include <boost/asio/any_io_executor.hpp>

#include <vmha/config/config.h>
#include <vmha/error.h>
#include <vmha/lease/lease.h>

namespace vmha::lease {

// `vmha`: a witness client presenting the node's `tls` files (required: an invalid_config
// error without them) and checking `witness.name` when set. `etcd`: the etcd backend on the
// endpoints with `witness.prefix`.
Result<std::unique_ptr<LeaseBackend>> make_backend(boost::asio::any_io_executor executor,
                                                   const config::Witness& witness,
                                                   const config::Node& node);

// LeaseTiming with `witness.margin` and the default clock drift.
LeaseTiming timing_of(const config::Witness& witness);

// The lease of `module`: its pair (its two node names) and its name.
LeaseKey key_of(const config::Module& module);

}  // namespace vmha::lease
