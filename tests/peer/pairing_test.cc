// Two hubs on one io_context pair over real TLS on loopback: hv1 on 127.0.0.1, hv2 (or a
// stranger) on 127.0.0.2, same ports. Every wait polls with a generous deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>

#include <vmha/peer/peer.h>

#include "peer_test_util.h"

namespace vmha::peer {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::cert_dir;
using test::node_config;

struct Events {
    std::vector<std::pair<bool, std::string>> channel;
    std::vector<nlohmann::json> messages;
    std::vector<std::pair<Liveness, std::string>> liveness;
    std::vector<std::string> refused;
};

struct Side {
    std::unique_ptr<PeerHub> hub;
    std::unique_ptr<ModulePeer> peer;  // destroyed before the hub
    Events events;

    PathStatus path(const std::string& name) const {
        for (auto& p : peer->status().paths) {
            if (p.name == name) return p;
        }
        ADD_FAILURE() << "no path " << name;
        return {};
    }
};

class Pairing : public ::testing::Test {
protected:
    void TearDown() override {
        sides_.clear();  // peers, then hubs, while the io_context still exists
    }

    Side& side(const config::Node& node, const std::string& yaml) {
        auto side = std::make_unique<Side>();
        HubOptions options;
        options.handshake_timeout = 2s;
        options.reconnect_min = 50ms;
        options.reconnect_max = 500ms;
        options.refused_retry = 60s;
        options.rebind_interval = 100ms;
        auto hub = PeerHub::create(io_.get_executor(), node, options);
        if (!hub) throw std::runtime_error(hub.error().message);
        side->hub = std::move(*hub);
        Events* events = &side->events;
        PeerEvents callbacks;
        callbacks.on_channel = [events](bool up, const std::string& reason) { events->channel.emplace_back(up, reason); };
        callbacks.on_message = [events](const nlohmann::json& m) { events->messages.push_back(m); };
        callbacks.on_liveness = [events](Liveness l, const std::string& reason) { events->liveness.emplace_back(l, reason); };
        callbacks.on_refused = [events](const std::string& reason) { events->refused.push_back(reason); };
        auto peer = side->hub->attach(test::parse_module(yaml), yaml, std::move(callbacks));
        if (!peer) throw std::runtime_error(peer.error().message);
        side->peer = std::move(*peer);
        side->peer->start();
        sides_.push_back(std::move(side));
        return *sides_.back();
    }

    // Runs the loop until `done` holds; false when the deadline passed first.
    bool run_until(const std::function<bool()>& done, std::chrono::seconds deadline = 20s) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (!done()) {
            if (std::chrono::steady_clock::now() > end) return false;
            io_.run_for(10ms);
        }
        return true;
    }

    static bool paired(const Side& s) { return s.peer->status().channel_up; }
    static bool heard_on(const Side& s, const std::string& path) {
        for (auto& p : s.peer->status().paths) {
            if (p.name == path) return p.accepted > 0;
        }
        return false;
    }
    void destroy(Side& s) {
        s.peer.reset();
        s.hub.reset();
    }

    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
    test::Ports ports_ = test::free_ports();
    std::vector<std::unique_ptr<Side>> sides_;
};

TEST_F(Pairing, PairsExchangesMessagesInOrderAndHeartbeats) {
    const auto yaml = test::module_yaml(ports_);
    Side& a = side(node_config("hv1", cert_dir()), yaml);
    Side& b = side(node_config("hv2", cert_dir()), yaml);
    EXPECT_FALSE(a.peer->send({{"too", "early"}})) << "send before pairing must be refused";
    EXPECT_EQ(a.peer->status().liveness, Liveness::unknown);

    ASSERT_TRUE(run_until([&] { return paired(a) && paired(b); }))
        << a.peer->status().channel_reason << " / " << b.peer->status().channel_reason;
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(a.peer->send({{"seq", i}}));
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(b.peer->send({{"back", i}}));
    ASSERT_TRUE(run_until([&] { return b.events.messages.size() >= 200 && a.events.messages.size() >= 20; }));
    ASSERT_EQ(b.events.messages.size(), 200u);
    for (int i = 0; i < 200; ++i) EXPECT_EQ(b.events.messages[static_cast<std::size_t>(i)], nlohmann::json({{"seq", i}}));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(a.events.messages[static_cast<std::size_t>(i)], nlohmann::json({{"back", i}}));

    ASSERT_TRUE(run_until([&] {
        return heard_on(a, "lan") && heard_on(a, "backup") && heard_on(b, "lan") && heard_on(b, "backup") &&
               a.peer->status().liveness == Liveness::alive && b.peer->status().liveness == Liveness::alive;
    }));
    ASSERT_FALSE(a.events.liveness.empty());
    EXPECT_EQ(a.events.liveness.front().first, Liveness::alive);
    EXPECT_NE(a.events.liveness.front().second.find("peer hv2 alive: heard on"), std::string::npos);
    ASSERT_FALSE(b.events.channel.empty());
    EXPECT_TRUE(b.events.channel.front().first);
    EXPECT_TRUE(a.events.refused.empty() && b.events.refused.empty());
    EXPECT_EQ(a.path("lan").rejected, 0u) << a.path("lan").last_rejection;
}

TEST_F(Pairing, CertificateFromAnotherCaIsRefused) {
    const auto yaml = test::module_yaml(ports_);
    Side& a = side(node_config("hv1", cert_dir()), yaml);
    Side& b = side(node_config("hv2", cert_dir() / "other"), yaml);
    ASSERT_TRUE(run_until([&] { return !a.events.refused.empty(); })) << a.peer->status().channel_reason;
    EXPECT_NE(a.events.refused.front().find("module \"web1\": TLS handshake with node \"hv2\" at 127.0.0.2:"),
              std::string::npos)
        << a.events.refused.front();
    EXPECT_NE(a.events.refused.front().find("does not verify against the cluster CA"), std::string::npos)
        << a.events.refused.front();
    EXPECT_FALSE(paired(a));
    EXPECT_FALSE(paired(b));
    EXPECT_TRUE(b.events.channel.empty());
    EXPECT_EQ(a.peer->status().liveness, Liveness::unknown);
}

TEST_F(Pairing, CertificateNamingAnotherNodeIsRefused) {
    // hv1's module file says its peer is hv2 at 127.0.0.2; hv3 (a valid cluster node) answers there.
    Side& a = side(node_config("hv1", cert_dir()), test::module_yaml(ports_));
    side(node_config("hv3", cert_dir()), test::module_yaml(ports_, {.peer_name = "hv3"}));
    ASSERT_TRUE(run_until([&] { return !a.events.refused.empty(); })) << a.peer->status().channel_reason;
    EXPECT_NE(a.events.refused.front().find("presented a certificate for \"hv3\", expected node \"hv2\""),
              std::string::npos)
        << a.events.refused.front();
    EXPECT_FALSE(paired(a));
}

TEST_F(Pairing, DifferentModuleConfigIsRefusedOnBothSidesNamingTheKeys) {
    Side& a = side(node_config("hv1", cert_dir()), test::module_yaml(ports_));
    Side& b = side(node_config("hv2", cert_dir()),
                   test::module_yaml(ports_, {.replication_timeout = "7s", .checker_port = 81}));
    ASSERT_TRUE(run_until([&] { return !a.events.refused.empty() && !b.events.refused.empty(); }));
    const std::string expected = "module \"web1\": the peer's config differs in checkers[1].port, replication.timeout";
    EXPECT_EQ(a.events.refused.front(), expected);
    EXPECT_EQ(b.events.refused.front(), expected);
    EXPECT_TRUE(a.events.channel.empty());
    EXPECT_TRUE(b.events.channel.empty());
    EXPECT_EQ(a.peer->status().refused, expected);
}

TEST_F(Pairing, PeerGoneIsLostAfterTheTimeout) {
    const auto yaml = test::module_yaml(ports_);
    Side& a = side(node_config("hv1", cert_dir()), yaml);
    Side& b = side(node_config("hv2", cert_dir()), yaml);
    ASSERT_TRUE(run_until([&] { return a.peer->status().liveness == Liveness::alive && heard_on(a, "backup"); }));
    destroy(b);
    ASSERT_TRUE(run_until([&] { return a.peer->status().liveness == Liveness::lost; }));
    ASSERT_FALSE(a.events.liveness.empty());
    EXPECT_EQ(a.events.liveness.back(),
              std::make_pair(Liveness::lost, std::string("peer hv2 lost: silent on lan, backup for 600ms")));
    ASSERT_TRUE(run_until([&] { return !a.events.channel.empty() && !a.events.channel.back().first; }));

    // hv2 comes back (new process, new TLS session, new heartbeat keys): paired and alive again.
    side(node_config("hv2", cert_dir()), yaml);
    ASSERT_TRUE(run_until([&] { return a.peer->status().liveness == Liveness::alive; }));
    EXPECT_TRUE(a.events.channel.back().first);
    EXPECT_TRUE(a.events.refused.empty());
}

TEST_F(Pairing, ModuleNotConfiguredOnThePeerIsRefused) {
    Side& a = side(node_config("hv1", cert_dir()), test::module_yaml(ports_));
    side(node_config("hv2", cert_dir()), test::module_yaml(ports_, {.module = "db1"}));
    ASSERT_TRUE(run_until([&] { return !a.events.refused.empty(); })) << a.peer->status().channel_reason;
    EXPECT_EQ(a.events.refused.front(),
              "module \"web1\": node \"hv2\" refused to pair: module \"web1\" is not configured on node \"hv2\"");
}

// hv2's "backup" port is taken by the test: hv2 cannot bind it (and sends nothing there) while
// the test socket receives what hv1 sends on that path. The socket is non-blocking.
class BlockedBackup : public Pairing {
protected:
    void SetUp() override {
        blocker_.open(asio::ip::udp::v4());
        blocker_.bind({asio::ip::make_address("127.0.0.2"), ports_.backup});
        blocker_.non_blocking(true);
    }
    // Packets received so far.
    std::vector<std::vector<std::uint8_t>> drain() {
        std::vector<std::vector<std::uint8_t>> out;
        for (;;) {
            std::array<std::uint8_t, 2048> buffer{};
            asio::ip::udp::endpoint from;
            boost::system::error_code ec;
            const std::size_t n = blocker_.receive_from(asio::buffer(buffer), from, 0, ec);
            if (ec) break;
            out.emplace_back(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
        }
        return out;
    }

    asio::ip::udp::socket blocker_{io_};
};

TEST_F(BlockedBackup, LivenessSurvivesWithOnePathSilent) {
    const auto yaml = test::module_yaml(ports_);
    Side& a = side(node_config("hv1", cert_dir()), yaml);
    Side& b = side(node_config("hv2", cert_dir()), yaml);
    ASSERT_TRUE(run_until([&] {
        return heard_on(a, "lan") && heard_on(b, "lan") && a.peer->status().liveness == Liveness::alive;
    }));
    EXPECT_FALSE(b.path("backup").bound);
    EXPECT_NE(b.path("backup").error.find("cannot bind heartbeat path \"backup\""), std::string::npos);
    // Well past the timeout (600ms) with backup silent, the peer stays alive.
    EXPECT_FALSE(run_until([&] { return a.peer->status().liveness != Liveness::alive; }, 3s));
    EXPECT_EQ(a.path("backup").accepted, 0u);
    EXPECT_FALSE(a.path("backup").since_heard.has_value());
    ASSERT_EQ(a.events.liveness.size(), 1u);
    EXPECT_EQ(a.events.liveness.front().second, "peer hv2 alive: heard on lan");
}

TEST_F(BlockedBackup, ReplayedForgedAndReflectedHeartbeatsAreRejected) {
    const auto yaml = test::module_yaml(ports_);
    Side& a = side(node_config("hv1", cert_dir()), yaml);
    Side& b = side(node_config("hv2", cert_dir()), yaml);
    std::vector<std::vector<std::uint8_t>> captured;  // hv1 -> hv2 on "backup"
    ASSERT_TRUE(run_until([&] {
        for (auto& p : drain()) captured.push_back(std::move(p));
        return captured.size() >= 3;
    }));
    // Free the port: hv2 binds it and accepts hv1's next, newer heartbeats.
    blocker_.close();
    ASSERT_TRUE(run_until([&] { return heard_on(b, "backup"); }));

    asio::ip::udp::socket attacker(io_, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.3"), 0));
    const asio::ip::udp::endpoint hv2_backup(asio::ip::make_address("127.0.0.2"), ports_.backup);
    const auto before = b.path("backup");
    for (const auto& packet : captured) attacker.send_to(asio::buffer(packet), hv2_backup);
    ASSERT_TRUE(run_until([&] { return b.path("backup").rejected >= before.rejected + captured.size(); }));
    EXPECT_NE(b.path("backup").last_rejection.find("replayed heartbeat sequence"), std::string::npos)
        << b.path("backup").last_rejection;

    auto forged = captured.back();
    forged[30] ^= 0x01;  // inside the names
    forged.back() ^= 0x01;
    auto flipped_sequence = captured.back();
    flipped_sequence[23] ^= 0x80;  // sequence: a far newer number, if only the HMAC matched
    for (const auto* packet : {&forged, &flipped_sequence}) {
        const auto rejected = b.path("backup").rejected;
        attacker.send_to(asio::buffer(*packet), hv2_backup);
        ASSERT_TRUE(run_until([&] { return b.path("backup").rejected > rejected; }));
    }
    EXPECT_NE(b.path("backup").last_rejection.find("HMAC"), std::string::npos) << b.path("backup").last_rejection;

    // hv1's own packet sent back to hv1 is not a heartbeat from hv2.
    const auto rejected = a.path("backup").rejected;
    attacker.send_to(asio::buffer(captured.back()), asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), ports_.backup));
    ASSERT_TRUE(run_until([&] { return a.path("backup").rejected > rejected; }));
    EXPECT_NE(a.path("backup").last_rejection.find("from \"hv1\""), std::string::npos) << a.path("backup").last_rejection;

    EXPECT_EQ(b.peer->status().liveness, Liveness::alive);
}

}  // namespace
}  // namespace vmha::peer
