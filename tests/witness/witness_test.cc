// vmha-witness as a real process on a private port, with real certificates, and the
// witness lease backend as its client.
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include "frame.h"
#include "lease_test_util.h"
#include "tls.h"

namespace {

using namespace lease_test;
using vmha::errc;
using vmha::lease::LeaseTiming;
using vmha::lease::LeaseView;
namespace asio = boost::asio;

class Witness : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        certs_ = new imagesync_test::TempDir();
        make_certs(certs_->path());
    }
    static void TearDownTestSuite() {
        delete certs_;
        certs_ = nullptr;
    }

    void SetUp() override {
        port_ = imagesync_test::free_port();
        write_config("");
    }

    void write_config(const std::string& extra) {
        const auto& c = certs_->path();
        imagesync_test::write_file(
            dir_ / "witness.yaml",
            "name: witness1\nlisten: 127.0.0.1:" + std::to_string(port_) + "\ntls:\n  ca: " +
                (c / "ca.pem").string() + "\n  cert: " + (c / "witness1.pem").string() +
                "\n  key: " + (c / "witness1.key").string() +
                "\nstate_file: " + (dir_ / "leases.json").string() + "\n" + extra);
    }

    ::testing::AssertionResult start_witness() {
        witness_ = std::make_unique<Process>(
            std::vector<std::string>{VMHA_WITNESS_PATH, "--config",
                                     (dir_ / "witness.yaml").string(), "--log-level", "debug"},
            dir_ / "witness.log");
        return wait_port(witness_->pid(), port_, dir_ / "witness.log");
    }

    std::unique_ptr<LeaseBackend> client(const std::string& node, const fs::path& cert_dir) {
        vmha::lease::WitnessBackendOptions o;
        o.host = "127.0.0.1";
        o.port = port_;
        o.node = node;
        o.witness_name = "witness1";
        o.tls = {(cert_dir / "ca.pem").string(), (cert_dir / (node + ".pem")).string(),
                 (cert_dir / (node + ".key")).string()};
        auto b = vmha::lease::make_witness_backend(io_.get_executor(), o);
        EXPECT_TRUE(b) << b.error().message;
        return b ? std::move(*b) : nullptr;
    }
    std::unique_ptr<LeaseBackend> client(const std::string& node) {
        return client(node, certs_->path());
    }

    // hv2 polls acquire until granted (deadline 20 s); answers the grant and when it came.
    std::pair<LeaseState, Clock::time_point> take_over(LeaseBackend& b, const std::string& node,
                                                       const LeaseKey& key,
                                                       std::chrono::milliseconds ttl) {
        const auto deadline = Clock::now() + 20s;
        while (Clock::now() < deadline) {
            auto r = acquire(io_, b, key, node, ttl);
            const auto at = Clock::now();
            if (!r) {
                ADD_FAILURE() << r.error().message;
                break;
            }
            if (r->held_by(node)) return {*r, at};
            EXPECT_LE(r->remaining, r->ttl);
            run_for(io_, 50ms);  // poll interval
        }
        ADD_FAILURE() << node << " never got the lease";
        return {};
    }

    static imagesync_test::TempDir* certs_;
    imagesync_test::TempDir dir_;
    std::uint16_t port_ = 0;
    asio::io_context io_;
    std::unique_ptr<Process> witness_;
};

imagesync_test::TempDir* Witness::certs_ = nullptr;

const LeaseKey web1{"hv1+hv2", "web1"};

TEST_F(Witness, TwoClientsContendOnlyOneHolds) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    auto hv2 = client("hv2");
    auto a = acquire(io_, *hv1, web1, "hv1", 5s);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_TRUE(a->held_by("hv1"));
    EXPECT_EQ(a->epoch, 1u);
    EXPECT_EQ(a->remaining, 5s);
    auto b = acquire(io_, *hv2, web1, "hv2", 5s);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_FALSE(b->held_by("hv2"));
    EXPECT_EQ(b->holder, "hv1");
    EXPECT_GT(b->remaining, 0ms);
    EXPECT_EQ(b->epoch, 1u);
    auto q = query(io_, *hv2, web1);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->holder, "hv1");
    // A node speaks only for itself.
    EXPECT_TRUE(acquire(io_, *hv2, web1, "hv1", 5s).error().is(errc::invalid_argument));
}

TEST_F(Witness, RenewKeepsTheLeasePastItsTtl) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    auto hv2 = client("hv2");
    const auto ttl = 1500ms;
    auto a = acquire(io_, *hv1, web1, "hv1", ttl);
    ASSERT_TRUE(a && a->held_by("hv1"));
    const auto start = Clock::now();
    while (Clock::now() - start < 3 * ttl) {
        run_for(io_, 150ms);  // renewal period of the test
        auto r = renew(io_, *hv1, web1, "hv1", ttl);
        ASSERT_TRUE(r) << r.error().message;
        ASSERT_TRUE(r->held_by("hv1"));
        EXPECT_EQ(r->epoch, a->epoch);
        auto b = acquire(io_, *hv2, web1, "hv2", ttl);
        ASSERT_TRUE(b);
        EXPECT_EQ(b->holder, "hv1");
    }
}

TEST_F(Witness, ExpiryThenTakeoverWithAHigherEpochNeverBeforeTheHolderGaveUp) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    auto hv2 = client("hv2");
    const auto ttl = 1000ms;
    LeaseView view("hv1", LeaseTiming{0.01, 100ms});
    const auto sent = Clock::now();
    auto a = acquire(io_, *hv1, web1, "hv1", ttl);
    ASSERT_TRUE(a && a->held_by("hv1"));
    view.on_reply(sent, *a);
    auto [granted, at] = take_over(*hv2, "hv2", web1, ttl);
    EXPECT_EQ(granted.epoch, a->epoch + 1);
    // The safety property: hv2 got it only after hv1's own view had let it go, and not
    // before the witness's TTL from hv1's request.
    EXPECT_FALSE(view.holds(at));
    EXPECT_GE(at - sent, ttl);
    // hv1's renewal now answers the new holder.
    auto r = renew(io_, *hv1, web1, "hv1", ttl);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->holder, "hv2");
    view.on_reply(Clock::now(), *r);
    EXPECT_FALSE(view.holds(Clock::now()));
}

TEST_F(Witness, ReleaseFreesTheLeaseAtOnce) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    auto hv2 = client("hv2");
    auto a = acquire(io_, *hv1, web1, "hv1", 60s);
    ASSERT_TRUE(a && a->held_by("hv1"));
    // hv2 cannot release what it does not hold.
    ASSERT_TRUE(release(io_, *hv2, web1, "hv2"));
    EXPECT_EQ(query(io_, *hv2, web1)->holder, "hv1");
    ASSERT_TRUE(release(io_, *hv1, web1, "hv1"));
    auto b = acquire(io_, *hv2, web1, "hv2", 60s);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->held_by("hv2"));
    EXPECT_EQ(b->epoch, a->epoch + 1);
}

TEST_F(Witness, AKilledWitnessKeepsItsGrantsForTheFullTtlFromItsRestart) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    auto hv2 = client("hv2");
    const auto ttl = 2000ms;
    auto a = acquire(io_, *hv1, web1, "hv1", ttl);
    ASSERT_TRUE(a && a->held_by("hv1"));
    ASSERT_TRUE(release(io_, *hv1, {"hv1+hv2", "db1"}, "hv1"));  // an entry that is free
    ASSERT_TRUE(witness_->stop(SIGKILL));
    // Let more than the TTL pass while it is down: it cannot know, so it must still keep the grant.
    run_for(io_, ttl + 200ms);
    const auto restarted = Clock::now();
    ASSERT_TRUE(start_witness());
    // The first request after the restart reconnects; the holder renews with its epoch.
    auto renewal_sent = Clock::now();
    auto r = renew(io_, *hv1, web1, "hv1", ttl);
    if (!r && r.error().is(errc::connection_lost)) {
        renewal_sent = Clock::now();
        r = renew(io_, *hv1, web1, "hv1", ttl);
    }
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->held_by("hv1"));
    EXPECT_EQ(r->epoch, a->epoch);
    auto b = acquire(io_, *hv2, web1, "hv2", ttl);
    if (!b && b.error().is(errc::connection_lost)) b = acquire(io_, *hv2, web1, "hv2", ttl);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(b->holder, "hv1");
    auto [granted, at] = take_over(*hv2, "hv2", web1, ttl);
    EXPECT_GE(at - restarted, ttl);
    EXPECT_GE(at - renewal_sent, ttl);
    EXPECT_EQ(granted.epoch, a->epoch + 1);
}

TEST_F(Witness, RestartWithoutAHolderGrantsAtOnce) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    ASSERT_TRUE(acquire(io_, *hv1, web1, "hv1", 60s)->held_by("hv1"));
    ASSERT_TRUE(release(io_, *hv1, web1, "hv1"));
    ASSERT_TRUE(witness_->stop(SIGTERM));
    ASSERT_TRUE(start_witness());
    auto hv2 = client("hv2");
    auto b = acquire(io_, *hv2, web1, "hv2", 60s);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_TRUE(b->held_by("hv2"));
    EXPECT_EQ(b->epoch, 2u);
}

TEST_F(Witness, ExitsCleanlyOnSigterm) {
    ASSERT_TRUE(start_witness());
    auto status = witness_->stop(SIGTERM);
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
}

TEST_F(Witness, ACertificateFromAnotherCaIsRefused) {
    ASSERT_TRUE(start_witness());
    auto stranger = client("hv2", certs_->path() / "other");
    auto r = acquire(io_, *stranger, web1, "hv2", 5s);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().is(errc::connection_lost)) << r.error().message;
    EXPECT_NE(r.error().message.find("does not verify"), std::string::npos) << r.error().message;
    {
        // A client that trusts the witness but presents a certificate of another CA.
        asio::io_context io;
        asio::ssl::context ctx(asio::ssl::context::tls);
        ctx.load_verify_file((certs_->path() / "ca.pem").string());
        ctx.use_certificate_chain_file((certs_->path() / "other" / "hv2.pem").string());
        ctx.use_private_key_file((certs_->path() / "other" / "hv2.key").string(),
                                 asio::ssl::context::pem);
        ctx.set_verify_mode(asio::ssl::verify_peer);
        asio::ssl::stream<asio::ip::tcp::socket> stream(io, ctx);
        stream.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port_});
        boost::system::error_code ec;
        stream.handshake(asio::ssl::stream_base::client, ec);
        // TLS 1.3: the client may finish before the witness's verdict; the first read sees it.
        std::array<std::uint8_t, 16> buf{};
        if (!ec) stream.read_some(asio::buffer(buf), ec);
        EXPECT_TRUE(ec);
    }
    auto hv1 = client("hv1");
    EXPECT_TRUE(acquire(io_, *hv1, web1, "hv1", 5s)->held_by("hv1"));
    EXPECT_NE(
        imagesync_test::read_file(witness_->log()).find("does not verify against the cluster CA"),
        std::string::npos);
}

TEST_F(Witness, ANodeOutsideThePairOrTheAllowedListIsRefused) {
    write_config("pairs:\n  - nodes: [hv1, hv2]\n    modules: [web1]\n");
    ASSERT_TRUE(start_witness());
    auto hv3 = client("hv3");
    auto r = acquire(io_, *hv3, web1, "hv3", 5s);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().is(errc::permission_denied)) << r.error().message;
    auto hv1 = client("hv1");
    EXPECT_TRUE(
        acquire(io_, *hv1, {"hv1+hv2", "db1"}, "hv1", 5s).error().is(errc::permission_denied));
    EXPECT_TRUE(acquire(io_, *hv1, web1, "hv1", 5s)->held_by("hv1"));
}

// A TLS client with a good certificate that sends bytes of its own.
class RawClient {
  public:
    RawClient(std::uint16_t port, const fs::path& certs, const std::string& node)
        : ctx_(*vmha::peer::detail::make_tls_context(
              vmha::config::Tls{(certs / "ca.pem").string(), (certs / (node + ".pem")).string(),
                                (certs / (node + ".key")).string()},
              node)),
          stream_(io_, *ctx_) {
        stream_.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
        stream_.handshake(asio::ssl::stream_base::client);
    }
    void send(const std::vector<std::uint8_t>& bytes) { asio::write(stream_, asio::buffer(bytes)); }
    void send_hello(const std::string& node) {
        send(vmha::peer::detail::encode_frame(
            vmha::peer::detail::FrameType::hello,
            {{"protocol", "vmha-witness"}, {"version", 1}, {"node", node}}));
        std::array<std::uint8_t, 12> header{};
        asio::read(stream_, asio::buffer(header));
        auto h = vmha::peer::detail::decode_frame_header(header);
        ASSERT_TRUE(h);
        std::vector<std::uint8_t> payload(h->length);
        asio::read(stream_, asio::buffer(payload));
        ASSERT_EQ(h->type, vmha::peer::detail::FrameType::hello);
    }
    // True when the witness closed the connection (reads end) within 10 s.
    bool closed_by_peer() {
        stream_.lowest_layer().non_blocking(true);
        const auto deadline = Clock::now() + 10s;
        std::array<std::uint8_t, 256> buf{};
        while (Clock::now() < deadline) {
            boost::system::error_code ec;
            stream_.read_some(asio::buffer(buf), ec);
            if (ec == asio::error::would_block ||
                ec == asio::ssl::error::stream_errors::stream_truncated) {
                if (ec == asio::ssl::error::stream_errors::stream_truncated) return true;
                std::this_thread::sleep_for(10ms);  // poll interval
                continue;
            }
            if (ec) return true;
        }
        return false;
    }

  private:
    asio::io_context io_;
    std::shared_ptr<asio::ssl::context> ctx_;
    asio::ssl::stream<asio::ip::tcp::socket> stream_;
};

std::vector<std::uint8_t> header(std::uint32_t magic, std::uint8_t version, std::uint8_t type,
                                 std::uint16_t flags, std::uint32_t length) {
    std::vector<std::uint8_t> out;
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(magic >> s));
    out.push_back(version);
    out.push_back(type);
    out.push_back(static_cast<std::uint8_t>(flags >> 8));
    out.push_back(static_cast<std::uint8_t>(flags));
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(length >> s));
    return out;
}

TEST_F(Witness, MalformedFramesCloseOneConnectionAndTheWitnessServesOn) {
    ASSERT_TRUE(start_witness());
    auto hv1 = client("hv1");
    ASSERT_TRUE(acquire(io_, *hv1, web1, "hv1", 30s)->held_by("hv1"));
    auto json_frame = [](const std::string& body) {
        auto h = header(0x564D4850, 1, 3, 0, static_cast<std::uint32_t>(body.size()));
        h.insert(h.end(), body.begin(), body.end());
        return h;
    };
    const std::vector<std::pair<std::string, std::vector<std::uint8_t>>> cases = {
        {"bad magic", header(0x12345678, 1, 3, 0, 2)},
        {"bad version", header(0x564D4850, 9, 3, 0, 2)},
        {"unknown type", header(0x564D4850, 1, 77, 0, 2)},
        {"reserved flags", header(0x564D4850, 1, 3, 1, 2)},
        {"huge length", header(0x564D4850, 1, 3, 0, 0xFFFFFFF0)},
        {"not JSON", json_frame("{not json")},
        {"not a request", json_frame(R"({"id":1,"op":"steal","pair":"hv1+hv2","module":"web1"})")},
        {"a second HELLO",
         [] {
             auto h = header(0x564D4850, 1, 1, 0, 2);
             h.push_back('{');
             h.push_back('}');
             return h;
         }()},
    };
    for (const auto& [what, bytes] : cases) {
        RawClient raw(port_, certs_->path(), "hv2");
        raw.send_hello("hv2");
        raw.send(bytes);
        EXPECT_TRUE(raw.closed_by_peer()) << what;
        // The other connection and the grants are untouched.
        auto r = renew(io_, *hv1, web1, "hv1", 30s);
        ASSERT_TRUE(r) << what << ": " << r.error().message;
        EXPECT_TRUE(r->held_by("hv1")) << what;
    }
    {
        // HELLO naming another node than the certificate: refused.
        RawClient raw(port_, certs_->path(), "hv2");
        raw.send(vmha::peer::detail::encode_frame(
            vmha::peer::detail::FrameType::hello,
            {{"protocol", "vmha-witness"}, {"version", 1}, {"node", "hv1"}}));
        EXPECT_TRUE(raw.closed_by_peer());
    }
    EXPECT_TRUE(witness_->running());
    const auto log = imagesync_test::read_file(witness_->log());
    EXPECT_NE(log.find("bad frame magic"), std::string::npos);
    EXPECT_NE(log.find("expected node \"hv1\""), std::string::npos);
}

TEST_F(Witness, ManyModulesAndTwoPairsAtOnce) {
    ASSERT_TRUE(start_witness());
    std::map<std::string, std::unique_ptr<LeaseBackend>> nodes;
    for (const char* n : {"hv1", "hv2", "hv3", "hv4"}) nodes[n] = client(n);
    const std::vector<std::pair<std::string, std::vector<std::string>>> pairs = {
        {"hv1+hv2", {"hv1", "hv2"}}, {"hv3+hv4", {"hv3", "hv4"}}};
    constexpr int modules = 20;
    // Every node asks for every module of its pair, all requests in flight at once.
    std::map<std::tuple<std::string, std::string, std::string>, std::optional<Result<LeaseState>>>
        answers;
    for (const auto& [pair, members] : pairs) {
        for (int m = 0; m < modules; ++m) {
            for (const auto& node : members) {
                const LeaseKey key{pair, "m" + std::to_string(m)};
                auto& slot = answers[{pair, key.module, node}];
                nodes[node]->acquire(key, node, 30s,
                                     [&slot](Result<LeaseState> r) { slot = std::move(r); });
            }
        }
    }
    const auto deadline = Clock::now() + 20s;
    io_.restart();
    auto all_done = [&] {
        return std::all_of(answers.begin(), answers.end(),
                           [](const auto& a) { return a.second.has_value(); });
    };
    while (!all_done() && Clock::now() < deadline) io_.run_one_for(50ms);
    ASSERT_TRUE(all_done());
    for (const auto& [pair, members] : pairs) {
        for (int m = 0; m < modules; ++m) {
            const std::string module = "m" + std::to_string(m);
            int holders = 0;
            std::string holder;
            for (const auto& node : members) {
                const auto& r = *answers[{pair, module, node}];
                ASSERT_TRUE(r) << r.error().message;
                if (r->held_by(node)) ++holders;
                if (holder.empty()) holder = r->holder;
                EXPECT_EQ(r->holder, holder) << pair << " " << module;  // both saw the same holder
                EXPECT_EQ(r->epoch, 1u);
            }
            EXPECT_EQ(holders, 1) << pair << " " << module;
        }
    }
    // A node of one pair cannot touch the other pair's leases.
    auto r = acquire(io_, *nodes["hv1"], {"hv3+hv4", "m0"}, "hv1", 5s);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().is(errc::permission_denied));
}

TEST_F(Witness, ABadConfigOrStateFileStopsItWithAClearError) {
    imagesync_test::write_file(dir_ / "leases.json", "{damaged");
    Process w({VMHA_WITNESS_PATH, "--config", (dir_ / "witness.yaml").string()}, dir_ / "bad.log");
    auto status = w.wait_exit(20s);
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);
    EXPECT_NE(imagesync_test::read_file(dir_ / "bad.log").find("is damaged"), std::string::npos);
    EXPECT_EQ(imagesync_test::read_file(dir_ / "leases.json"), "{damaged");
    auto help = imagesync_test::run_tool({VMHA_WITNESS_PATH, "--help"}, dir_.path(),
                                         std::chrono::seconds(20));
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_NE(help.output.find("--config"), std::string::npos);
}

}  // namespace
