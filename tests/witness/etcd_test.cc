// The etcd lease backend against a real etcd (Debian's etcd-server) started by the test on
// private ports in a temporary directory, ended by its PID. Skipped, with the reason, when
// etcd is not installed.
#include "lease_test_util.h"

namespace {

using namespace lease_test;
using vmha::lease::LeaseTiming;
using vmha::lease::LeaseView;

class Etcd : public ::testing::Test {
  protected:
    void SetUp() override {
        IMAGESYNC_REQUIRE_TOOL("etcd");
        client_port_ = imagesync_test::free_port();
        peer_port_ = imagesync_test::free_port();
        while (peer_port_ == client_port_) peer_port_ = imagesync_test::free_port();
        const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
        const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
        etcd_ = std::make_unique<Process>(std::vector<std::string>{"etcd",
                                                                   "--name",
                                                                   "t",
                                                                   "--data-dir",
                                                                   (dir_ / "data").string(),
                                                                   "--listen-client-urls",
                                                                   client,
                                                                   "--advertise-client-urls",
                                                                   client,
                                                                   "--listen-peer-urls",
                                                                   peer,
                                                                   "--initial-advertise-peer-urls",
                                                                   peer,
                                                                   "--initial-cluster",
                                                                   "t=" + peer,
                                                                   "--initial-cluster-state",
                                                                   "new",
                                                                   "--heartbeat-interval",
                                                                   "50",
                                                                   "--election-timeout",
                                                                   "500",
                                                                   "--log-level",
                                                                   "warn"},
                                          dir_ / "etcd.log");
        ASSERT_TRUE(wait_port(etcd_->pid(), client_port_, dir_ / "etcd.log"));
        // Listening is not serving: poll until a query answers.
        auto probe = backend();
        const auto deadline = Clock::now() + 30s;
        for (;;) {
            auto r = query(io_, *probe, key_);
            if (r) break;
            ASSERT_LT(Clock::now(), deadline) << "etcd never answered: " << r.error().message;
            run_for(io_, 100ms);  // poll interval
        }
    }

    std::unique_ptr<LeaseBackend> backend() {
        vmha::lease::EtcdBackendOptions o;
        o.endpoints = {{"127.0.0.1", client_port_}};
        auto b = vmha::lease::make_etcd_backend(io_.get_executor(), o);
        EXPECT_TRUE(b) << b.error().message;
        return b ? std::move(*b) : nullptr;
    }

    imagesync_test::TempDir dir_;
    std::uint16_t client_port_ = 0;
    std::uint16_t peer_port_ = 0;
    boost::asio::io_context io_;
    std::unique_ptr<Process> etcd_;
    const LeaseKey key_{"hv1+hv2", "web1"};
};

TEST_F(Etcd, TwoClientsContendOnlyOneHolds) {
    auto hv1 = backend();
    auto hv2 = backend();
    auto a = acquire(io_, *hv1, key_, "hv1", 5s);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_TRUE(a->held_by("hv1"));
    EXPECT_GT(a->epoch, 0u);
    EXPECT_EQ(a->remaining, 5s);
    auto b = acquire(io_, *hv2, key_, "hv2", 5s);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(b->holder, "hv1");
    EXPECT_EQ(b->epoch, a->epoch);
    EXPECT_GT(b->remaining, 0s);
    auto q = query(io_, *hv2, key_);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->holder, "hv1");
    // Contention from both at once: exactly one wins.
    const LeaseKey db1{"hv1+hv2", "db1"};
    std::optional<vmha::Result<LeaseState>> r1, r2;
    hv1->acquire(db1, "hv1", 5s, [&](vmha::Result<LeaseState> r) { r1 = std::move(r); });
    hv2->acquire(db1, "hv2", 5s, [&](vmha::Result<LeaseState> r) { r2 = std::move(r); });
    auto got1 = await(io_, r1);
    auto got2 = await(io_, r2);
    ASSERT_TRUE(got1 && got2);
    EXPECT_EQ(got1->held_by("hv1") + got2->held_by("hv2"), 1);
    EXPECT_EQ(got1->holder, got2->holder);
}

TEST_F(Etcd, RenewKeepsTheLeasePastItsTtl) {
    auto hv1 = backend();
    auto hv2 = backend();
    const auto ttl = 2s;
    auto a = acquire(io_, *hv1, key_, "hv1", ttl);
    ASSERT_TRUE(a && a->held_by("hv1"));
    const auto start = Clock::now();
    while (Clock::now() - start < 3 * ttl) {
        run_for(io_, 300ms);  // renewal period of the test
        auto r = renew(io_, *hv1, key_, "hv1", ttl);
        ASSERT_TRUE(r) << r.error().message;
        ASSERT_TRUE(r->held_by("hv1"));
        EXPECT_EQ(r->epoch, a->epoch);
        EXPECT_EQ(acquire(io_, *hv2, key_, "hv2", ttl)->holder, "hv1");
    }
}

TEST_F(Etcd, ExpiryThenTakeoverWithAHigherEpoch) {
    auto hv1 = backend();
    auto hv2 = backend();
    const auto ttl = 2s;
    LeaseView view("hv1", LeaseTiming{0.01, 100ms});
    const auto sent = Clock::now();
    auto a = acquire(io_, *hv1, key_, "hv1", ttl);
    ASSERT_TRUE(a && a->held_by("hv1"));
    view.on_reply(sent, *a);
    const auto deadline = Clock::now() + 30s;
    LeaseState granted;
    Clock::time_point at;
    for (;;) {
        auto b = acquire(io_, *hv2, key_, "hv2", ttl);
        at = Clock::now();
        ASSERT_TRUE(b) << b.error().message;
        if (b->held_by("hv2")) {
            granted = *b;
            break;
        }
        ASSERT_LT(Clock::now(), deadline) << "hv2 never got the lease";
        run_for(io_, 100ms);  // poll interval
    }
    EXPECT_GT(granted.epoch, a->epoch);
    EXPECT_FALSE(view.holds(at));
    EXPECT_GE(at - sent, ttl);
    auto r = renew(io_, *hv1, key_, "hv1", ttl);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->holder, "hv2");
}

TEST_F(Etcd, ReleaseFreesTheLeaseAtOnce) {
    auto hv1 = backend();
    auto hv2 = backend();
    auto a = acquire(io_, *hv1, key_, "hv1", 60s);
    ASSERT_TRUE(a && a->held_by("hv1"));
    ASSERT_TRUE(release(io_, *hv2, key_, "hv2"));  // not its lease: no effect
    EXPECT_EQ(query(io_, *hv2, key_)->holder, "hv1");
    ASSERT_TRUE(release(io_, *hv1, key_, "hv1"));
    EXPECT_EQ(query(io_, *hv2, key_)->holder, "");
    auto b = acquire(io_, *hv2, key_, "hv2", 60s);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->held_by("hv2"));
    EXPECT_GT(b->epoch, a->epoch);
}

TEST_F(Etcd, AnUnreachableEtcdIsAnErrorNotAnAnswer) {
    ASSERT_TRUE(etcd_->stop(SIGKILL));
    auto hv1 = backend();
    auto r = acquire(io_, *hv1, key_, "hv1", 5s);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().is(vmha::errc::connection_lost)) << r.error().message;
}

}  // namespace
