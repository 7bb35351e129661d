// HealthServer: the load-balancer health check, per node, over HTTP/1.1 (Boost.Beast).
//
//   GET /health/MODULE               200 "OK\n" where MODULE is PRIM or ALONE on this node,
//                                     503 "NOK\n" elsewhere, 404 for a module not configured
//   GET /var/modules/MODULE/ready.txt 200 "OK" where MODULE is PRIM or ALONE, 404 otherwise
//                                     (SafeKit's path and semantics: a load balancer set up
//                                     for SafeKit works unchanged; SafeKit serves it on 9010)
// HEAD is answered like GET without the body; other methods get 405, other paths 404, and a
// client outside the endpoint's allow list gets 403. Connections are kept alive; each request
// must arrive within 10 s (the read deadline), its header within 8 KiB and no body above
// 1 KiB; a malformed request closes only its own connection.
//
// The answer comes from an injected query, called on the loop for every request:
// nullopt = no such module, true = PRIM or ALONE, false = any other state.
//
// Owned by the io_context's single thread (the vmhad loop).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <vmha/config/address.h>
#include <vmha/error.h>
#include <vmha/services/asio.h>

namespace vmha::services {

inline constexpr std::uint16_t safekit_health_port = 9010;

class HealthServer {
public:
    using Query = std::function<std::optional<bool>(const std::string& module)>;

    HealthServer(boost::asio::io_context& io, Query query);
    ~HealthServer();  // stop()
    HealthServer(const HealthServer&) = delete;
    HealthServer& operator=(const HealthServer&) = delete;

    // Binds one endpoint (an IP literal; port 0 picks a free port, see endpoints()). `allow`
    // empty = every client. Call before or after start().
    vmha::Status listen(const std::string& address, std::uint16_t port,
                        std::vector<config::Cidr> allow = {});
    void start();
    void stop();

    // The bound endpoints, in listen() order.
    std::vector<boost::asio::ip::tcp::endpoint> endpoints() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace vmha::services
