// The libvirt backend: one connection (reopened after libvirtd went away), blocking calls,
// lifecycle events from the shared event loop thread.
#include <vmha/hypervisor/libvirt.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <vmha/hypervisor/domain_xml.h>

#include "event_loop.h"
#include "libvirt_error.h"

namespace vmha::hv {
namespace {

using detail::last_libvirt_error;

void silent(void* /*user_data*/, virErrorPtr /*error*/) {}

// Where watch()'s handler lives; shared with libvirt's callback registrations, which may be
// freed after the backend.
struct EventSink {
    std::mutex mu;  // held while the handler runs, so clearing it means no call is in flight
    Hypervisor::EventHandler handler;
};

struct DomainFree {
    void operator()(virDomain* domain) const { virDomainFree(domain); }
};
using DomainPtr = std::unique_ptr<virDomain, DomainFree>;

// A reference to the connection, held for the duration of one call.
struct ConnFree {
    void operator()(virConnect* conn) const { virConnectClose(conn); }
};
using ConnPtr = std::unique_ptr<virConnect, ConnFree>;

void on_lifecycle(virConnectPtr /*conn*/, virDomainPtr domain, int event, int detail, void* opaque) {
    auto& sink = *static_cast<std::shared_ptr<EventSink>*>(opaque);
    const char* name = virDomainGetName(domain);
    LifecycleEvent e = detail::event_from_libvirt(name != nullptr ? name : "", event, detail);
    std::lock_guard lock(sink->mu);
    if (sink->handler) sink->handler(e);
}

void free_sink(void* opaque) { delete static_cast<std::shared_ptr<EventSink>*>(opaque); }

void on_close(virConnectPtr /*conn*/, int /*reason*/, void* opaque) {
    static_cast<std::shared_ptr<std::atomic<bool>>*>(opaque)->get()->store(true);
}


class LibvirtHypervisor final : public Hypervisor {
public:
    LibvirtHypervisor(std::string uri, std::shared_ptr<detail::EventLoop> loop)
        : uri_(std::move(uri)), loop_(std::move(loop)) {}

    ~LibvirtHypervisor() override {
        {
            std::lock_guard lock(mu_);
            drop_connection();
        }
        {
            std::lock_guard lock(sink_->mu);
            sink_->handler = nullptr;
        }
        loop_.reset();  // the last backend stops the event loop thread
    }

    Status open() {
        std::lock_guard lock(mu_);
        Result<ConnPtr> conn = connection_locked();
        if (!conn) return std::move(conn).error();
        return {};
    }

    Status define(const DomainSpec& spec) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        // Redefining keeps the existing definition's UUID when the module's XML names none.
        std::string existing_uuid;
        if (Result<DomainPtr> existing = lookup(*conn, spec.name); existing) {
            char uuid[VIR_UUID_STRING_BUFLEN] = {};
            if (virDomainGetUUIDString(existing->get(), uuid) == 0) existing_uuid = uuid;
        } else {
            (void)ok_and_reset();
        }
        Result<std::string> xml = rewrite_domain_xml(spec, existing_uuid);
        if (!xml) return std::move(xml).error();
        DomainPtr domain(virDomainDefineXML(conn->get(), xml->c_str()));
        if (!domain) return fail(*conn, spec.name, "cannot define it");
        if (virDomainSetAutostart(domain.get(), 0) < 0) {
            return fail(*conn, spec.name, "cannot turn autostart off");
        }
        return {};
    }

    Status undefine(const std::string& name) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return absent_is_success(std::move(domain).error());
        const unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        if (virDomainUndefineFlags(domain->get(), flags) < 0) {
            if (detail::last_libvirt_code() == VIR_ERR_NO_DOMAIN) return ok_and_reset();
            return fail(*conn, name, "cannot undefine it");
        }
        return {};
    }

    Status start(const std::string& name) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return std::move(domain).error();
        if (virDomainCreate(domain->get()) < 0) {
            Error error = fail(*conn, name, "cannot start it");
            // Starting a running domain is success (vmhad may repeat a start after a restart).
            if (Result<DomainStatus> s = state_of(*conn, domain->get(), name); s && s->runs()) return {};
            return error;
        }
        return {};
    }

    Status shutdown(const std::string& name, std::chrono::milliseconds timeout) override {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return absent_is_success(std::move(domain).error());
        Result<DomainStatus> s = state_of(*conn, domain->get(), name);
        if (!s) return absent_is_success(std::move(s).error());
        if (!s->active()) return {};
        // A paused guest cannot see an ACPI request: straight to destroy.
        if (s->state != DomainState::paused) {
            if (virDomainShutdown(domain->get()) < 0) {
                Error error = fail(*conn, name, "cannot request an ACPI shutdown");
                if (error.is(errc::connection_lost)) return error;
            } else {
                while (std::chrono::steady_clock::now() < deadline) {
                    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
                        std::chrono::milliseconds(100), deadline - std::chrono::steady_clock::now()));
                    s = state_of(*conn, domain->get(), name);
                    if (!s) return absent_is_success(std::move(s).error());
                    if (!s->active()) return {};
                }
            }
        }
        return destroy_domain(*conn, domain->get(), name);
    }

    Status destroy(const std::string& name) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return absent_is_success(std::move(domain).error());
        return destroy_domain(*conn, domain->get(), name);
    }

    Status resume(const std::string& name) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return std::move(domain).error();
        if (virDomainResume(domain->get()) < 0) return fail(*conn, name, "cannot resume it");
        return {};
    }

    Result<DomainStatus> status(const std::string& name) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) {
            if (domain.error().is(errc::not_found)) return DomainStatus{DomainState::absent, ""};
            return std::move(domain).error();
        }
        Result<DomainStatus> s = state_of(*conn, domain->get(), name);
        if (!s && s.error().is(errc::not_found)) return DomainStatus{DomainState::absent, ""};
        return s;
    }

    Status ping_guest_agent(const std::string& name, std::chrono::milliseconds timeout) override {
        Result<ConnPtr> conn = connection();
        if (!conn) return std::move(conn).error();
        Result<DomainPtr> domain = lookup(*conn, name);
        if (!domain) return std::move(domain).error();
        // libvirt counts in whole seconds.
        const auto seconds = std::max<long long>(1, (timeout.count() + 999) / 1000);
        char* reply = virDomainQemuAgentCommand(domain->get(), R"({"execute":"guest-ping"})",
                                                static_cast<int>(std::min<long long>(seconds, 3600)), 0);
        if (reply == nullptr) {
            return fail(*conn, name, fmt::format("guest-ping through the guest agent failed "
                                                 "(timeout {} ms)",
                                                 timeout.count()));
        }
        std::free(reply);  // NOLINT: libvirt allocates with malloc
        return {};
    }

    Status watch(EventHandler handler) override {
        {
            std::lock_guard lock(sink_->mu);
            sink_->handler = std::move(handler);
        }
        std::lock_guard lock(mu_);
        watching_ = true;
        Result<ConnPtr> conn = connection_locked();
        if (!conn) return std::move(conn).error();
        return subscribe_locked();
    }

private:
    // A reference to a live connection; reopens it if libvirtd went away.
    Result<ConnPtr> connection() {
        std::lock_guard lock(mu_);
        return connection_locked();
    }

    Result<ConnPtr> connection_locked() {
        if (conn_ != nullptr && !dropped_->load() && virConnectIsAlive(conn_) == 1) {
            if (watching_) {  // an earlier subscription attempt may have failed
                if (Status s = subscribe_locked(); !s) return std::move(s).error();
            }
            virConnectRef(conn_);
            return ConnPtr(conn_);
        }
        virResetLastError();
        drop_connection();
        virConnectPtr conn = virConnectOpen(uri_.c_str());
        if (conn == nullptr) {
            Error error = last_libvirt_error(fmt::format("hypervisor \"{}\": cannot connect", uri_));
            return Error(errc::connection_lost, std::move(error.message));
        }
        virConnSetErrorFunc(conn, nullptr, silent);
        virConnectSetKeepAlive(conn, 5, 3);  // not supported by local drivers: ignored
        dropped_ = std::make_shared<std::atomic<bool>>(false);
        // The callback's opaque is ours: libvirt 9.0 does not call a free function when the
        // callback is unregistered (LeakSanitizer saw it), so we free it after unregistering.
        auto flag = std::make_unique<std::shared_ptr<std::atomic<bool>>>(dropped_);
        if (virConnectRegisterCloseCallback(conn, on_close, flag.get(), nullptr) >= 0) {
            close_registered_ = true;
            close_flag_ = std::move(flag);
        }
        virResetLastError();
        conn_ = conn;
        if (watching_) {
            if (Status s = subscribe_locked(); !s) return std::move(s).error();
        }
        virConnectRef(conn_);
        return ConnPtr(conn_);
    }

    Status subscribe_locked() {
        if (lifecycle_id_ >= 0) return {};
        auto* opaque = new std::shared_ptr<EventSink>(sink_);
        lifecycle_id_ = virConnectDomainEventRegisterAny(
            conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            reinterpret_cast<virConnectDomainEventGenericCallback>(
                reinterpret_cast<void (*)()>(&on_lifecycle)),
            opaque, free_sink);
        if (lifecycle_id_ < 0) {
            delete opaque;
            return last_libvirt_error(fmt::format("hypervisor \"{}\": cannot subscribe to lifecycle events", uri_));
        }
        return {};
    }

    void drop_connection() {
        if (conn_ == nullptr) return;
        if (lifecycle_id_ >= 0) virConnectDomainEventDeregisterAny(conn_, lifecycle_id_);
        if (close_registered_) virConnectUnregisterCloseCallback(conn_, on_close);
        lifecycle_id_ = -1;
        close_registered_ = false;
        close_flag_.reset();
        virConnectClose(conn_);
        conn_ = nullptr;
        virResetLastError();
    }

    // The error of the failed call just made on conn, as a sentence about `name`. A dead
    // connection is reported as connection_lost and reopened by the next call.
    Error fail(const ConnPtr& conn, const std::string& name, std::string_view what) {
        Error error = last_libvirt_error(fmt::format("domain \"{}\": {}", name, what));
        if (virConnectIsAlive(conn.get()) != 1) {
            mark_dropped(conn.get());
            error.code = make_error_code(errc::connection_lost);
        }
        virResetLastError();
        return error;
    }

    void mark_dropped(virConnectPtr conn) {
        std::lock_guard lock(mu_);
        if (conn == conn_) dropped_->store(true);
    }

    Result<DomainPtr> lookup(const ConnPtr& conn, const std::string& name) {
        virDomainPtr domain = virDomainLookupByName(conn.get(), name.c_str());
        if (domain == nullptr) {
            if (detail::last_libvirt_code() == VIR_ERR_NO_DOMAIN) {
                virResetLastError();
                return Error(errc::not_found, fmt::format("domain \"{}\": no such domain on \"{}\"", name, uri_));
            }
            return fail(conn, name, "cannot look it up");
        }
        return DomainPtr(domain);
    }

    Result<DomainStatus> state_of(const ConnPtr& conn, virDomainPtr domain, const std::string& name) {
        int state = 0;
        int reason = 0;
        if (virDomainGetState(domain, &state, &reason, 0) < 0) {
            return fail(conn, name, "cannot read its state");
        }
        return detail::status_from_libvirt(state, reason);
    }

    Status destroy_domain(const ConnPtr& conn, virDomainPtr domain, const std::string& name) {
        if (virDomainDestroy(domain) == 0) return {};
        Error error = fail(conn, name, "cannot destroy it");
        // Raced with the guest's own power-off, or a transient domain vanished.
        Result<DomainStatus> s = state_of(conn, domain, name);
        if (!s) return absent_is_success(std::move(s).error());
        if (!s->active()) return {};
        return error;
    }

    static Status absent_is_success(Error error) {
        if (error.is(errc::not_found)) return {};
        return error;
    }

    static Status ok_and_reset() {
        virResetLastError();
        return {};
    }

    const std::string uri_;
    std::shared_ptr<detail::EventLoop> loop_;
    const std::shared_ptr<EventSink> sink_ = std::make_shared<EventSink>();

    std::mutex mu_;  // guards everything below (not held during domain calls)
    virConnectPtr conn_ = nullptr;
    std::shared_ptr<std::atomic<bool>> dropped_ = std::make_shared<std::atomic<bool>>(false);
    bool close_registered_ = false;
    std::unique_ptr<std::shared_ptr<std::atomic<bool>>> close_flag_;  // the close callback's opaque
    int lifecycle_id_ = -1;
    bool watching_ = false;
};

}  // namespace

Result<std::unique_ptr<Hypervisor>> make_libvirt_hypervisor(std::string uri) {
    auto loop = detail::EventLoop::acquire();  // before the first connection, as libvirt requires
    auto hypervisor = std::make_unique<LibvirtHypervisor>(std::move(uri), std::move(loop));
    if (Status s = hypervisor->open(); !s) return std::move(s).error();
    return std::unique_ptr<Hypervisor>(std::move(hypervisor));
}

}  // namespace vmha::hv
