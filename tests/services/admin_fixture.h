// A running AdminServer (on its own loop thread) with a scripted fake handler, for the admin
// socket tests and the `vmha` CLI tests.
#pragma once

#include <sys/stat.h>

#include <mutex>

#include <vmha/services/admin_server.h>

#include "harness.h"

namespace services_test {

// Answers like a vmhad with one module "web1" on node hv1. `swap` is held until a client
// sends "release" (so a test can prove that one slow verb does not hold up other clients);
// "fail" is refused with errc::busy.
class FakeHandler : public vmha::services::AdminHandler {
public:
    static nlohmann::json status_result() {
        return nlohmann::json::parse(R"({"node":"hv1","modules":[{"name":"web1","state":"PRIM",
            "reason":"peer hv2 is SECOND and UpToDate","data_state":"UpToDate",
            "vm":{"domain":"web1","state":"running","reason":"booted"},
            "peer":{"node":"hv2","liveness":"alive","channel":"up","state":"SECOND",
                    "reason":"receiving replication","data_state":"UpToDate"},
            "replication":{"connection":"sync_source","role":"primary","dirty_bytes":1048576,
                           "resync":{"bytes_done":3145728,"bytes_total":4194304,"rate":1048576,
                                     "eta_seconds":1}},
            "restarts":{"used":1,"attempts":3,"window_seconds":86400},
            "checkers":[{"name":"vm","verdict":"healthy","reason":"running"}]}]})");
    }

    void handle(const std::string& verb, const nlohmann::json& request,
                std::function<void(vmha::Result<nlohmann::json>)> done) override {
        const std::string module = request.value("module", "");
        {
            std::lock_guard lock(mutex);
            seen.push_back(verb + (module.empty() ? "" : " " + module));
        }
        if (!module.empty() && module != "web1") {
            done(vmha::Error(vmha::errc::not_found,
                             "module \"" + module + "\" is not configured on hv1"));
            return;
        }
        if (verb == "status") {
            done(status_result());
        } else if (verb == "start" || verb == "stop") {
            done(nlohmann::json{{"message", "module \"web1\": " + verb + " done"}});
        } else if (verb == "swap") {
            held_swaps.push_back(std::move(done));  // answered by "release"
        } else if (verb == "release") {
            for (auto& d : held_swaps) d(nlohmann::json{{"message", "module \"web1\" runs on hv2"}});
            held_swaps.clear();
            done(nlohmann::json::object());
        } else if (verb == "fail") {
            done(vmha::Error(vmha::errc::busy, "module \"web1\": a swap is in progress"));
        } else {
            done(vmha::Error(vmha::errc::invalid_argument, "unknown verb \"" + verb + "\""));
        }
    }

    std::vector<std::string> verbs() {
        std::lock_guard lock(mutex);
        return seen;
    }

private:
    std::mutex mutex;
    std::vector<std::string> seen;
    std::vector<std::function<void(vmha::Result<nlohmann::json>)>> held_swaps;  // loop thread
};

class AdminFixture : public ::testing::Test {
protected:
    void SetUp() override {
        socket_path = dir / "admin.sock";
        server = std::make_unique<vmha::services::AdminServer>(loop.io(), socket_path, handler);
        auto s = server->listen();
        ASSERT_TRUE(s) << s.error().message;
        server->start();
    }
    void TearDown() override {
        loop.call([&] { server->stop(); });
        loop.join();
        server.reset();
    }

    TempDir dir;
    fs::path socket_path;
    FakeHandler handler;
    LoopThread loop;
    std::unique_ptr<vmha::services::AdminServer> server;
};

}  // namespace services_test
