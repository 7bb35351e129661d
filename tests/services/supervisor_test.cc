// ImagesyncSupervisor and ImagesyncControl with the real imagesyncd: spawn, status, restart
// after kill -9, detach and re-attach (an NBD client keeps its connection across it), stop, and
// a stale pid file that must not be adopted.
#include <fcntl.h>
#include <sys/stat.h>

#include <set>

#include <vmha/services/imagesync_supervisor.h>

#include "harness.h"

namespace services_test {
namespace {

using vmha::services::ImagesyncControl;
using vmha::services::ImagesyncSupervisor;
using Event = ImagesyncSupervisor::Event;

class SupervisorTest : public ::testing::Test {
protected:
    void SetUp() override {
        image = dir / "web1.img";
        std::string bytes(1 << 20, '\0');
        std::fill(bytes.begin(), bytes.begin() + 4096, '\xab');
        write_file(image, bytes);

        module.name = "web1";
        module.vm.name = "web1";
        module.disks.push_back({image.string(), "web1", vmha::config::DiskFormat::raw, "", {}});
        module.replication.port = free_port();
        module.replication.timeout = std::chrono::seconds(3);
        for (const char* n : {"hv1", "hv2"}) {
            vmha::config::ModuleNode mn;
            mn.name = n;
            mn.address = *vmha::config::parse_host("127.0.0.1");
            module.nodes.push_back(mn);
        }
        node.name = "hv1";
        node.state_dir = (dir / "state").string();
        node.run_dir = (dir / "run").string();
        options.imagesyncd = IMAGESYNCD_PATH;
        options.initial_backoff = 50ms;
        options.ready_timeout = 20s;
        options.stop_timeout = 10s;
        options.log_level = "debug";
    }
    void TearDown() override {
        supervisor.reset();
        for (const pid_t p : pids) {  // whatever a failing test left running
            if (::kill(p, 0) == 0) {
                ::kill(p, SIGKILL);
                ::waitpid(p, nullptr, 0);
            }
        }
        const auto log = dir / "run" / "web1" / "imagesyncd.log";
        if (HasFailure() && fs::exists(log)) {
            std::fprintf(stderr, "---- imagesyncd log ----\n%s\n----\n", read_file(log).c_str());
        }
    }

    std::unique_ptr<ImagesyncSupervisor> make() {
        return std::make_unique<ImagesyncSupervisor>(io, module, node, options, [this](const Event& e) {
            events.push_back(e);
            if (e.pid > 0) pids.insert(e.pid);
        });
    }
    // Runs the loop until an event of `kind` arrives after `from` events; its index.
    std::optional<std::size_t> wait_event(Event::Kind kind, std::size_t from = 0,
                                          std::chrono::milliseconds timeout = 30s) {
        std::optional<std::size_t> found;
        run_until(io, [&] {
            for (std::size_t i = from; i < events.size(); ++i) {
                if (events[i].kind == kind) {
                    found = i;
                    return true;
                }
            }
            return false;
        }, timeout);
        return found;
    }
    vmha::Result<nlohmann::json> call(const std::function<void(ImagesyncControl::Callback)>& start) {
        std::optional<vmha::Result<nlohmann::json>> result;
        start([&](vmha::Result<nlohmann::json> r) { result = std::move(r); });
        if (!run_until(io, [&] { return result.has_value(); }, 30s)) {
            return vmha::Error(vmha::errc::timeout, "the test's deadline passed");
        }
        return std::move(*result);
    }
    static bool alive(pid_t p) {
        // Not a zombie: /proc/PID/stat's state is not Z.
        const auto stat = read_file(fmt::format("/proc/{}/stat", p));
        const auto close = stat.rfind(')');
        return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
    }

    TempDir dir;
    fs::path image;
    vmha::config::Module module;
    vmha::config::Node node;
    vmha::services::SupervisorOptions options;
    boost::asio::io_context io;
    std::vector<Event> events;
    std::set<pid_t> pids;
    std::unique_ptr<ImagesyncSupervisor> supervisor;
};

TEST_F(SupervisorTest, CommandLine) {
    module.nodes[1].replication_address = *vmha::config::parse_host("fd00::2");
    module.disks.push_back({"/var/lib/vm/web1-data.qcow2", "data", vmha::config::DiskFormat::qcow2, "", {}});
    module.replication.resync_rate = 1000000;
    auto argv = vmha::services::imagesyncd_argv(module, node, "/usr/sbin/imagesyncd");
    ASSERT_TRUE(argv) << argv.error().message;
    auto has = [&](const std::string& flag, const std::string& value) {
        for (std::size_t i = 0; i + 1 < argv->size(); ++i) {
            if ((*argv)[i] == flag && (*argv)[i + 1] == value) return true;
        }
        return false;
    };
    const std::string run = (dir / "run" / "web1").string();
    EXPECT_EQ(argv->front(), "/usr/sbin/imagesyncd");
    EXPECT_TRUE(has("--nbd-socket", run + "/nbd.sock"));
    EXPECT_TRUE(has("--control-socket", run + "/imagesync.sock"));
    EXPECT_TRUE(has("--meta-dir", (dir / "state" / "web1" / "meta").string()));
    EXPECT_TRUE(has("--role", "secondary"));
    EXPECT_TRUE(has("--module", "web1"));
    EXPECT_TRUE(has("--node", "hv1"));
    EXPECT_TRUE(has("--listen", fmt::format("127.0.0.1:{}", module.replication.port)));
    EXPECT_TRUE(has("--peer", fmt::format("[fd00::2]:{}", module.replication.port)));
    EXPECT_TRUE(has("--timeout-ms", "3000"));
    EXPECT_TRUE(has("--resync-rate", "1000000"));
    EXPECT_TRUE(has("--split-brain", "disconnect"));
    EXPECT_TRUE(has("--chunk-size", "65536"));
    EXPECT_TRUE(has("--al-extent", "4194304"));
    EXPECT_TRUE(has("--tcp-congestion", "cubic"));
    EXPECT_TRUE(has("--image", "web1=" + image.string()));
    EXPECT_TRUE(has("--image", "data=/var/lib/vm/web1-data.qcow2"));
    EXPECT_NE(std::find(argv->begin(), argv->end(), "--growable"), argv->end());
    EXPECT_NE(std::find(argv->begin(), argv->end(), "--fence"), argv->end());

    node.name = "hv9";
    auto refused = vmha::services::imagesyncd_argv(module, node, "/usr/sbin/imagesyncd");
    ASSERT_FALSE(refused);
    EXPECT_TRUE(refused.error().is(vmha::errc::not_found));
    EXPECT_EQ(refused.error().message, "module \"web1\" is not configured on node \"hv9\"");
}

TEST_F(SupervisorTest, SpawnStatusKillRestartStop) {
    supervisor = make();
    ASSERT_TRUE(supervisor->start());
    auto running = wait_event(Event::Kind::running);
    ASSERT_TRUE(running) << "imagesyncd did not come up";
    const pid_t first = events[*running].pid;
    EXPECT_FALSE(events[*running].reattached);
    EXPECT_EQ(supervisor->pid(), first);
    EXPECT_EQ(supervisor->state(), ImagesyncSupervisor::State::running);
    EXPECT_EQ(read_file(supervisor->paths().pid_file), std::to_string(first) + "\n");
    // Its own session: it survives the death of vmhad's process group and terminal.
    EXPECT_EQ(::getsid(first), first);

    auto status = call([&](auto cb) { supervisor->control().status(cb); });
    ASSERT_TRUE(status) << status.error().message;
    EXPECT_EQ((*status)["role"], "secondary");
    EXPECT_EQ((*status)["pid"], first);
    EXPECT_EQ((*status)["module"], "web1");
    auto refused = call([&](auto cb) { supervisor->control().request({{"verb", "frobnicate"}}, cb); });
    ASSERT_FALSE(refused);
    EXPECT_TRUE(refused.error().is(vmha::errc::invalid_argument)) << refused.error().message;

    // kill -9: reported with the signal, restarted with a new pid.
    const std::size_t before = events.size();
    ASSERT_EQ(::kill(first, SIGKILL), 0);
    auto died = wait_event(Event::Kind::died, before);
    ASSERT_TRUE(died);
    EXPECT_EQ(events[*died].pid, first);
    EXPECT_NE(events[*died].reason.find("SIGKILL"), std::string::npos) << events[*died].reason;
    auto restarting = wait_event(Event::Kind::restarting, *died);
    ASSERT_TRUE(restarting);
    auto again = wait_event(Event::Kind::running, *restarting);
    ASSERT_TRUE(again) << "imagesyncd was not restarted";
    const pid_t second = events[*again].pid;
    EXPECT_NE(second, first);
    EXPECT_FALSE(alive(first));
    status = call([&](auto cb) { supervisor->control().status(cb); });
    ASSERT_TRUE(status) << status.error().message;
    EXPECT_EQ((*status)["pid"], second);

    // stop(): ends it, reports it, removes the pid file.
    std::optional<vmha::Status> stopped;
    supervisor->stop([&](vmha::Status s) { stopped = std::move(s); });
    ASSERT_TRUE(run_until(io, [&] { return stopped.has_value(); }, 30s));
    EXPECT_TRUE(*stopped);
    EXPECT_EQ(supervisor->state(), ImagesyncSupervisor::State::stopped);
    EXPECT_FALSE(alive(second));
    EXPECT_FALSE(fs::exists(supervisor->paths().pid_file));
    EXPECT_TRUE(wait_event(Event::Kind::stopped, *again, 1s));
    // Nothing restarts it.
    run_until(io, [] { return false; }, 300ms);
    EXPECT_EQ(supervisor->pid(), -1);
    EXPECT_EQ(events.back().kind, Event::Kind::stopped);
}

TEST_F(SupervisorTest, DetachAndReattachKeepTheNbdClient) {
    IMAGESYNC_REQUIRE_TOOL("qemu-io");
    supervisor = make();
    ASSERT_TRUE(supervisor->start());
    auto running = wait_event(Event::Kind::running);
    ASSERT_TRUE(running);
    const pid_t pid = events[*running].pid;
    const auto paths = supervisor->paths();

    // A long-lived NBD client: qemu-io reading commands from a FIFO.
    const fs::path fifo = dir / "qemu-io.in";
    const fs::path out = dir / "qemu-io.out";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const pid_t client = ::fork();
    ASSERT_GE(client, 0);
    if (client == 0) {
        const int in = ::open(fifo.c_str(), O_RDONLY);
        const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(in, 0);
        ::dup2(o, 1);
        ::dup2(o, 2);
        const std::string uri = "nbd+unix:///web1?socket=" + paths.nbd_socket.string();
        ::execlp("qemu-io", "qemu-io", "-r", "-f", "raw", uri.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    pids.insert(client);
    const int commands = ::open(fifo.c_str(), O_WRONLY);
    ASSERT_GE(commands, 0);
    auto say = [&](const std::string& line) {
        ASSERT_EQ(::write(commands, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    };
    auto count_reads = [&] {
        const auto text = read_file(out);
        std::size_t n = 0;
        for (auto at = text.find("read 4096/4096 bytes"); at != std::string::npos;
             at = text.find("read 4096/4096 bytes", at + 1)) {
            ++n;
        }
        return n;
    };
    say("read -P 0xab 0 4096\n");
    ASSERT_TRUE(run_until(io, [&] { return count_reads() == 1; }, 30s)) << read_file(out);

    // vmhad goes away (its supervisor is destroyed): imagesyncd stays.
    supervisor.reset();
    EXPECT_TRUE(alive(pid));
    EXPECT_EQ(read_file(paths.pid_file), std::to_string(pid) + "\n");

    // A new vmhad re-attaches to the same process.
    const std::size_t before = events.size();
    supervisor = make();
    ASSERT_TRUE(supervisor->start());
    auto reattached = wait_event(Event::Kind::running, before);
    ASSERT_TRUE(reattached);
    EXPECT_EQ(events[*reattached].pid, pid);
    EXPECT_TRUE(events[*reattached].reattached);
    auto status = call([&](auto cb) { supervisor->control().status(cb); });
    ASSERT_TRUE(status) << status.error().message;
    EXPECT_EQ((*status)["pid"], pid);
    EXPECT_EQ((*status)["nbd_connections"], 1);  // qemu-io's connection, never dropped

    // The client's connection still works.
    say("read -P 0xab 0 4096\n");
    say("quit\n");
    ::close(commands);
    auto client_status = wait_for(client, 30s);
    ASSERT_TRUE(client_status);
    pids.erase(client);
    EXPECT_TRUE(WIFEXITED(*client_status) && WEXITSTATUS(*client_status) == 0) << read_file(out);
    EXPECT_EQ(count_reads(), 2u) << read_file(out);
    EXPECT_EQ(read_file(out).find("fail"), std::string::npos) << read_file(out);

    // The re-attached process is watched: a kill -9 restarts it.
    const std::size_t mark = events.size();
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);  // our child (this test spawned it): reap it
    auto died = wait_event(Event::Kind::died, mark);
    ASSERT_TRUE(died);
    auto again = wait_event(Event::Kind::running, *died);
    ASSERT_TRUE(again);
    EXPECT_NE(events[*again].pid, pid);

    std::optional<vmha::Status> stopped;
    supervisor->stop([&](vmha::Status s) { stopped = std::move(s); });
    ASSERT_TRUE(run_until(io, [&] { return stopped.has_value(); }, 30s));
    EXPECT_TRUE(*stopped);
    EXPECT_FALSE(alive(events[*again].pid));
}

TEST_F(SupervisorTest, StalePidFileIsNotAdopted) {
    // The pid file names an unrelated live process.
    const pid_t stranger = spawn({"sleep", "60"}, dir / "sleep.out");
    ASSERT_GT(stranger, 0);
    pids.insert(stranger);
    const fs::path run = dir / "run" / "web1";
    fs::create_directories(run);
    write_file(run / "imagesyncd.pid", std::to_string(stranger) + "\n");

    supervisor = make();
    ASSERT_TRUE(supervisor->start());
    auto running = wait_event(Event::Kind::running);
    ASSERT_TRUE(running);
    EXPECT_FALSE(events[*running].reattached);
    EXPECT_NE(events[*running].pid, stranger);
    EXPECT_TRUE(alive(stranger)) << "an unrelated process must not be touched";
    EXPECT_EQ(read_file(run / "imagesyncd.pid"), std::to_string(events[*running].pid) + "\n");

    // A pid file naming a dead pid is not adopted either.
    supervisor->detach();
    const pid_t live = events[*running].pid;
    ::kill(live, SIGKILL);
    ::waitpid(live, nullptr, 0);
    const std::size_t mark = events.size();
    supervisor = make();
    ASSERT_TRUE(supervisor->start());
    auto fresh = wait_event(Event::Kind::running, mark);
    ASSERT_TRUE(fresh);
    EXPECT_FALSE(events[*fresh].reattached);
    EXPECT_NE(events[*fresh].pid, live);
}

TEST(ImagesyncControl, UnreachableSocketAndOrder) {
    TempDir dir;
    boost::asio::io_context io;
    ImagesyncControl control(io, dir / "none.sock");
    std::vector<std::string> order;
    std::vector<vmha::Result<nlohmann::json>> results;
    for (const char* verb : {"status", "demote", "connect"}) {
        control.request({{"verb", verb}}, [&, verb](vmha::Result<nlohmann::json> r) {
            order.push_back(verb);
            results.push_back(std::move(r));
        });
    }
    EXPECT_EQ(control.pending(), 3u);
    ASSERT_TRUE(run_until(io, [&] { return order.size() == 3; }, 10s));
    EXPECT_EQ(order, (std::vector<std::string>{"status", "demote", "connect"}));
    for (const auto& r : results) {
        ASSERT_FALSE(r);
        EXPECT_TRUE(r.error().is(vmha::errc::not_found)) << r.error().message;
        EXPECT_NE(r.error().message.find("none.sock"), std::string::npos) << r.error().message;
    }
    EXPECT_EQ(control.pending(), 0u);
}

TEST(ImagesyncControl, DeadlineOnASilentServer) {
    TempDir dir;
    boost::asio::io_context io;
    // A socket that accepts (the kernel does, from the backlog) but never answers.
    boost::asio::local::stream_protocol::acceptor silent(
        io, boost::asio::local::stream_protocol::endpoint((dir / "silent.sock").string()));
    ImagesyncControl control(io, dir / "silent.sock");
    std::optional<vmha::Result<nlohmann::json>> result;
    control.request({{"verb", "status"}}, [&](vmha::Result<nlohmann::json> r) { result = std::move(r); },
                    200ms);
    ASSERT_TRUE(run_until(io, [&] { return result.has_value(); }, 10s));
    ASSERT_FALSE(*result);
    EXPECT_TRUE(result->error().is(vmha::errc::timeout)) << result->error().message;
}

}  // namespace
}  // namespace services_test
