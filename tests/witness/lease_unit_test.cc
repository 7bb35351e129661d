// Unit tests on a virtual clock: the holder's view of a lease (LeaseView), the witness's lease
// table, the wire messages and the state file.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include <vmha/lease/lease.h>

#include "daemon.h"
#include "lease_table.h"
#include "state_file.h"
#include "witness_config.h"
#include "witness_wire.h"

namespace {

using namespace std::chrono_literals;
using vmha::errc;
using vmha::lease::Duration;
using vmha::lease::LeaseKey;
using vmha::lease::LeaseState;
using vmha::lease::LeaseTiming;
using vmha::lease::LeaseView;
using vmha::lease::TimePoint;
using vmha::witness::LeaseTable;
namespace wire = vmha::lease::wire;

const TimePoint t0 = TimePoint{} + 1000s;  // the virtual clock's origin
const LeaseKey web1{"hv1+hv2", "web1"};

TEST(LeaseView, CertainEndCountsFromTheRequestWithDriftAndMargin) {
    const LeaseTiming timing{0.01, 1000ms};
    // 10 s granted: 10 s * 0.99 - 1 s = 8.9 s after the request was SENT.
    EXPECT_EQ(vmha::lease::certain_end(t0, 10s, timing), t0 + 8900ms);
    // Never before the request.
    EXPECT_EQ(vmha::lease::certain_end(t0, 500ms, timing), t0);
}

TEST(LeaseView, HoldsUntilTheCertainEndOfTheLatestReply) {
    LeaseView view("hv1", LeaseTiming{0.01, 1000ms});
    EXPECT_FALSE(view.holds(t0));
    // Sent at t0, the reply arrives 3 s later (slow network): the certainty still counts from t0.
    view.on_reply(t0, LeaseState{"hv1", 10s, 10s, 4});
    EXPECT_TRUE(view.holds(t0 + 3s));
    EXPECT_TRUE(view.holds(t0 + 8899ms));
    EXPECT_FALSE(view.holds(t0 + 8900ms));
    EXPECT_EQ(view.left(t0 + 8s), 900ms);
    EXPECT_EQ(view.epoch(), 4u);
    // A renewal sent at t0+3s extends it; an older reply arriving late does not shorten it.
    view.on_reply(t0 + 3s, LeaseState{"hv1", 10s, 10s, 4});
    EXPECT_EQ(view.certain_until(), t0 + 11900ms);
    view.on_reply(t0 + 1s, LeaseState{"hv1", 10s, 10s, 4});
    EXPECT_EQ(view.certain_until(), t0 + 11900ms);
    // A reply naming another holder ends it at once.
    view.on_reply(t0 + 4s, LeaseState{"hv2", 10s, 10s, 5});
    EXPECT_FALSE(view.holds(t0 + 4s));
    EXPECT_EQ(view.epoch(), 0u);
}

TEST(LeaseView, AnEpochChangeWhileHeldCountsAsALossAndRestartsTheCertainty) {
    LeaseView view("hv1", LeaseTiming{0.0, 0ms});
    view.on_reply(t0, LeaseState{"hv1", 10s, 10s, 1});
    view.on_reply(t0 + 1s, LeaseState{"hv1", 2s, 2s, 3});  // lost and regained meanwhile
    EXPECT_EQ(view.losses(), 1u);
    EXPECT_EQ(view.certain_until(), t0 + 3s);  // not t0 + 10s from the old holding
    EXPECT_EQ(view.epoch(), 3u);
}

TEST(LeaseView, RemainingFromAQueryIsUsedNotTheTtl) {
    LeaseView view("hv1", LeaseTiming{0.0, 0ms});
    view.on_reply(t0, LeaseState{"hv1", 4s, 10s, 2});
    EXPECT_EQ(view.certain_until(), t0 + 4s);
}

TEST(LeaseView, RenewIntervalIsAThirdOfTheCertainPeriod) {
    EXPECT_EQ(LeaseView::renew_interval(10s, LeaseTiming{0.01, 1000ms}), 2966ms);
    EXPECT_EQ(LeaseView::renew_interval(1ms, LeaseTiming{0.01, 1000ms}), 1ms);
}

TEST(LeaseView, TimingChecks) {
    EXPECT_TRUE(vmha::lease::check_timing(10s, LeaseTiming{0.01, 1000ms}));
    EXPECT_TRUE(vmha::lease::check_timing(10s, LeaseTiming{0.01, 9999ms})
                    .error()
                    .is(errc::invalid_argument));
    EXPECT_FALSE(vmha::lease::check_timing(10s, LeaseTiming{0.6, 0ms}));
    EXPECT_FALSE(vmha::lease::check_timing(10s, LeaseTiming{0.01, -1ms}));
}

// The safety property on a virtual clock: with the witness's clock running faster than the
// holder's by up to the drift bound, the holder's certainty always ends before the witness
// lets the lease go, whatever the network delay.
TEST(LeaseView, HolderGivesUpBeforeTheWitnessExpiresUnderDriftAndDelay) {
    const LeaseTiming timing{0.01, 500ms};
    for (const double rate :
         {1.0, 0.995, 0.99}) {  // holder's clock speed relative to the witness's
        for (const auto delay : {0ms, 10ms, 1500ms}) {
            LeaseTable table;
            LeaseView view("hv1", timing);
            // Holder sends at its local t0; the witness receives after `delay` (witness time
            // w0+delay).
            const TimePoint w0 = t0;
            auto granted = table.acquire(web1, "hv1", 3s, w0 + delay);
            table.apply(web1, *granted.change);
            view.on_reply(t0, granted.state);
            // The witness frees the lease at witness time w0 + delay + 3s. Where is the holder's
            // clock then?
            const auto witness_elapsed = delay + 3s;
            const auto holder_elapsed =
                std::chrono::duration_cast<Duration>(witness_elapsed * rate);
            EXPECT_FALSE(view.holds(t0 + holder_elapsed))
                << "rate " << rate << " delay " << delay.count();
            EXPECT_EQ(table.acquire(web1, "hv2", 3s, w0 + witness_elapsed - 1ms).state.holder,
                      "hv1");
            EXPECT_EQ(table.acquire(web1, "hv2", 3s, w0 + witness_elapsed).state.holder, "hv2");
        }
    }
}

TEST(LeaseTable, OneHolderAtATimeAndEpochsGrowOnEveryNewGrant) {
    LeaseTable table;
    auto a = table.acquire(web1, "hv1", 2s, t0);
    ASSERT_TRUE(a.change && a.persist);
    table.apply(web1, *a.change);
    EXPECT_EQ(a.state.holder, "hv1");
    EXPECT_EQ(a.state.epoch, 1u);
    auto b = table.acquire(web1, "hv2", 2s, t0 + 1s);
    EXPECT_FALSE(b.change);
    EXPECT_EQ(b.state.holder, "hv1");
    EXPECT_EQ(b.state.remaining, 1s);
    // Renewal: same epoch, nothing to persist when the TTL does not grow.
    auto r = table.renew(web1, "hv1", 2s, t0 + 1s);
    ASSERT_TRUE(r.change);
    EXPECT_FALSE(r.persist);
    table.apply(web1, *r.change);
    EXPECT_EQ(r.state.epoch, 1u);
    EXPECT_EQ(table.query(web1, t0 + 2500ms).holder, "hv1");
    // hv2 may not renew what it does not hold.
    EXPECT_EQ(table.renew(web1, "hv2", 2s, t0 + 2s).state.holder, "hv1");
    // Expired at t0+3s: hv2 takes it with a higher epoch.
    auto c = table.acquire(web1, "hv2", 2s, t0 + 3s);
    ASSERT_TRUE(c.change && c.persist);
    table.apply(web1, *c.change);
    EXPECT_EQ(c.state.holder, "hv2");
    EXPECT_EQ(c.state.epoch, 2u);
    // The old holder cannot renew any more.
    EXPECT_EQ(table.renew(web1, "hv1", 2s, t0 + 3s).state.holder, "hv2");
    // Release frees it at once; only the holder can release.
    EXPECT_FALSE(table.release(web1, "hv1", t0 + 3s).change);
    auto d = table.release(web1, "hv2", t0 + 3s);
    ASSERT_TRUE(d.change && d.persist);
    table.apply(web1, *d.change);
    EXPECT_EQ(table.query(web1, t0 + 3s).holder, "");
    auto e = table.acquire(web1, "hv1", 2s, t0 + 3s);
    EXPECT_EQ(e.state.epoch, 3u);
}

TEST(LeaseTable, AfterARestartEveryHeldLeaseLastsItsFullTtlFromTheRestart) {
    LeaseTable table;
    table.load({{web1, "hv1", 7, 5s}, {{"hv1+hv2", "db1"}, "", 3, 0s}}, t0);
    EXPECT_EQ(table.query(web1, t0).holder, "hv1");
    EXPECT_EQ(table.query(web1, t0).remaining, 5s);
    EXPECT_EQ(table.acquire(web1, "hv2", 2s, t0 + 4999ms).state.holder, "hv1");
    EXPECT_EQ(table.acquire(web1, "hv2", 2s, t0 + 5s).state.epoch, 8u);
    // The holder may renew right away, keeping its epoch.
    EXPECT_EQ(table.renew(web1, "hv1", 5s, t0 + 1s).state.epoch, 7u);
    // A released lease is free at once, and its epoch goes on from where it was.
    EXPECT_EQ(table.acquire({"hv1+hv2", "db1"}, "hv2", 2s, t0).state.epoch, 4u);
}

TEST(LeaseTable, RecordsWithDoesNotApply) {
    LeaseTable table;
    auto a = table.acquire(web1, "hv1", 2s, t0);
    const auto records = table.records_with(web1, *a.change);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].holder, "hv1");
    EXPECT_EQ(table.size(), 0u);
}

TEST(StateFile, RoundTripsAndRefusesDamage) {
    imagesync_test::TempDir dir;
    const auto file = dir / "leases.json";
    auto empty = vmha::witness::load_state(file);
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
    ASSERT_TRUE(
        vmha::witness::save_state(file, {{web1, "hv1", 3, 2s}, {{"hv3+hv4", "db1"}, "", 1, 0s}}));
    auto back = vmha::witness::load_state(file);
    ASSERT_TRUE(back);
    ASSERT_EQ(back->size(), 2u);
    EXPECT_EQ((*back)[0].key, web1);
    EXPECT_EQ((*back)[0].holder, "hv1");
    EXPECT_EQ((*back)[0].epoch, 3u);
    EXPECT_EQ((*back)[0].ttl, 2s);
    EXPECT_FALSE(std::filesystem::exists(dir / "leases.json.tmp"));
    for (
        const std::string bad :
        {"{", "[]", R"({"version":2,"leases":[]})",
         R"({"version":1,"leases":[{"pair":"hv2+hv1","module":"m","holder":"","epoch":1,"ttl_ms":5}]})"}) {
        imagesync_test::write_file(file, bad);
        auto r = vmha::witness::load_state(file);
        ASSERT_FALSE(r) << bad;
        EXPECT_TRUE(r.error().is(errc::invalid_config));
        EXPECT_NE(r.error().message.find("damaged"), std::string::npos) << r.error().message;
        EXPECT_EQ(imagesync_test::read_file(file), bad);  // kept as it was
    }
}

TEST(Wire, RequestsRoundTripAndBadOnesAreRefused) {
    const wire::Request r{42, wire::Op::acquire, web1, 1500ms};
    auto back = wire::parse_request(wire::encode(r));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->id, 42u);
    EXPECT_EQ(back->op, wire::Op::acquire);
    EXPECT_EQ(back->key, web1);
    EXPECT_EQ(back->ttl, 1500ms);
    using nlohmann::json;
    for (const json& bad :
         {json{{"id", 1}, {"op", "steal"}, {"pair", "hv1+hv2"}, {"module", "m"}},
          json{{"id", 1}, {"op", "query"}, {"pair", "hv2+hv1"}, {"module", "m"}},
          json{{"id", 1}, {"op", "query"}, {"pair", "hv1"}, {"module", "m"}},
          json{{"id", 1}, {"op", "query"}, {"pair", "hv1+hv2"}, {"module", "a/b"}},
          json{{"id", -1}, {"op", "query"}, {"pair", "hv1+hv2"}, {"module", "m"}},
          json{{"id", 1}, {"op", "acquire"}, {"pair", "hv1+hv2"}, {"module", "m"}},
          json{{"id", 1}, {"op", "acquire"}, {"pair", "hv1+hv2"}, {"module", "m"}, {"ttl_ms", 5}},
          json{{"id", 1},
               {"op", "acquire"},
               {"pair", "hv1+hv2"},
               {"module", "m"},
               {"ttl_ms", 10'000'000}}}) {
        auto p = wire::parse_request(bad);
        ASSERT_FALSE(p) << bad.dump();
        EXPECT_TRUE(p.error().is(errc::protocol_error)) << bad.dump();
    }
}

TEST(Wire, RepliesRoundTripWithTheirErrors) {
    auto ok = wire::parse_reply(wire::encode(wire::Reply{7, LeaseState{"hv2", 900ms, 2s, 5}}));
    ASSERT_TRUE(ok && ok->result);
    EXPECT_EQ(ok->result->holder, "hv2");
    EXPECT_EQ(ok->result->remaining, 900ms);
    EXPECT_EQ(ok->result->epoch, 5u);
    auto err =
        wire::parse_reply(wire::encode(wire::Reply{8, vmha::Error(errc::permission_denied, "no")}));
    ASSERT_TRUE(err);
    ASSERT_FALSE(err->result);
    EXPECT_TRUE(err->result.error().is(errc::permission_denied));
    EXPECT_FALSE(wire::parse_reply(nlohmann::json{{"id", 1},
                                                  {"ok", true},
                                                  {"holder", "x"},
                                                  {"remaining_ms", 5},
                                                  {"ttl_ms", 1},
                                                  {"epoch", 1}}));
    EXPECT_FALSE(wire::parse_hello(wire::hello("node", "hv1"), "witness"));
    auto v2 = wire::hello("node", "hv1");
    v2["version"] = 2;
    EXPECT_TRUE(wire::parse_hello(v2, "node").error().is(errc::version_mismatch));
}

TEST(WitnessConfig, ParsesAndRefusesWithTheFileAndLine) {
    imagesync_test::TempDir dir;
    const auto file = dir / "witness.yaml";
    imagesync_test::write_file(
        file,
        "name: w1\nlisten: 127.0.0.1:7950\ntls: {ca: a, cert: b, key: c}\n"
        "state_file: /x/leases.json\npairs:\n  - nodes: [hv2, hv1]\n    modules: [web1]\n"
        "  - nodes: [hv3, hv4]\n");
    auto c = vmha::witness::load_witness_config(file);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->listen_port, 7950);
    EXPECT_EQ(c->state_file, "/x/leases.json");
    EXPECT_TRUE(c->allows("hv1", "hv1+hv2", "web1"));
    EXPECT_TRUE(c->allows("hv1", "hv1+hv2", "db1").error().is(errc::permission_denied));
    EXPECT_TRUE(c->allows("hv3", "hv1+hv2", "web1").error().is(errc::permission_denied));
    EXPECT_TRUE(c->allows("hv4", "hv3+hv4", "anything"));
    EXPECT_FALSE(c->allows("hv5", "hv5+hv6", "web1"));
    imagesync_test::write_file(file, "name: w1\nlisten: nowhere\ntls: {ca: a, cert: b, key: c}\n");
    auto bad = vmha::witness::load_witness_config(file);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find(file.string() + ":2:"), std::string::npos)
        << bad.error().message;
    imagesync_test::write_file(file, "name: w1\ntls: {ca: a, cert: b, key: c}\nstate: x\n");
    EXPECT_NE(
        vmha::witness::load_witness_config(file).error().message.find("unknown key \"state\""),
        std::string::npos);
}

}  // namespace
