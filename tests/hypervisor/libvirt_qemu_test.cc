// The libvirt backend with a real libvirtd and a real QEMU guest (TCG) whose disk is served by
// a real imagesyncd over NBD: boot, destroy, and the imagesyncd-restart scenario.
//
// Prerequisites are started by the test itself: tests/tools/tiny-guest.sh (kernel + initramfs,
// cached) and tests/tools/private-libvirtd.sh (a libvirtd owned by this test). Needs root.
#include <vmha/hypervisor/libvirt.h>
#include <vmha/hypervisor/recover.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

extern char** environ;

namespace vmha::hv {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Runs a shell command; returns its exit status and stdout+stderr.
std::pair<int, std::string> run(const std::string& command) {
    std::string output;
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return {-1, "popen failed"};
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
    const int status = pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string read_file(const fs::path& path, std::size_t limit = 1 << 20) {
    std::ifstream in(path, std::ios::binary);
    std::string text(limit, '\0');
    in.read(text.data(), static_cast<std::streamsize>(limit));
    text.resize(static_cast<std::size_t>(in.gcount()));
    return text;
}

template <typename Predicate>
bool poll_until(std::chrono::milliseconds deadline, Predicate&& done) {
    const auto end = Clock::now() + deadline;
    while (Clock::now() < end) {
        if (done()) return true;
        std::this_thread::sleep_for(50ms);
    }
    return done();
}

bool socket_accepts(const fs::path& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

// The number n of the guest's last "VMHA-GUEST-WRITE n" in the image's first sector; 0 if none.
long guest_write_counter(const fs::path& image) {
    const std::string sector = read_file(image, 512);
    const std::string marker = "VMHA-GUEST-WRITE ";
    if (sector.compare(0, marker.size(), marker) != 0) return 0;
    return std::strtol(sector.c_str() + marker.size(), nullptr, 10);
}

class Events {
public:
    Hypervisor::EventHandler handler() {
        return [this](const LifecycleEvent& e) {
            std::lock_guard lock(mu_);
            events_.push_back({e, Clock::now()});
            cv_.notify_all();
        };
    }
    // Waits for a matching event after index `from`; returns its index + 1, or 0 on timeout.
    std::size_t wait_for(EventKind kind, const std::string& detail, std::size_t from,
                         std::chrono::milliseconds deadline) {
        std::unique_lock lock(mu_);
        std::size_t found = 0;
        cv_.wait_for(lock, deadline, [&] {
            for (std::size_t i = from; i < events_.size(); ++i) {
                if (events_[i].first.kind == kind && events_[i].first.detail == detail) {
                    found = i + 1;
                    return true;
                }
            }
            return false;
        });
        return found;
    }
    std::size_t size() {
        std::lock_guard lock(mu_);
        return events_.size();
    }
    std::string dump() {
        std::lock_guard lock(mu_);
        std::string out;
        for (const auto& [e, at] : events_) {
            out += std::string(to_string(e.kind)) + "/" + e.detail + " ";
        }
        return out;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::pair<LifecycleEvent, Clock::time_point>> events_;
};

// Counts resume() calls (for the figures in docs/hypervisor.md) and forwards everything.
class CountingHypervisor final : public Hypervisor {
public:
    explicit CountingHypervisor(Hypervisor& inner) : inner_(inner) {}
    Status define(const DomainSpec& spec) override { return inner_.define(spec); }
    Status undefine(const std::string& d) override { return inner_.undefine(d); }
    Status start(const std::string& d) override { return inner_.start(d); }
    Status shutdown(const std::string& d, std::chrono::milliseconds t) override { return inner_.shutdown(d, t); }
    Status destroy(const std::string& d) override { return inner_.destroy(d); }
    Status resume(const std::string& d) override {
        ++resumes;
        return inner_.resume(d);
    }
    Result<DomainStatus> status(const std::string& d) override { return inner_.status(d); }
    Status ping_guest_agent(const std::string& d, std::chrono::milliseconds t) override {
        return inner_.ping_guest_agent(d, t);
    }
    Status watch(EventHandler h) override { return inner_.watch(std::move(h)); }
    std::atomic<int> resumes{0};

private:
    Hypervisor& inner_;
};

class LibvirtQemu : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root: it starts its own libvirtd";
        char tmpl[] = "/tmp/vmha-hv-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        auto [guest_rc, guest_out] = run(std::string(TOOLS_DIR) + "/tiny-guest.sh " + (dir_ / "guest").string());
        ASSERT_EQ(guest_rc, 0) << guest_out;
        auto [lv_rc, lv_out] = run(std::string(TOOLS_DIR) + "/private-libvirtd.sh start " + (dir_ / "lv").string());
        libvirtd_started_ = true;
        ASSERT_EQ(lv_rc, 0) << lv_out;
        uri_ = lv_out.substr(0, lv_out.find('\n'));
        image_ = dir_ / "disk.raw";
        { std::ofstream create(image_); }
        fs::resize_file(image_, 64 << 20);
        socket_ = dir_ / "nbd.sock";
    }

    void TearDown() override {
        hv_.reset();
        stop_imagesyncd(SIGKILL);
        if (libvirtd_started_) {
            auto [rc, out] = run(std::string(TOOLS_DIR) + "/private-libvirtd.sh stop " + (dir_ / "lv").string());
            EXPECT_EQ(rc, 0) << out;
        }
        if (!dir_.empty()) {
            if (HasFailure()) {
                std::cerr << "kept " << dir_ << " for inspection (libvirtd and QEMU logs in lv/)\n";
            } else {
                std::error_code ignored;
                fs::remove_all(dir_, ignored);
            }
        }
    }

    void start_imagesyncd() {
        const std::string image_arg = "d0=" + image_.string();
        const std::string log = (dir_ / "imagesyncd.log").string();
        std::vector<std::string> argv{IMAGESYNCD_PATH, "--nbd-socket", socket_.string(), "--image",
                                      image_arg, "--role", "primary"};
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        const int rc = posix_spawn(&imagesyncd_, IMAGESYNCD_PATH, &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        ASSERT_EQ(rc, 0) << std::strerror(rc);
        ASSERT_TRUE(poll_until(10s, [&] { return socket_accepts(socket_); }))
            << "imagesyncd did not listen on " << socket_ << ": " << read_file(log);
    }

    void stop_imagesyncd(int signal) {
        if (imagesyncd_ <= 0) return;
        ::kill(imagesyncd_, signal);
        int status = 0;
        ::waitpid(imagesyncd_, &status, 0);
        imagesyncd_ = -1;
    }

    DomainSpec spec() const {
        const std::string guest = (dir_ / "guest").string();
        std::ostringstream xml;
        xml << "<domain type='qemu'>\n"
            << "  <name>" << name_ << "</name>\n"
            << "  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n"
            << "  <os><type arch='x86_64' machine='pc'>hvm</type>\n"
            << "    <kernel>" << guest << "/vmlinuz</kernel><initrd>" << guest << "/initrd.img</initrd>\n"
            << "    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>\n"
            << "  <on_crash>destroy</on_crash>\n"
            << "  <devices>\n"
            << "    <disk type='file' device='disk'>\n"
            << "      <driver name='qemu' type='raw'/>\n"
            << "      <source file='" << image_.string() << "'/>\n"
            << "      <target dev='vda' bus='virtio'/>\n"
            << "    </disk>\n"
            << "    <serial type='file'><source path='" << (dir_ / "serial.log").string() << "'/></serial>\n"
            << "    <memballoon model='none'/>\n"
            << "  </devices>\n</domain>\n";
        return {name_, xml.str(),
                {{image_.string(), "", socket_.string(), "d0", config::DiskFormat::raw}}};
    }

    bool serial_contains(const std::string& text) {
        return read_file(dir_ / "serial.log").find(text) != std::string::npos;
    }

    fs::path dir_;
    fs::path image_;
    fs::path socket_;
    std::string uri_;
    std::string name_ = "vmha-tiny";
    bool libvirtd_started_ = false;
    pid_t imagesyncd_ = -1;
    // Declared before hv_: the backend's handler may deliver events until hv_ is gone.
    Events events_;
    std::unique_ptr<Hypervisor> hv_;
};

TEST_F(LibvirtQemu, GuestOnImagesyncdSurvivesItsRestart) {
    start_imagesyncd();
    Result<std::unique_ptr<Hypervisor>> opened = make_libvirt_hypervisor(uri_);
    ASSERT_TRUE(opened) << opened.error().message;
    hv_ = std::move(*opened);
    Events& events = events_;
    ASSERT_TRUE(hv_->watch(events.handler()));

    Status defined = hv_->define(spec());
    ASSERT_TRUE(defined) << defined.error().message;

    // Boot, reach userspace, write through imagesyncd; then destroy.
    ASSERT_TRUE(hv_->start(name_));
    ASSERT_TRUE(events.wait_for(EventKind::started, "booted", 0, 30s)) << events.dump();
    ASSERT_TRUE(poll_until(120s, [&] { return guest_write_counter(image_) >= 1; }))
        << "serial console:\n" << read_file(dir_ / "serial.log");
    EXPECT_TRUE(serial_contains("VMHA-GUEST-READY"));
    std::size_t mark = events.size();
    ASSERT_TRUE(hv_->destroy(name_));
    EXPECT_TRUE(events.wait_for(EventKind::stopped, "destroyed", mark, 30s)) << events.dump();
    DomainStatus s = *hv_->status(name_);
    EXPECT_EQ(s.state, DomainState::shutoff);
    EXPECT_EQ(s.reason, "destroyed");

    // Boot again and kill imagesyncd while the guest writes: the guest pauses on "ioerror".
    fs::remove(dir_ / "serial.log");
    ASSERT_TRUE(hv_->start(name_));
    const long before = guest_write_counter(image_);
    ASSERT_TRUE(poll_until(120s, [&] { return guest_write_counter(image_) > before + 1; }))
        << "serial console:\n" << read_file(dir_ / "serial.log");
    mark = events.size();
    stop_imagesyncd(SIGKILL);
    ASSERT_TRUE(events.wait_for(EventKind::suspended, "ioerror", mark, 30s)) << events.dump();
    s = *hv_->status(name_);
    EXPECT_TRUE(s.paused_on_io_error()) << to_string(s.state) << " (" << s.reason << ")";

    // imagesyncd comes back on the same socket; the guest is resumed until it stays running.
    start_imagesyncd();
    CountingHypervisor counting(*hv_);
    const auto t0 = Clock::now();
    Status recovered = recover_paused_guest(counting, name_, 60s);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    ASSERT_TRUE(recovered) << recovered.error().message;
    std::cerr << "recover_paused_guest: " << counting.resumes.load() << " resume(s), "
              << took.count() << " ms (including the 1000 ms settle)\n";
    RecordProperty("recover_resumes", counting.resumes.load());
    RecordProperty("recover_ms", static_cast<int>(took.count()));
    EXPECT_TRUE(hv_->status(name_)->runs());

    // The guest's writes continue on the image.
    const long after = guest_write_counter(image_);
    EXPECT_TRUE(poll_until(60s, [&] { return guest_write_counter(image_) > after + 1; }))
        << "counter stuck at " << guest_write_counter(image_) << "; serial console:\n"
        << read_file(dir_ / "serial.log");
    EXPECT_FALSE(serial_contains("VMHA-GUEST-WRITE-FAILED")) << read_file(dir_ / "serial.log");

    // The busybox guest ignores ACPI: shutdown takes the timeout + destroy path.
    mark = events.size();
    ASSERT_TRUE(hv_->shutdown(name_, 2s));
    EXPECT_TRUE(events.wait_for(EventKind::stopped, "destroyed", mark, 30s)) << events.dump();
    EXPECT_EQ(hv_->status(name_)->state, DomainState::shutoff);
    ASSERT_TRUE(hv_->undefine(name_));
    EXPECT_EQ(hv_->status(name_)->state, DomainState::absent);
}

TEST_F(LibvirtQemu, ReconnectsAfterLibvirtdRestart) {
    Result<std::unique_ptr<Hypervisor>> opened = make_libvirt_hypervisor(uri_);
    ASSERT_TRUE(opened) << opened.error().message;
    hv_ = std::move(*opened);
    Events& events = events_;
    ASSERT_TRUE(hv_->watch(events.handler()));
    EXPECT_EQ(hv_->status(name_)->state, DomainState::absent);

    auto [stop_rc, stop_out] = run(std::string(TOOLS_DIR) + "/private-libvirtd.sh stop " + (dir_ / "lv").string());
    ASSERT_EQ(stop_rc, 0) << stop_out;
    Result<DomainStatus> down = hv_->status(name_);
    ASSERT_FALSE(down);
    EXPECT_TRUE(down.error().is(errc::connection_lost)) << down.error().message;

    auto [start_rc, start_out] = run(std::string(TOOLS_DIR) + "/private-libvirtd.sh start " + (dir_ / "lv").string());
    ASSERT_EQ(start_rc, 0) << start_out;
    Result<DomainStatus> up = hv_->status(name_);
    ASSERT_TRUE(up) << up.error().message;
    EXPECT_EQ(up->state, DomainState::absent);
    // Events flow again on the new connection.
    ASSERT_TRUE(hv_->define(spec()));
    EXPECT_TRUE(events.wait_for(EventKind::defined, "added", 0, 30s)) << events.dump();
    ASSERT_TRUE(hv_->undefine(name_));
}

}  // namespace
}  // namespace vmha::hv
