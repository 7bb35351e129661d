#include "replication/replicator.h"

#include "replication/send_thread.h"
#include "replication/tcp_congestion.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>

#include <xxhash.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "buffer_pool.h"
#include "buffered_reader.h"
#include "zeroes.h"
#include "meta/activity_log.h"
#include "meta/dirty_map.h"
#include <vmha/human.h>

#include "meta/meta_file.h"
#include "meta/meta_store.h"
#include "uring_meta_file.h"

namespace imagesync::replication {

using boost::system::error_code;
using tcp = asio::ip::tcp;

// ---- Endpoint -------------------------------------------------------------------------------

std::string Endpoint::to_string() const {
    if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
    return fmt::format("{}:{}", host, port);
}

vmha::Result<Endpoint> parse_endpoint(std::string_view text) {
    Endpoint e;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return vmha::Error(vmha::errc::invalid_argument,
                               fmt::format("\"{}\" is not of the form \"[IPv6]:PORT\"", text));
        }
        e.host = std::string(text.substr(1, close - 1));
        port_text = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos || colon == 0) {
            return vmha::Error(vmha::errc::invalid_argument,
                               fmt::format("\"{}\" is not of the form \"HOST:PORT\"", text));
        }
        e.host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
    }
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("\"{}\": port \"{}\" must be 1 to 65535", text, port_text));
    }
    e.port = static_cast<std::uint16_t>(port);
    return e;
}

std::string_view to_string(peer::SplitBrainPolicy policy) {
    switch (policy) {
        case peer::SplitBrainPolicy::disconnect: return "disconnect";
        case peer::SplitBrainPolicy::discard_zero_changes: return "discard-zero-changes";
    }
    return "unknown";
}

vmha::Result<peer::SplitBrainPolicy> parse_split_brain_policy(std::string_view text) {
    for (auto p : {peer::SplitBrainPolicy::disconnect, peer::SplitBrainPolicy::discard_zero_changes}) {
        if (text == to_string(p)) return p;
    }
    return vmha::Error(vmha::errc::invalid_argument,
                       fmt::format("split-brain policy \"{}\" is neither \"disconnect\" nor "
                                   "\"discard-zero-changes\"",
                                   text));
}

// ---- Metadata -------------------------------------------------------------------------------

struct MetaParts {
    explicit MetaParts(const std::filesystem::path& dir) : store(dir) {}
    meta::MetaStore store;
    std::vector<std::unique_ptr<meta::MetaFile>> files;  // dirty maps' and activity logs'
    std::vector<std::unique_ptr<meta::DirtyMap>> maps;
    std::vector<std::unique_ptr<meta::ActivityLog>> logs;
};

namespace {

std::uint8_t wire_role(Role r) { return r == Role::primary ? 1 : 2; }

std::uint8_t wire_state(meta::DataState s) {
    switch (s) {
        case meta::DataState::UpToDate: return 1;
        case meta::DataState::Inconsistent: return 2;
        case meta::DataState::Outdated: return 3;
        case meta::DataState::Unknown: return 4;
    }
    return 4;
}

meta::DataState from_wire_state(std::uint8_t s) {
    switch (s) {
        case 1: return meta::DataState::UpToDate;
        case 2: return meta::DataState::Inconsistent;
        case 3: return meta::DataState::Outdated;
        default: return meta::DataState::Unknown;
    }
}

constexpr std::uint32_t kResyncChunkMax = 4u << 20;  // bytes per resync message
// A batch holding a payload at least this large is sent by the session's SendThread, in
// parallel with the loop (send_thread.h); other batches (4k writes, even 32 of them, and ACKs)
// are cheaper to send on the loop.
constexpr std::size_t kThreadedSendBytes = 64 * 1024;
constexpr std::size_t kResyncWindow = 8;             // resync messages in flight
constexpr std::size_t kSpareHeads = 64;              // frame heads kept for reuse, per session
constexpr std::size_t kSpareHeadBytes = 256;         // ... if no larger (a HELLO may be)
constexpr std::size_t kScratchKeepBytes = 64 * 1024; // a larger message's buffer is not kept

}  // namespace

// ---- Pending requests (primary) -------------------------------------------------------------

// A request sent to the peer and not yet acknowledged. `complete` runs exactly once: with the
// peer's status, or with nullopt when the link went down first.
struct Replicator::Pending {
    std::function<void(std::optional<std::uint32_t>)> complete;
    Clock::time_point sent;
    bool is_ping = false;
    // A client's operation (replicate()): what complete_forwarded() needs.
    std::size_t export_index = 0;
    WriteOp op;  // without its data
    bool lent = false;  // its payload may go to the socket by zero-copy send
    std::uint64_t flush_sequence = 0;
    std::function<void(vmha::Status)> done;
    // A CHECKSUM_REQUEST: its reply goes here (and `complete` only runs if the link drops).
    std::function<void(const peer::ChecksumReply&)> on_checksums;
};

// An online verify in progress (primary).
struct Replicator::VerifyRun {
    std::uint64_t id = 0;
    std::shared_ptr<Session> session;  // the link it compares over
    bool mark = false;
    bool for_resync = false;  // the compare pass of a full resync (no report, then copy)
    std::function<void(vmha::Result<nlohmann::json>)> done;
    std::size_t export_index = 0;
    std::uint64_t cursor = 0;
    std::size_t in_flight = 0;
    std::uint64_t compared = 0;
    std::optional<vmha::Error> failure;
    // Differing chunks per export, as (offset, length) in offset order once sorted.
    std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> differing;
};

namespace {

constexpr std::uint32_t kVerifyBatchChunks = 256;  // chunks per CHECKSUM_REQUEST
constexpr std::size_t kVerifyWindow = 2;            // requests in flight

std::vector<std::uint64_t> chunk_checksums(std::span<const std::byte> data, std::uint32_t chunk) {
    std::vector<std::uint64_t> out;
    for (std::size_t at = 0; at < data.size(); at += chunk) {
        const std::size_t n = std::min<std::size_t>(chunk, data.size() - at);
        out.push_back(XXH3_64bits(data.data() + at, n));
    }
    return out;
}

// A buffer for a range that a resync or verify reads: page-aligned, so that the read can
// bypass the page cache (ImageFile::Cache::bypass).
std::shared_ptr<Buffer> scan_buffer(std::size_t size) {
    const std::size_t capacity = round_up_to_pages(size);
    return std::make_shared<Buffer>(allocate_buffer(capacity), size, capacity);
}

}  // namespace

// ---- Session: one TCP connection to the peer -------------------------------------------------

// Reads frames (header first, then the payload into a buffer of its own, so decoded views stay
// valid as long as the buffer) and writes frames through an ordered queue with one outstanding
// socket write. close() is idempotent; the replicator hears about it once, after both loops
// ended, so no queued buffer is referenced any more.
class Replicator::Session : public std::enable_shared_from_this<Session> {
public:
    Session(Replicator& owner, tcp::socket socket, bool dialer)
        : owner_(owner),
          socket_(std::move(socket)),
          dialer_(dialer),
          wake_(socket_.get_executor(), asio::steady_timer::time_point::max()),
          ticker_(socket_.get_executor()) {
        error_code ignored;
        socket_.set_option(tcp::no_delay(true), ignored);
        const auto remote = socket_.remote_endpoint(ignored);
        remote_ = fmt::format("{}:{}", remote.address().to_string(), remote.port());
        // Each side sets its own: the primary's choice paces the writes, the secondary's its
        // acknowledgements (tcp_congestion.h). imagesyncd checked the name at start, so a
        // failure here is a kernel that changed since; the link runs on whatever it has.
        if (auto set = set_congestion_control(socket_.native_handle(), owner_.config_.tcp_congestion);
            !set) {
            spdlog::warn("peer connection {}: {}; using the kernel's default", remote_,
                         set.error().message);
        }
        congestion_ = congestion_control(socket_.native_handle());
    }

    const std::string& remote() const { return remote_; }
    const std::string& congestion() const { return congestion_; }
    bool dialer() const { return dialer_; }
    bool handshaken() const { return handshaken_; }
    void set_handshaken() { handshaken_ = true; }
    bool closed() const { return closing_ || finishing_; }

    void start() {
        last_rx_ = Clock::now();
        last_tx_ = Clock::now();
        auto self = shared_from_this();
        asio::co_spawn(socket_.get_executor(), read_loop(self), asio::detached);
        asio::co_spawn(socket_.get_executor(), write_loop(self), asio::detached);
        tick(self);
    }

    // Queues a frame whose `data` follows its encoded head (peer::encode_write_header): the
    // data must stay valid until the peer acknowledged request `cookie` or the replicator was
    // told the session closed.
    // `lend`: the payload's pages may be lent to the socket (zero-copy send); whoever owns them
    // must unshare them before reusing them unless the peer acknowledged the frame.
    void send(std::uint64_t cookie, peer::Bytes head, std::span<const std::byte> data,
              bool lend = false) {
        enqueue(Frame{std::move(head), data, cookie, lend});
    }

    // Queues a frame that holds everything it sends.
    void send(const peer::Message& m) {
        if (closing_) return;
        peer::Bytes b = take_head();
        peer::encode(m, b);
        enqueue(Frame{std::move(b), {}, m.cookie});
    }

    // An empty buffer for a frame's head, with the capacity of one sent before (a frame per
    // write: reusing them spares an allocation each).
    peer::Bytes take_head() {
        if (spare_heads_.empty()) return {};
        peer::Bytes b = std::move(spare_heads_.back());
        spare_heads_.pop_back();
        return b;
    }

    // Closes once everything queued so far is sent (a refusal that the peer should read).
    void finish(std::string reason) {
        if (closing_ || finishing_) return;
        finishing_ = true;
        reason_ = std::move(reason);
        wake_.cancel();
    }

    void close(std::string reason) {
        if (closing_) return;
        closing_ = true;
        reason_ = std::move(reason);
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
        ticker_.cancel();
        wake_.cancel();
    }

private:
    struct Frame {
        peer::Bytes head;
        std::span<const std::byte> data;  // sent after `head`, not owned
        std::uint64_t cookie = 0;
        bool lend = false;  // `data` may go by zero-copy send
    };

    void enqueue(Frame frame) {
        if (closing_) return;
        queue_.push_back(std::move(frame));
        if (writer_waiting_) wake_.cancel();
    }

    // A buffer for a frame's payload from the session's pool (not zero-filled: the socket read
    // writes every byte before anything reads it). It goes back to the pool when the last
    // reference (the decoded message, an apply in flight) is gone, even after the session.
    std::shared_ptr<std::byte[]> take_payload(std::size_t size) {
        if (size == 0) return {};
        Buffer b = pool_->take(size);
        const std::size_t capacity = b.capacity();
        return std::shared_ptr<std::byte[]>(b.release(), [pool = pool_, capacity](std::byte* p) {
            pool->give(Buffer(BufferMemory(p), 0, capacity));
        });
    }

    asio::awaitable<void> read_loop(std::shared_ptr<Session> self) {
        while (!closing_) {
            std::array<std::byte, peer::header_size> head;
            error_code ec;
            bool read = false;  // from the socket: a message taken whole from the read-ahead
                                // buffer arrived with the read that last set last_rx_
            if (!reader_.try_take(head)) {
                ec = co_await reader_.read_exact(head);
                read = true;
            }
            if (ec || closing_) {
                close(ec ? fmt::format("connection to {} broke: {}", remote_, ec.message())
                         : reason_);
                break;
            }
            auto header = peer::decode_header(head);
            if (!header) {
                close(fmt::format("peer {} broke the protocol: {}", remote_, header.error().message));
                break;
            }
            // Only WRITE and RESYNC_DATA decode to views of their payload (kept alive with the
            // message); any other message is decoded from a reused buffer.
            std::shared_ptr<std::byte[]> payload;
            std::span<std::byte> body;
            if (header->type == peer::MessageType::write ||
                header->type == peer::MessageType::resync_data) {
                payload = take_payload(header->length);
                body = std::span<std::byte>(payload.get(), header->length);
            } else {
                if (scratch_.capacity() > kScratchKeepBytes) peer::Bytes().swap(scratch_);
                scratch_.resize(header->length);
                body = std::span<std::byte>(scratch_.data(), header->length);
            }
            if (header->length > 0) {
                if (!reader_.try_take(body)) {
                    ec = co_await reader_.read_exact(body);
                    read = true;
                }
                if (ec || closing_) {
                    close(ec ? fmt::format("connection to {} broke: {}", remote_, ec.message())
                             : reason_);
                    break;
                }
            }
            if (read) last_rx_ = Clock::now();
            auto message = peer::decode_payload(*header, peer::ByteView(body.data(), body.size()));
            if (!message) {
                close(fmt::format("peer {} broke the protocol: {}", remote_,
                                  message.error().message));
                break;
            }
            if (!handshaken_) {
                const auto* hello = std::get_if<peer::Hello>(&message->body);
                if (hello == nullptr) {
                    close(fmt::format("peer {} sent {} before HELLO", remote_,
                                      peer::type_name(header->type)));
                    break;
                }
                if (!owner_.on_hello(*this, *hello)) break;  // closed with a reason
                continue;
            }
            // The ACK of a frame still in the send thread's batch waits until that batch is
            // done (and everything after it, to keep the order): the ACK completes the write
            // and frees its payload, which the thread may otherwise be reading still (the peer
            // can acknowledge the first frames of a batch while sendmsg copies the last ones).
            if (!batch_cookies_.empty() && (!deferred_.empty() ||
                             (std::holds_alternative<peer::Ack>(message->body) &&
                              std::find(batch_cookies_.begin(), batch_cookies_.end(),
                                        message->cookie) != batch_cookies_.end()))) {
                deferred_.push_back(Deferred{std::move(*message), std::move(payload)});
                continue;
            }
            owner_.on_message(*this, std::move(*message), std::move(payload));
        }
        reader_done_ = true;
        maybe_finished(self);
    }

    asio::awaitable<void> write_loop(std::shared_ptr<Session> self) {
        std::vector<asio::const_buffer> buffers;
        while (true) {
            if (queue_.empty() && finishing_) close(reason_);
            while (queue_.empty() && !closing_) {
                wake_.expires_at(asio::steady_timer::time_point::max());
                error_code ec;
                writer_waiting_ = true;
                co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                writer_waiting_ = false;
                if (queue_.empty() && finishing_) close(reason_);
            }
            if (closing_) break;
            const std::size_t n = std::min<std::size_t>(queue_.size(), 32);
            std::size_t largest = 0;  // payload
            for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, queue_[i].data.size());
            error_code ec;
            if (largest >= kThreadedSendBytes) {
                if (!sender_) sender_ = std::make_unique<SendThread>(socket_.native_handle(), socket_.get_executor());
                batch_cookies_.clear();
                pieces_.clear();
                for (std::size_t i = 0; i < n; ++i) {
                    pieces_.push_back({asio::buffer(queue_[i].head.data(), queue_[i].head.size()), false});
                    if (queue_[i].data.empty()) continue;
                    batch_cookies_.push_back(queue_[i].cookie);
                    pieces_.push_back({asio::buffer(queue_[i].data.data(), queue_[i].data.size()),
                                       queue_[i].lend});
                }
                const std::uint64_t lent_before = sender_->bytes_lent();
                ec = co_await sender_->send(pieces_);
                owner_.bytes_sent_zero_copy_ += sender_->bytes_lent() - lent_before;
                batch_cookies_.clear();
                deliver_deferred();
            } else {
                buffers.clear();
                for (std::size_t i = 0; i < n; ++i) {
                    buffers.emplace_back(queue_[i].head.data(), queue_[i].head.size());
                    if (!queue_[i].data.empty()) {
                        buffers.emplace_back(queue_[i].data.data(), queue_[i].data.size());
                    }
                }
                co_await asio::async_write(socket_, buffers, asio::redirect_error(asio::use_awaitable, ec));
            }
            if (ec) {
                close(fmt::format("sending to {} failed: {}", remote_, ec.message()));
                break;
            }
            last_tx_ = Clock::now();
            for (std::size_t i = 0; i < n && spare_heads_.size() < kSpareHeads; ++i) {
                if (queue_[i].head.capacity() > kSpareHeadBytes) continue;
                queue_[i].head.clear();
                spare_heads_.push_back(std::move(queue_[i].head));
            }
            queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
        }
        queue_.clear();
        writer_done_ = true;
        maybe_finished(self);
    }

    // Every timeout/4: a silent peer (nothing received for the timeout, or the oldest request
    // unanswered for the timeout) is lost; an idle primary pings so the secondary hears it.
    void tick(std::shared_ptr<Session> self) {
        const auto timeout = owner_.config_.timeout;
        ticker_.expires_after(std::max(timeout / 4, std::chrono::milliseconds(10)));
        ticker_.async_wait([this, self, timeout](const error_code& ec) {
            if (ec || closing_) return;
            const auto now = Clock::now();
            if (now - last_rx_ > timeout) {
                close(fmt::format("peer {} silent for more than {} ms", remote_, timeout.count()));
                return;
            }
            if (dialer_ && handshaken_) {
                for (const auto& [cookie, p] : owner_.pending_) {
                    if (now - p->sent > timeout) {
                        close(fmt::format("peer {} did not acknowledge request {} within {} ms",
                                          remote_, cookie, timeout.count()));
                        return;
                    }
                    break;  // the map is in cookie order: the first is the oldest
                }
                if (now - last_tx_ > timeout / 3) owner_.send_ping(*this);
            }
            tick(self);
        });
    }

    // Messages held back while a batch was sending (read_loop), in arrival order; not after
    // the session closed (its requests are then recorded dirty, which is always safe).
    void deliver_deferred() {
        auto held = std::move(deferred_);
        deferred_.clear();
        for (auto& d : held) {
            if (closing_) return;
            owner_.on_message(*this, std::move(d.message), std::move(d.payload));
        }
    }

    void maybe_finished(const std::shared_ptr<Session>& self) {
        if (!reader_done_ || !writer_done_ || reported_) return;
        reported_ = true;
        // Posted, so that the replicator never runs inside one of our loops.
        asio::post(socket_.get_executor(), [self] { self->owner_.on_session_closed(self.get(), self->reason_); });
    }

    Replicator& owner_;
    tcp::socket socket_;
    std::unique_ptr<SendThread> sender_;  // after socket_: stopped before the socket closes
    std::vector<SendThread::Piece> pieces_;  // the batch sender_ sends (reused)
    // The frames with a payload in sender_'s batch; empty while it has none (a threaded batch
    // always holds one).
    std::vector<std::uint64_t> batch_cookies_;
    struct Deferred {
        peer::Message message;
        std::shared_ptr<std::byte[]> payload;
    };
    std::vector<Deferred> deferred_;
    std::vector<peer::Bytes> spare_heads_;  // sent frames' heads, for take_head()
    peer::Bytes scratch_;                   // the payload of a message that keeps no view of it
    bool dialer_;
    std::string remote_;
    std::string congestion_;  // the socket's TCP congestion control, as the kernel reports it
    asio::steady_timer wake_;
    asio::steady_timer ticker_;
    std::deque<Frame> queue_;
    BufferedReader<tcp::socket> reader_{socket_};
    std::shared_ptr<BufferPool> pool_ = std::make_shared<BufferPool>();  // frame payloads
    Clock::time_point last_rx_;
    Clock::time_point last_tx_;
    std::string reason_ = "closed";
    bool writer_waiting_ = false;  // send() wakes the writer only when it waits
    bool handshaken_ = false;
    bool finishing_ = false;
    bool closing_ = false;
    bool reader_done_ = false;
    bool writer_done_ = false;
    bool reported_ = false;
};

// ---- Sink: what an export's write path calls ---------------------------------------------------

class Replicator::Sink final : public ReplicaSink {
public:
    Sink(Replicator& owner, std::size_t index, std::string name)
        : owner_(owner), index_(index), name_(std::move(name)) {}
    std::string_view name() const override { return name_; }
    void apply(const WriteOp& op, Done done) override { owner_.replicate(index_, op, std::move(done)); }
    void local_failed(const WriteOp& op) override { owner_.local_write_failed(index_, op); }

private:
    Replicator& owner_;
    std::size_t index_;
    std::string name_;
};

// ---- Gate: the activity log before every write ------------------------------------------------

class Replicator::Gate final : public WriteGate {
public:
    Gate(Replicator& owner, std::size_t index) : owner_(owner), index_(index) {}
    void begin(const WriteOp& op, Done done) override {
        if (auto allowed = owner_.write_lease_allows(); !allowed) {
            done(std::move(allowed));
            return;
        }
        if (op.length == 0) {
            done({});
            return;
        }
        owner_.parts_->logs[index_]->begin_write(op.offset, op.length, std::move(done));
    }
    void end(const WriteOp& op) override {
        if (op.length > 0) owner_.parts_->logs[index_]->end_write(op.offset, op.length);
    }

private:
    Replicator& owner_;
    std::size_t index_;
};

// ---- Replicator -----------------------------------------------------------------------------

Replicator::Replicator(asio::io_context& io, Uring& uring, const ReplicatorConfig& config,
                       std::vector<Export*> exports)
    : io_(io), uring_(uring), config_(config), exports_(std::move(exports)), role_(config.role) {}

Replicator::~Replicator() = default;

vmha::Result<std::unique_ptr<Replicator>> Replicator::open(asio::io_context& io, Uring& uring,
                                                           const ReplicatorConfig& config,
                                                           std::vector<Export*> exports) {
    if (config.meta_dir.empty()) {
        return vmha::Error(vmha::errc::invalid_argument,
                           "replication needs a metadata directory (--meta-dir)");
    }
    std::unique_ptr<Replicator> r(new Replicator(io, uring, config, std::move(exports)));
    if (auto s = r->load_meta(); !s) return std::move(s).error();
    for (std::size_t i = 0; i < r->exports_.size(); ++i) {
        r->sinks_.push_back(std::make_shared<Sink>(*r, i, fmt::format("peer/{}", r->exports_[i]->info().name)));
        r->gates_.push_back(std::make_unique<Gate>(*r, i));
        const std::uint64_t chunks =
            (r->exports_[i]->info().size + r->config_.chunk_size - 1) / r->config_.chunk_size;
        r->unflushed_.push_back(Unflushed{std::vector<bool>(chunks, false), {}, {}});
    }
    return r;
}

vmha::Status Replicator::wait(const std::function<bool(std::function<void(vmha::Status)>)>& start) {
    auto result = std::make_shared<std::optional<vmha::Status>>();
    start([result](vmha::Status st) { *result = std::move(st); });
    while (!*result) {
        if (io_.run_one() == 0) {
            io_.restart();
            return vmha::Error(vmha::errc::internal, "the event loop ran dry during start-up I/O");
        }
    }
    return std::move(**result);
}

vmha::Status Replicator::load_meta() {
    parts_ = std::make_unique<MetaParts>(config_.meta_dir);
    auto stored = parts_->store.load();
    if (!stored) return std::move(stored).error();
    if (*stored) {
        meta_ = **stored;
    } else if (role_ == Role::primary) {
        // A new pair: the primary's images are declared the data; the secondary gets a full resync.
        meta_ = meta::NodeMeta::initial_source(meta::fresh_generation_id());
        spdlog::info("no metadata in \"{}\": this primary's images are the initial data "
                     "(generation {})",
                     config_.meta_dir.string(), meta::format_generation(meta_.gen.current));
    } else {
        meta_ = meta::NodeMeta::just_created();
        spdlog::info("no metadata in \"{}\": this secondary's images are Inconsistent until a "
                     "full resync",
                     config_.meta_dir.string());
    }
    meta_.note_start();
    if (meta_.crashed_primary) {
        spdlog::warn("this node was primary when it stopped without a clean shutdown: its "
                     "activity-log extents may differ from the peer");
    }
    if (role_ == Role::primary) {
        if (meta_.data_state != meta::DataState::UpToDate) {
            return vmha::Error(vmha::errc::not_up_to_date,
                               fmt::format("cannot start as primary: the data here is {} (see "
                                           "\"{}\"); start as secondary and let it resync",
                                           meta::to_string(meta_.data_state),
                                           parts_->store.path().string()));
        }
        meta_.promote();
    }

    // Dirty maps and activity logs first: a new one must be durable before the metadata that
    // relies on it.
    recovered_extents_.resize(exports_.size());
    for (std::size_t i = 0; i < exports_.size(); ++i) {
        const Export* e = exports_[i];
        const auto map_path = config_.meta_dir / (e->info().name + ".dirty");
        const bool map_exists = std::filesystem::exists(map_path);
        auto map_file = UringMetaFile::open(uring_, map_path, !map_exists);
        if (!map_file) return std::move(map_file).error();
        auto map = map_exists ? meta::DirtyMap::load(**map_file, e->info().size, config_.chunk_size)
                              : meta::DirtyMap::create(**map_file, e->info().size, config_.chunk_size);
        if (!map) return std::move(map).error();
        if (!map_exists) {
            if (auto st = wait([&](auto done) { return (*map)->flush(done); }); !st) return st;
        }
        if ((*map)->dirty_bytes() > 0) {
            spdlog::info("export \"{}\": {} bytes recorded dirty from before", e->info().name,
                         (*map)->dirty_bytes());
        }

        const auto log_path = config_.meta_dir / (e->info().name + ".al");
        const bool log_exists = std::filesystem::exists(log_path);
        auto log_file = UringMetaFile::open(uring_, log_path, !log_exists);
        if (!log_file) return std::move(log_file).error();
        const meta::ActivityLogConfig log_config{.export_size = e->info().size,
                                                 .extent_size = config_.activity_log_extent};
        auto log = log_exists ? meta::ActivityLog::open(**log_file, log_config)
                              : meta::ActivityLog::create(**log_file, log_config);
        if (!log) return std::move(log).error();
        if (!log_exists) {
            if (auto st = wait([&](auto done) { return (*log)->flush(done); }); !st) return st;
        }
        bool keep_log = false;
        if (meta_.crashed_primary) {
            const auto extents = (*log)->logged_extents();
            std::uint64_t bytes = 0;
            for (const auto& x : extents) bytes += x.length;
            if (role_ == Role::primary) {
                // This node goes on as primary: the peer may lack any of these ranges.
                for (const auto& x : extents) {
                    if (auto st = wait([&](auto done) { return (*map)->mark(x.offset, x.length, done); }); !st) {
                        return st;
                    }
                }
                spdlog::warn("export \"{}\": {} activity-log extent(s) ({} bytes) from the crash "
                             "join the next resync to the peer",
                             e->info().name, extents.size(), bytes);
            } else {
                // The peer is (or becomes) primary: it must resend these ranges to us.
                for (const auto& x : extents) recovered_extents_[i].emplace_back(x.offset, x.length);
                keep_log = true;
                spdlog::warn("export \"{}\": {} activity-log extent(s) ({} bytes) from the crash "
                             "will be resynced from the primary",
                             e->info().name, extents.size(), bytes);
            }
        }
        if (!keep_log && log_exists) {
            if (auto st = wait([&](auto done) { return (*log)->reset(done); }); !st) return st;
        }
        parts_->files.push_back(std::move(*map_file));
        parts_->files.push_back(std::move(*log_file));
        parts_->maps.push_back(std::move(*map));
        parts_->logs.push_back(std::move(*log));
    }
    return save_meta("start");
}

vmha::Status Replicator::save_meta(const char* why) {
    auto s = parts_->store.save(meta_);
    if (!s) {
        spdlog::error("saving metadata ({}) failed: {}", why, s.error().message);
        return s;
    }
    spdlog::debug("metadata saved ({}): {} generation {} bitmap {}", why,
                  meta::to_string(meta_.data_state), meta::format_generation(meta_.gen.current),
                  meta::format_generation(meta_.gen.bitmap));
    return s;
}

std::shared_ptr<ReplicaSink> Replicator::sink(std::size_t export_index) {
    return sinks_.at(export_index);
}

WriteGate* Replicator::gate(std::size_t export_index) { return gates_.at(export_index).get(); }

void Replicator::fire(LinkEvent event, const std::string& reason) {
    const auto t = link_transition(link_, event);
    if (!t) {
        vmha::internal_error(fmt::format("replication link: event {} in state {}",
                                         to_string(event), to_string(link_)));
    }
    if (t->next != link_ || event == LinkEvent::handshake_refused) {
        spdlog::info("replication link {} -> {}: {} ({})", to_string(link_), to_string(t->next),
                     reason, t->action);
    }
    link_ = t->next;
    link_reason_ = reason;
}

void Replicator::start() {
    if (config_.start_disconnected) {
        link_ = LinkState::standalone;
        link_reason_ = "started disconnected";
        return;
    }
    link_ = LinkState::standalone;
    fire(LinkEvent::connect_command, "started");
    start_connecting();
}

void Replicator::start_connecting() {
    const std::uint64_t generation = ++connect_generation_;
    if (role_ == Role::primary) {
        if (!config_.peer) {
            link_reason_ = "no peer configured (--peer): writes are recorded dirty";
            return;
        }
        asio::co_spawn(io_, dial_loop(generation), asio::detached);
    } else {
        if (!config_.listen) {
            link_reason_ = "no listen address configured (--listen)";
            return;
        }
        asio::co_spawn(io_, accept_loop(generation), asio::detached);
    }
}

void Replicator::stop_connecting() {
    ++connect_generation_;
    if (acceptor_) {
        error_code ignored;
        acceptor_->close(ignored);
        acceptor_.reset();
    }
}

asio::awaitable<void> Replicator::dial_loop(std::uint64_t generation) {
    tcp::resolver resolver(io_);
    asio::steady_timer timer(io_);
    while (generation == connect_generation_ && !stopping_) {
        if (session_) {  // linked: wait for it to end
            timer.expires_after(std::chrono::milliseconds(50));
            error_code ec;
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            continue;
        }
        error_code ec;
        auto endpoints = co_await resolver.async_resolve(
            config_.peer->host, std::to_string(config_.peer->port),
            asio::redirect_error(asio::use_awaitable, ec));
        if (generation != connect_generation_ || stopping_) break;
        if (!ec) {
            tcp::socket socket(io_);
            asio::steady_timer deadline(io_);
            deadline.expires_after(config_.timeout);
            deadline.async_wait([&socket](const error_code& e) {
                if (!e) {
                    error_code ignored;
                    socket.close(ignored);
                }
            });
            co_await asio::async_connect(socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
            deadline.cancel();
            if (generation != connect_generation_ || stopping_) break;
            if (!ec) {
                attach(std::make_shared<Session>(*this, std::move(socket), true));
                continue;
            }
        }
        spdlog::debug("dialing peer {} failed: {}", config_.peer->to_string(), ec.message());
        timer.expires_after(config_.connect_retry);
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
}

asio::awaitable<void> Replicator::accept_loop(std::uint64_t generation) {
    if (!acceptor_) {
        error_code ec;
        tcp::resolver resolver(io_);
        auto endpoints = resolver.resolve(config_.listen->host, std::to_string(config_.listen->port), ec);
        if (ec || endpoints.empty()) {
            spdlog::error("cannot resolve listen address {}: {}", config_.listen->to_string(), ec.message());
            co_return;
        }
        acceptor_.emplace(io_);
        const tcp::endpoint ep = *endpoints.begin();
        acceptor_->open(ep.protocol(), ec);
        if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
        if (!ec) acceptor_->bind(ep, ec);
        if (!ec) acceptor_->listen(4, ec);
        if (ec) {
            spdlog::error("cannot listen for the peer on {}: {}", config_.listen->to_string(), ec.message());
            acceptor_.reset();
            co_return;
        }
        spdlog::info("listening for the primary on {}", config_.listen->to_string());
    }
    while (generation == connect_generation_ && !stopping_ && acceptor_) {
        error_code ec;
        tcp::socket socket = co_await acceptor_->async_accept(asio::redirect_error(asio::use_awaitable, ec));
        if (generation != connect_generation_ || stopping_) break;
        if (ec) {
            if (ec == asio::error::operation_aborted) break;
            spdlog::warn("accepting the peer failed: {}", ec.message());
            continue;
        }
        if (session_) {
            // A primary that restarted or reconnected: the old connection is half dead. A
            // secondary has no request of its own in flight, so it can let go of it now.
            spdlog::info("peer connected again from {}: closing the previous connection",
                         socket.remote_endpoint(ec).address().to_string());
            auto old = session_;
            old->close("replaced by a new connection from the peer");
            detach_session("the peer connected again");
        }
        if (link_ == LinkState::standalone) {
            // Still listening after a split-brain refusal: the primary dialed again.
            fire(LinkEvent::connect_command, "the primary dialed again after the split brain");
        }
        attach(std::make_shared<Session>(*this, std::move(socket), false));
    }
}

void Replicator::attach(std::shared_ptr<Session> session) {
    session_ = std::move(session);
    spdlog::info("peer connection {} {}: handshake", session_->dialer() ? "to" : "from",
                 session_->remote());
    session_->start();
    if (session_->dialer()) {
        hello_generations_ = meta_.gen;
        session_->send(peer::Message{0, make_hello()});
    }
}

peer::Hello Replicator::make_hello() const {
    peer::Hello h;
    h.module = config_.module;
    h.node = config_.node;
    h.role = wire_role(role_);
    h.data_state = wire_state(meta_.data_state);
    h.hello_flags = static_cast<std::uint16_t>((meta_.crashed_primary ? 1 : 0) |
                                               (role_ == Role::secondary && images_empty() ? 2 : 0));
    h.chunk_size = config_.chunk_size;
    h.current_generation = meta_.gen.current;
    h.bitmap_generation = meta_.gen.bitmap;
    h.history.assign(meta_.gen.history.begin(), meta_.gen.history.end());
    for (const Export* e : exports_) h.exports.push_back({e->info().name, e->info().size});
    h.changes = peer::Hello::Changes{changed_bytes(), config_.split_brain};
    return h;
}

std::uint64_t Replicator::changed_bytes() const {
    std::uint64_t bytes = 0;
    for (const auto& map : parts_->maps) bytes += map->dirty_bytes();
    return bytes;
}

std::string Replicator::resolve_split_brain(const peer::Hello& hello, meta::SyncDecision& decision) {
    SplitBrainReport report;
    report.peer_node = hello.node;
    report.local_changed_bytes = changed_bytes();
    if (hello.changes) report.peer_changed_bytes = hello.changes->changed_bytes;
    report.since_generation = meta::shared_ancestor(meta_.gen, peer_generations_);
    const std::string there = report.peer_changed_bytes ? vmha::human_bytes(*report.peer_changed_bytes)
                                                        : std::string("an unknown amount");
    const std::string counts =
        fmt::format("{} changed here, {} there since generation {}",
                    vmha::human_bytes(report.local_changed_bytes), there,
                    meta::format_generation(report.since_generation));
    split_brain_ = report;
    if (config_.split_brain == peer::SplitBrainPolicy::discard_zero_changes && report.peer_changed_bytes) {
        const bool zero_here = report.local_changed_bytes == 0;
        const bool zero_there = *report.peer_changed_bytes == 0;
        // Exactly one side wrote nothing: it is discarded. Neither did: the secondary is.
        const bool discard_here = zero_here && (!zero_there || role_ == Role::secondary);
        const bool discard_there = zero_there && (!zero_here || role_ == Role::primary);
        if (discard_here && role_ == Role::primary) {
            return fmt::format("split brain with {}: {}; the policy discard-zero-changes would "
                               "discard this primary's copy, which wrote nothing: demote this node",
                               hello.node, counts);
        }
        if (discard_there && role_ == Role::secondary) {
            return fmt::format("split brain with {}: {}; the policy discard-zero-changes would "
                               "discard the primary's copy on {}, which wrote nothing: demote it",
                               hello.node, counts, hello.node);
        }
        if (discard_here || discard_there) {
            spdlog::warn("SPLIT BRAIN with node \"{}\" resolved by the policy discard-zero-changes: "
                         "{}; the copy on {}, which wrote nothing since the split, is discarded and "
                         "becomes a full resync target",
                         hello.node, counts, discard_here ? config_.node : hello.node);
            decision.kind = discard_here ? meta::SyncKind::self_is_target_full
                                         : meta::SyncKind::self_is_source_full;
            decision.reason = fmt::format("split brain resolved by discard-zero-changes: {}", counts);
            split_brain_.reset();
            return {};
        }
    }
    spdlog::error("SPLIT BRAIN with node \"{}\": {}; both copies are kept untouched until the "
                  "operator keeps one side (`vmha prim --force` on it)",
                  hello.node, counts);
    return fmt::format("split brain with {}: {}; keep one side with `vmha prim --force` on it",
                       hello.node, counts);
}

bool Replicator::on_hello(Session& session, const peer::Hello& hello) {
    if (session_.get() != &session) {
        session.close("a newer connection replaced this one");
        return false;
    }
    // The listener answers with its own HELLO first, so that each side can judge the other
    // and tell the operator why a connection is refused.
    if (!session.dialer()) {
        hello_generations_ = meta_.gen;
        session.send(peer::Message{0, make_hello()});
    } else if (meta_.gen != hello_generations_) {
        // Both sides must decide on the same two records (writes are held during the
        // handshake, so this is a safety net): start over with a new HELLO.
        session.close("this node's generation changed during the handshake; reconnecting");
        return false;
    }
    // keep_listening: a secondary refused for a split brain goes on accepting, so that the
    // primary can dial it again once the operator kept that side (the link stays standalone
    // until then; a dial that is still a split brain is refused again).
    auto refuse = [&](std::string reason, bool keep_listening = false) {
        spdlog::error("connection with node \"{}\" ({}) refused: {}", hello.node, session.remote(),
                      reason);
        if (link_ == LinkState::connecting) {
            fire(LinkEvent::handshake_refused, reason);
            if (!keep_listening || role_ != Role::secondary) stop_connecting();
        }
        session.finish(reason);
        return false;
    };
    if (hello.module != config_.module) {
        return refuse(fmt::format("peer {} serves module \"{}\", this is module \"{}\"",
                                  session.remote(), hello.module, config_.module));
    }
    if (hello.exports.size() != exports_.size()) {
        return refuse(fmt::format("module \"{}\" has {} export(s) here but {} on node \"{}\"",
                                  config_.module, exports_.size(), hello.exports.size(), hello.node));
    }
    for (std::size_t i = 0; i < exports_.size(); ++i) {
        const auto& mine = exports_[i]->info();
        const auto& theirs = hello.exports[i];
        if (mine.name != theirs.name || mine.size != theirs.size) {
            return refuse(fmt::format("export {} is \"{}\" of {} bytes here but \"{}\" of {} "
                                      "bytes on node \"{}\"",
                                      i, mine.name, mine.size, theirs.name, theirs.size, hello.node));
        }
    }
    if (hello.chunk_size != config_.chunk_size) {
        return refuse(fmt::format("chunk size is {} here but {} on node \"{}\"", config_.chunk_size,
                                  hello.chunk_size, hello.node));
    }
    const auto peer_policy = hello.changes ? hello.changes->policy : peer::SplitBrainPolicy::disconnect;
    if (peer_policy != config_.split_brain) {
        return refuse(fmt::format("the split-brain policy is {} here but {} on node \"{}\"; both "
                                  "nodes must use the same",
                                  to_string(config_.split_brain), to_string(peer_policy), hello.node));
    }
    const bool peer_primary = hello.role == 1;
    if (peer_primary && role_ == Role::primary) {
        return refuse(fmt::format("node \"{}\" is primary too: two primaries never connect; demote "
                                  "one of them",
                                  hello.node));
    }
    if (!session.dialer() && !peer_primary) {
        return refuse(fmt::format("node \"{}\" dialed as a secondary; only a primary dials", hello.node));
    }
    meta::NodeMeta theirs;
    theirs.gen.current = hello.current_generation;
    theirs.gen.bitmap = hello.bitmap_generation;
    for (std::size_t i = 0; i < theirs.gen.history.size() && i < hello.history.size(); ++i) {
        theirs.gen.history[i] = hello.history[i];
    }
    theirs.data_state = from_wire_state(hello.data_state);
    theirs.crashed_primary = (hello.hello_flags & 1) != 0;
    peer_images_empty_ = (hello.hello_flags & 2) != 0;
    meta::Roles roles;
    roles.self_primary = role_ == Role::primary;
    roles.peer_primary = peer_primary;
    roles.self_wins_ties = config_.node < hello.node;
    meta::SyncDecision decision = meta::decide(meta_, theirs, roles);

    peer_node_ = hello.node;
    peer_data_state_ = theirs.data_state;
    peer_generations_ = theirs.gen;
    session.set_handshaken();
    spdlog::info("handshake with node \"{}\" ({}): {} (rule {}): {}", hello.node, session.remote(),
                 meta::to_string(decision.kind), decision.rule, decision.reason);
    if (decision.kind == meta::SyncKind::split_brain) {
        // The prefix "split_brain:" is what vmhad reads the link state from.
        if (std::string why = resolve_split_brain(hello, decision); !why.empty()) {
            return refuse(fmt::format("split_brain: {}", why), true);
        }
    } else if (decision.kind != meta::SyncKind::unrelated &&
               decision.kind != meta::SyncKind::no_usable_source) {
        split_brain_.reset();
    }

    switch (decision.kind) {
        case meta::SyncKind::in_sync:
            fire(LinkEvent::handshake_in_sync, decision.reason);
            if (role_ == Role::secondary) {
                meta_.data_state = meta::DataState::UpToDate;
                (void)save_meta("in sync with the primary");
            }
            end_fence("the peer reconnected in sync");
            release_held_writes();
            return true;
        case meta::SyncKind::self_is_source_bitmap:
        case meta::SyncKind::self_is_source_full:
            if (role_ != Role::primary) {
                return refuse(fmt::format("this secondary has the newer data ({}); promote it, or "
                                          "discard its changes with a forced promotion of node "
                                          "\"{}\"",
                                          decision.reason, hello.node));
            }
            full_resync_pending_ = decision.kind == meta::SyncKind::self_is_source_full;
            if (meta_.gen.bitmap == meta::kNoGeneration &&
                !meta::is_reserved_generation(theirs.gen.current)) {
                // Resyncing means the peer lacks writes: we are tracking since its generation.
                meta_.gen.bitmap = theirs.gen.current;
                (void)save_meta("resync source");
            }
            fire(LinkEvent::handshake_source, decision.reason);
            // A peer that crashed as primary first sends its activity-log extents (one EXTENTS
            // per export); they join the resync before it starts.
            awaiting_peer_extents_ = decision.peer_activity_log_joins ? exports_.size() : 0;
            if (awaiting_peer_extents_ == 0) begin_resync();
            end_fence("the peer reconnected as the resync target");
            release_held_writes();
            return true;
        case meta::SyncKind::self_is_target_bitmap:
        case meta::SyncKind::self_is_target_full:
            if (role_ == Role::primary) {
                return refuse(fmt::format("the secondary \"{}\" has newer data than this primary "
                                          "({}); demote this node",
                                          hello.node, decision.reason));
            }
            if (decision.kind == meta::SyncKind::self_is_target_full) {
                meta_.start_full_sync_target();
                // Whatever this copy wrote alone (a discarded split-brain side) is overwritten:
                // its dirty bits no longer mean anything (made durable with the next commit).
                for (auto& map : parts_->maps) map->clear(0, map->export_size());
            } else {
                meta_.start_bitmap_sync_target();
            }
            if (!save_meta("resync target")) {
                return refuse("cannot record this node as a resync target");
            }
            fire(LinkEvent::handshake_target, decision.reason);
            if (decision.self_activity_log_joins) {
                for (std::size_t i = 0; i < exports_.size(); ++i) {
                    session.send(peer::Message{0, peer::Extents{static_cast<std::uint32_t>(i),
                                                                recovered_extents_[i]}});
                }
            }
            return true;
        case meta::SyncKind::split_brain:
        case meta::SyncKind::unrelated:
        case meta::SyncKind::no_usable_source:
            return refuse(fmt::format("{}: {}", meta::to_string(decision.kind), decision.reason));
    }
    return refuse("unknown decision");
}

void Replicator::on_session_closed(Session* session, const std::string& reason) {
    // Called once both of the session's loops ended: no queued buffer is referenced any more.
    if (session_.get() == session) detach_session(reason);
    if (stopping_ && !session_ && stop_done_) {
        auto done = std::move(stop_done_);
        done();
    }
}

void Replicator::detach_session(const std::string& reason) {
    std::shared_ptr<Session> old = std::move(session_);
    peer_data_state_ = meta::DataState::Unknown;
    if (is_linked(link_)) {
        if (config_.fence && role_ == Role::primary && !fencing_) {
            fencing_ = true;
            spdlog::warn("fencing: the replies of writes from now on wait until the peer is "
                         "known Outdated or gone (imagesync resume-io) or it reconnects");
        }
        fire(LinkEvent::link_lost, reason);
    } else {
        spdlog::info("peer connection {} closed: {}", old ? old->remote() : "-", reason);
    }
    // What the peer acknowledged but never flushed may be lost if it crashed: dirty it first.
    fold_unflushed_into_dirty_map();
    // Every request in flight: the peer may not have it. Primary writes go to the dirty map.
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [cookie, p] : pending) p->complete(std::nullopt);
    resync_in_flight_ = 0;
    ++resync_epoch_;  // chunks of the lost session no longer count
    awaiting_peer_extents_ = 0;
    release_held_writes();
}

void Replicator::note_replicated(std::size_t export_index, std::uint64_t offset, std::uint64_t length) {
    if (length == 0) return;
    auto& u = unflushed_[export_index];
    const std::uint64_t first = offset / config_.chunk_size;
    const std::uint64_t last = (offset + length - 1) / config_.chunk_size;
    for (std::uint64_t c = first; c <= last && c < u.marked.size(); ++c) {
        if (u.marked[c]) continue;
        u.marked[c] = true;
        u.chunks.push_back(c);
    }
    any_unflushed_ = true;
}

void Replicator::fold_unflushed_into_dirty_map() {
    if (!any_unflushed_ || role_ != Role::primary) return;
    if (auto st = ensure_alone_generation(); !st) return;  // logged there; kept for the next try
    any_unflushed_ = false;
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < unflushed_.size(); ++i) {
        auto& map = *parts_->maps[i];
        auto& u = unflushed_[i];
        for (const auto* list : {&u.chunks, &u.flushing}) {
            for (const auto c : *list) {
                const std::uint64_t offset = c * config_.chunk_size;
                const std::uint64_t length =
                    std::min<std::uint64_t>(config_.chunk_size, map.export_size() - offset);
                (void)map.mark(offset, length, [](vmha::Status st) {
                    if (!st) spdlog::error("recording unflushed ranges failed: {}", st.error().message);
                });
                bytes += length;
            }
        }
        for (const auto c : u.chunks) u.marked[c] = false;
        u.chunks.clear();
        u.flushing.clear();
    }
    if (bytes > 0) {
        // Not "acknowledged alone" (discard_unacknowledged): no flush of them has completed, so
        // the client was promised nothing durable about them — losing them is what a crash may
        // do to a disk's volatile cache — and the peer, which received them, most likely has them.
        spdlog::info("{} bytes the peer acknowledged but had not flushed join the dirty map", bytes);
    }
}

void Replicator::local_write_failed(std::size_t export_index, const WriteOp& op) {
    if (role_ != Role::primary || op.length == 0) return;
    spdlog::error("export \"{}\": the local image failed an operation at offset {} ({} bytes) that "
                  "the peer may have applied: recording it dirty",
                  exports_[export_index]->info().name, op.offset, op.length);
    (void)parts_->maps[export_index]->mark(op.offset, op.length, [](vmha::Status st) {
        if (!st) spdlog::error("recording a failed write failed: {}", st.error().message);
    });
    if (link_ == LinkState::connected && session_ && !session_->closed()) {
        fire(LinkEvent::resync_requested, "a local write failed after the peer applied it");
        session_->send(peer::Message{0, peer::State{wire_role(role_), 2, meta_.gen.current}});
        start_resync();
    }
}

void Replicator::release_held_writes() {
    auto held = std::move(held_);
    held_.clear();
    for (auto& h : held) replicate(h.export_index, h.op, std::move(h.done));
}

void Replicator::send_ping(Session& session) {
    const std::uint64_t cookie = next_cookie_++;
    auto p = std::make_shared<Pending>();
    p->sent = Clock::now();
    p->is_ping = true;
    p->complete = [](std::optional<std::uint32_t>) {};
    pending_.emplace(cookie, std::move(p));
    session.send(peer::Message{cookie, peer::Ping{}});
}

// ---- Primary write path -----------------------------------------------------------------------

void Replicator::replicate(std::size_t export_index, const WriteOp& op,
                           std::function<void(vmha::Status)> done) {
    if (role_ != Role::primary) {
        if (op.kind == WriteOp::Kind::flush) {
            done({});  // the local flush is all a secondary's client can ask for
        } else {
            done(vmha::Error(vmha::errc::read_only, "this node is secondary: writes are refused"));
        }
        return;
    }
    const auto now = Clock::now();
    if (op.kind != WriteOp::Kind::flush) last_client_write_ = now;
    if (session_ && !session_->closed() && !session_->handshaken()) {
        held_.push_back(HeldWrite{export_index, op, std::move(done)});
        return;
    }
    if (!session_ || !is_linked(link_) || session_->closed()) {
        record_dirty(export_index, op, std::move(done));
        return;
    }
    const std::uint64_t cookie = next_cookie_++;
    peer::Range range{static_cast<std::uint32_t>(export_index), op.offset,
                      static_cast<std::uint32_t>(op.length)};
    auto p = std::make_shared<Pending>();
    p->sent = now;
    // Copy what record_dirty needs; the data itself is not needed to record a range.
    WriteOp meta_op = op;
    meta_op.data = {};
    std::uint64_t flush_sequence = 0;
    if (op.kind == WriteOp::Kind::flush) {
        // This FLUSH makes durable on the peer everything it acknowledged so far.
        flush_sequence = ++flush_sequence_;
        for (auto& u : unflushed_) {
            for (const auto c : u.chunks) u.marked[c] = false;
            u.flushing.insert(u.flushing.end(), u.chunks.begin(), u.chunks.end());
            u.chunks.clear();
        }
    }
    p->export_index = export_index;
    p->op = meta_op;
    // A large client payload in pages of its own may be lent to the socket; complete_forwarded
    // then has it unshared if the peer never acknowledges it.
    p->lent = op.kind == WriteOp::Kind::write && config_.zero_copy_min_bytes > 0 &&
              op.data.size() >= config_.zero_copy_min_bytes && op.pages_lent != nullptr;
    p->flush_sequence = flush_sequence;
    p->done = std::move(done);
    // Only (this, p): std::function keeps it without an allocation. `p` outlives the call
    // (on_ack and the link's loss hold it while completing).
    p->complete = [this, raw = p.get()](std::optional<std::uint32_t> status) {
        complete_forwarded(*raw, status);
    };
    const bool lent = p->lent;
    pending_.emplace(cookie, std::move(p));
    switch (op.kind) {
        case WriteOp::Kind::write: {
            peer::Bytes head = session_->take_head();
            peer::encode_write_header(cookie, range, op.fua, head);
            session_->send(cookie, std::move(head), op.data, lent);
            return;
        }
        case WriteOp::Kind::write_zeroes:
            session_->send(peer::Message{cookie, peer::WriteZeroes{range, op.fua, op.may_trim}});
            return;
        case WriteOp::Kind::trim:
            session_->send(peer::Message{cookie, peer::Trim{range, op.fua}});
            return;
        case WriteOp::Kind::flush:
            session_->send(peer::Message{cookie, peer::Flush{}});
            return;
    }
}

vmha::Status Replicator::ensure_alone_generation() {
    if (meta_.gen.bitmap != meta::kNoGeneration) return {};  // already tracking since the split
    meta_.new_generation_when_alone(meta::fresh_generation_id());
    alone_started_here_ = true;  // every write of this generation passes through this process
    alone_acked_ = false;
    spdlog::warn("writing without the peer: new data generation {} (the peer has {})",
                 meta::format_generation(meta_.gen.current),
                 meta::format_generation(meta_.gen.bitmap));
    return save_meta("new generation without the peer");
}

void Replicator::record_dirty(std::size_t export_index, const WriteOp& op,
                              std::function<void(vmha::Status)> done) {
    if (op.kind == WriteOp::Kind::flush) {
        // Nothing to record, but whatever the dirty maps are committing (the fold of unflushed
        // chunks at a link loss, say) must be durable before a FLUSH is acknowledged.
        if (parts_->maps.empty()) {
            done({});
            return;
        }
        auto remaining = std::make_shared<std::size_t>(parts_->maps.size());
        auto failure = std::make_shared<std::optional<vmha::Error>>();
        auto shared_done = std::make_shared<std::function<void(vmha::Status)>>(std::move(done));
        for (auto& map : parts_->maps) {
            (void)map->flush([remaining, failure, shared_done](vmha::Status st) {
                if (!st && !*failure) *failure = std::move(st).error();
                if (--*remaining != 0) return;
                if (*failure) {
                    (*shared_done)(std::move(**failure));
                } else {
                    (*shared_done)({});
                }
            });
        }
        return;
    }
    if (auto s = ensure_alone_generation(); !s) {
        done(vmha::Error(vmha::errc::io_error,
                         fmt::format("cannot record the new generation, so the write at offset {} "
                                     "cannot be acknowledged: {}",
                                     op.offset, s.error().message)));
        return;
    }
    ++writes_recorded_dirty_;
    if (!fencing_) {
        alone_acked_ = true;  // answered once recorded: acknowledged without the peer
        parts_->maps[export_index]->mark(op.offset, op.length, std::move(done));
        return;
    }
    parts_->maps[export_index]->mark(op.offset, op.length, [this, done = std::move(done)](vmha::Status st) mutable {
        if (!fencing_) {
            alone_acked_ = true;
            done(std::move(st));
            return;
        }
        if (demoting_) {
            // Fencing began during a demotion (the peer lost while the drain waited for it):
            // never acknowledged, and no one will release it — it fails, as held replies do.
            done(vmha::Error(vmha::errc::io_error, "demoted while the write waited for the peer to be fenced"));
            return;
        }
        fenced_.push_back(FencedReply{std::move(done), std::move(st)});
    });
}

vmha::Status Replicator::release_fence() {
    if (!fencing_) {
        return vmha::Error(vmha::errc::invalid_argument, "no write reply is held back: not fencing");
    }
    end_fence("released: the peer is Outdated or gone");
    return {};
}

void Replicator::set_write_lease(std::optional<std::chrono::milliseconds> valid_for) {
    if (!valid_for) {
        if (write_deadline_) spdlog::info("write lease removed: writes are no longer time-limited");
        write_deadline_.reset();
    } else {
        write_deadline_ = std::chrono::steady_clock::now() + *valid_for;
        spdlog::debug("write lease: writes accepted for {} ms", valid_for->count());
    }
    write_lease_ended_logged_ = false;
}

vmha::Status Replicator::discard_unacknowledged() {
    auto refuse = [](vmha::errc code, std::string why) {
        return vmha::Error(code, "nothing discarded: " + std::move(why));
    };
    if (role_ != Role::secondary) return refuse(vmha::errc::busy, "this node is primary (demote it first)");
    if (is_linked(link_)) return refuse(vmha::errc::busy, "the peer is connected");
    if (meta_.gen.bitmap == meta::kNoGeneration) {
        return refuse(vmha::errc::invalid_argument, "this copy holds no write made without the peer");
    }
    if (!alone_started_here_) {
        return refuse(vmha::errc::invalid_argument,
                      "the writes made without the peer began before this imagesyncd started, so whether "
                      "one was acknowledged is unknown (an operator resolves the split brain)");
    }
    if (alone_acked_) {
        return refuse(vmha::errc::invalid_argument,
                      "a write made without the peer was acknowledged: this copy holds data the peer lacks");
    }
    const std::string alone = meta::format_generation(meta_.gen.current);
    meta_.start_full_sync_target();
    for (auto& map : parts_->maps) map->clear(0, map->export_size());
    if (!save_meta("unacknowledged writes discarded")) {
        return vmha::Error(vmha::errc::io_error, "cannot record this copy as a resync target");
    }
    alone_started_here_ = false;
    spdlog::warn("the writes made without the peer (generation {}) were never acknowledged: discarded; this "
                 "copy is now a full resync target of the peer",
                 alone);
    return {};
}

vmha::Status Replicator::write_lease_allows() {
    if (!write_deadline_ || std::chrono::steady_clock::now() < *write_deadline_) return {};
    if (!write_lease_ended_logged_) {
        write_lease_ended_logged_ = true;
        spdlog::warn("write lease ended: writes are refused until vmhad renews it (this node may no "
                     "longer hold the module's lease)");
    }
    return vmha::Error(vmha::errc::read_only,
                       "the write lease ended: this node may no longer hold the module's lease");
}

void Replicator::end_fence(const std::string& why) {
    if (!fencing_) return;
    fencing_ = false;
    auto replies = std::move(fenced_);
    fenced_.clear();
    if (!replies.empty()) alone_acked_ = true;
    spdlog::info("fencing ends ({}): {} held write replies go out", why, replies.size());
    for (auto& r : replies) r.done(std::move(r.status));
}

void Replicator::fail_fenced(const std::string& why) {
    if (!fencing_) return;
    fencing_ = false;
    auto replies = std::move(fenced_);
    fenced_.clear();
    if (!replies.empty()) {
        spdlog::warn("fencing ends ({}): {} held writes are answered with an I/O error", why, replies.size());
    }
    for (auto& r : replies) r.done(vmha::Error(vmha::errc::io_error, why));
}

// ---- Messages after the handshake ---------------------------------------------------------------

void Replicator::on_message(Session& session, peer::Message message,
                            std::shared_ptr<const std::byte[]> owner) {
    if (session_.get() != &session) return;  // a replaced connection
    const std::uint64_t cookie = message.cookie;
    auto check_range = [&](const peer::Range& r) {
        if (r.export_index >= exports_.size() ||
            r.offset + r.length > exports_[r.export_index]->info().size) {
            session.close(fmt::format("peer sent a range outside the exports (export {}, offset {}, "
                                      "length {})",
                                      r.export_index, r.offset, r.length));
            return false;
        }
        return true;
    };
    const bool may_receive_writes = role_ == Role::secondary;
    std::visit(
        [&](auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, peer::Ack>) {
                on_ack(cookie, m.status);
            } else if constexpr (std::is_same_v<T, peer::Ping>) {
                session.send(peer::Message{cookie, peer::Ack{0}});
            } else if constexpr (std::is_same_v<T, peer::Hello>) {
                session.close("peer sent HELLO twice");
            } else if constexpr (std::is_same_v<T, peer::Extents>) {
                on_peer_extents(m);
            } else if constexpr (std::is_same_v<T, peer::ChecksumRequest>) {
                answer_checksums(session, cookie, m);
            } else if constexpr (std::is_same_v<T, peer::ChecksumReply>) {
                auto it = pending_.find(cookie);
                if (it == pending_.end() || !it->second->on_checksums) {
                    session.close(fmt::format("peer sent checksums for unknown request {}", cookie));
                    return;
                }
                auto p = std::move(it->second);
                pending_.erase(it);
                p->on_checksums(m);
            } else if constexpr (std::is_same_v<T, peer::State>) {
                if (role_ == Role::secondary && m.data_state == 2 && link_ == LinkState::sync_target) {
                    ++target_epoch_;  // a new resync overtook the end of the last one
                    return;
                }
                if (role_ == Role::secondary && m.data_state == 2 && link_ == LinkState::connected) {
                    // The primary starts a resync to us (verify --mark, resync verb).
                    meta_.start_bitmap_sync_target();
                    if (!save_meta("resync target")) {
                        session.close("cannot record this node as a resync target");
                        return;
                    }
                    fire(LinkEvent::resync_announced, "the primary starts a resync");
                    return;
                }
                peer_data_state_ = from_wire_state(m.data_state);
                if (link_ == LinkState::sync_target && m.data_state == 1) {
                    on_resync_finished_by_source(session, m);
                }
            } else if constexpr (std::is_same_v<T, peer::Flush>) {
                if (!may_receive_writes) {
                    session.close("a primary received FLUSH from its peer");
                    return;
                }
                auto remaining = std::make_shared<std::size_t>(exports_.size());
                auto worst = std::make_shared<std::uint32_t>(0);
                auto s = session_;
                for (Export* e : exports_) {
                    e->file().flush([s, cookie, remaining, worst](vmha::Status st) {
                        if (!st) *worst = static_cast<std::uint32_t>(vmha::errc::io_error);
                        if (--*remaining == 0) s->send(peer::Message{cookie, peer::Ack{*worst}});
                    });
                }
            } else {
                if (!may_receive_writes) {
                    session.close("a primary received a write from its peer");
                    return;
                }
                WriteOp op;
                peer::Range range;
                if constexpr (std::is_same_v<T, peer::Write>) {
                    range = m.range;
                    op = WriteOp{WriteOp::Kind::write, range.offset, range.length, m.data, m.fua};
                } else if constexpr (std::is_same_v<T, peer::ResyncData>) {
                    // Durable before the ACK: the source clears its dirty bits on the ACK.
                    range = m.range;
                    op = WriteOp{WriteOp::Kind::write, range.offset, range.length, m.data, true};
                } else if constexpr (std::is_same_v<T, peer::WriteZeroes>) {
                    range = m.range;
                    op = WriteOp{WriteOp::Kind::write_zeroes, range.offset, range.length, {}, m.fua};
                    op.may_trim = m.may_trim;
                } else if constexpr (std::is_same_v<T, peer::ResyncZeroes>) {
                    range = m.range;
                    op = WriteOp{WriteOp::Kind::write_zeroes, range.offset, range.length, {}, true};
                    op.may_trim = true;
                } else if constexpr (std::is_same_v<T, peer::Trim>) {
                    range = m.range;
                    op = WriteOp{WriteOp::Kind::trim, range.offset, range.length, {}, m.fua};
                }
                if (!check_range(range)) return;
                if constexpr (std::is_same_v<T, peer::ResyncData> || std::is_same_v<T, peer::ResyncZeroes>) {
                    if (link_ != LinkState::sync_target) {
                        session.close(fmt::format("peer sent resync data while the link is {}",
                                                  to_string(link_)));
                        return;
                    }
                    bytes_resynced_ += range.length;
                } else {
                    bytes_replicated_ += range.length;
                }
                apply_from_peer(session, cookie, range, op, std::move(owner));
            }
        },
        message.body);
}

void Replicator::apply_from_peer(Session& session, std::uint64_t cookie, const peer::Range& range,
                                 WriteOp op, std::shared_ptr<const std::byte[]> owner) {
    Export* e = exports_[range.export_index];
    // The ticket is taken now, in arrival order: overlapping operations apply in the order the
    // primary sent them.
    auto ticket = e->locks().enqueue(range.offset, range.length);
    auto s = session_;
    ++applying_;
    e->locks().when_granted(ticket, [this, e, ticket, op, s, cookie, owner = std::move(owner)]() mutable {
        auto finish = [this, e, ticket, s, cookie, owner](vmha::Status st) {
            e->locks().release(ticket);
            --applying_;
            if (!st) {
                spdlog::error("applying a replicated operation to export \"{}\" failed: {}",
                              e->info().name, st.error().message);
            }
            s->send(peer::Message{cookie, peer::Ack{st ? 0u : static_cast<std::uint32_t>(vmha::errc::io_error)}});
        };
        switch (op.kind) {
            case WriteOp::Kind::write:
                e->file().write(op.offset, op.data, op.fua, std::move(finish),
                                ImageFile::Origin::peer);
                break;
            case WriteOp::Kind::write_zeroes:
                e->file().write_zeroes(op.offset, op.length, op.may_trim, false, op.fua, std::move(finish));
                break;
            case WriteOp::Kind::trim: e->file().trim(op.offset, op.length, op.fua, std::move(finish)); break;
            case WriteOp::Kind::flush: e->file().flush(std::move(finish)); break;
        }
    });
    (void)session;
}

// A client's operation that replicate() sent: the peer's status (nullopt: the link went down
// first) completes it, or records it dirty.
void Replicator::complete_forwarded(Pending& p, std::optional<std::uint32_t> status) {
    const std::size_t export_index = p.export_index;
    const WriteOp& meta_op = p.op;
    auto done = std::move(p.done);
    if (status && *status == 0) {
        if (meta_op.kind == WriteOp::Kind::write) bytes_replicated_ += meta_op.length;
        if (meta_op.kind == WriteOp::Kind::flush) {
            // Only the newest FLUSH clears: an older one does not cover what the newer took.
            if (p.flush_sequence == flush_sequence_) {
                for (auto& u : unflushed_) u.flushing.clear();
            }
        } else if (!meta_op.fua) {
            note_replicated(export_index, meta_op.offset, meta_op.length);
        }
        done({});
        return;
    }
    if (status) {
        spdlog::error("peer failed to apply a {} at offset {} ({} bytes) of export \"{}\": {}; "
                      "recording it dirty and disconnecting",
                      meta_op.kind == WriteOp::Kind::flush ? "flush" : "write", meta_op.offset,
                      meta_op.length, exports_[export_index]->info().name,
                      vmha::errc_name(static_cast<vmha::errc>(*status)));
        if (session_) session_->close("the peer failed to apply a write");
    } else if (p.lent) {
        // The link went down first: the kernel may still hold the payload's pages for the peer
        // (in this socket's queue, or the peer's), which may read them later. Export unshares
        // them before the buffer is reused (replica_sink.h).
        *meta_op.pages_lent = true;
    }
    record_dirty(export_index, meta_op, std::move(done));
}

void Replicator::on_ack(std::uint64_t cookie, std::uint32_t status) {
    auto it = pending_.find(cookie);
    if (it == pending_.end()) {
        if (session_) session_->close(fmt::format("peer acknowledged unknown request {}", cookie));
        return;
    }
    auto p = std::move(it->second);
    pending_.erase(it);
    p->complete(status);
}

void Replicator::on_peer_extents(const peer::Extents& extents) {
    if (link_ != LinkState::sync_source || awaiting_peer_extents_ == 0 ||
        extents.export_index >= exports_.size()) {
        if (session_) session_->close("peer sent EXTENTS out of turn");
        return;
    }
    auto& map = *parts_->maps[extents.export_index];
    std::uint64_t bytes = 0;
    for (const auto& [offset, length] : extents.ranges) {
        if (offset + length > map.export_size()) {
            if (session_) session_->close("peer sent EXTENTS beyond the export");
            return;
        }
        bytes += length;
        // Not waited for: if this node crashes now, the peer is still a crashed primary and
        // sends its extents again.
        (void)map.mark(offset, length, [](vmha::Status st) {
            if (!st) spdlog::error("recording the peer's extents failed: {}", st.error().message);
        });
    }
    spdlog::info("export \"{}\": the peer crashed as primary; its {} activity-log extent(s) ({} "
                 "bytes) join the resync",
                 exports_[extents.export_index]->info().name, extents.ranges.size(), bytes);
    if (--awaiting_peer_extents_ == 0) begin_resync();
}

void Replicator::on_resync_finished_by_source(Session& session, const peer::State& state) {
    if (state.current_generation != peer_generations_.current) {
        session.close(fmt::format("the resync source announced generation {} but handshook with {}",
                                  meta::format_generation(state.current_generation),
                                  meta::format_generation(peer_generations_.current)));
        return;
    }
    auto remaining = std::make_shared<std::size_t>(exports_.size());
    auto failed = std::make_shared<bool>(false);
    auto s = session_;
    const std::uint64_t epoch = target_epoch_;
    for (Export* e : exports_) {
        e->file().flush([this, s, remaining, failed, epoch](vmha::Status st) {
            if (!st) *failed = true;
            if (--*remaining != 0) return;
            if (*failed || session_ != s || link_ != LinkState::sync_target || epoch != target_epoch_) {
                if (*failed) {
                    spdlog::error("the resync finished but flushing the images failed: staying "
                                  "Inconsistent");
                }
                return;
            }
            meta::Generations source = peer_generations_;
            source.clear_bitmap_after_sync();
            meta_.finish_sync_target(source);
            if (!save_meta("resync finished (target)")) return;
            for (auto& extents : recovered_extents_) extents.clear();
            for (auto& log : parts_->logs) {
                (void)log->reset([](vmha::Status r) {
                    if (!r) spdlog::error("emptying the activity log failed: {}", r.error().message);
                });
            }
            fire(LinkEvent::resync_done, "the source sent every dirty range; data UpToDate");
        });
    }
}

// ---- Resync (source) ------------------------------------------------------------------------------

void Replicator::start_resync() {
    ++resync_epoch_;
    resync_export_ = 0;
    resync_cursor_ = 0;
    resync_in_flight_ = 0;
    resync_total_ = 0;
    resync_sent_ = 0;
    resync_started_ = Clock::now();
    resync_refilled_ = resync_started_;
    resync_budget_ = 0;
    for (const auto& map : parts_->maps) resync_total_ += map->dirty_bytes();
    spdlog::info("resync to node \"{}\": {} bytes to copy{}", peer_node_, resync_total_,
                 config_.resync_rate ? fmt::format(" at most {} bytes/s", config_.resync_rate) : "");
    pump_resync();
}

// The rate limit: a token bucket that holds at most one chunk's worth of bytes. Returns false
// (and arms a timer that pumps again) when the next `bytes` must wait.
bool Replicator::resync_yields() const {
    return config_.resync_min_rate > 0 &&
           Clock::now() - last_client_write_ < std::chrono::milliseconds(100);
}

// The resync's rate right now: --resync-rate, lowered to the minimum rate while the VM writes.
std::uint64_t Replicator::resync_rate_now() const {
    std::uint64_t rate = config_.resync_rate;
    if (resync_yields()) rate = rate == 0 ? config_.resync_min_rate : std::min(rate, config_.resync_min_rate);
    return rate;
}

bool Replicator::resync_may_send(std::uint64_t bytes) {
    const std::uint64_t rate = resync_rate_now();
    const auto now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - resync_refilled_).count();
    resync_refilled_ = now;
    if (rate == 0) return true;
    resync_budget_ = std::min(resync_budget_ + seconds * static_cast<double>(rate),
                              static_cast<double>(std::max<std::uint64_t>(bytes, kResyncChunkMax)));
    if (resync_budget_ >= static_cast<double>(bytes)) {
        resync_budget_ -= static_cast<double>(bytes);
        return true;
    }
    const double wait = (static_cast<double>(bytes) - resync_budget_) / static_cast<double>(rate);
    if (!resync_timer_) resync_timer_ = std::make_unique<asio::steady_timer>(io_);
    resync_timer_->expires_after(std::chrono::microseconds(static_cast<std::int64_t>(wait * 1e6) + 1));
    resync_timer_->async_wait([this](const boost::system::error_code& ec) {
        if (!ec) pump_resync();
    });
    return false;
}

vmha::Status Replicator::resync(bool full) {
    if (role_ != Role::primary) {
        return vmha::Error(vmha::errc::invalid_argument, "a resync is started on the primary");
    }
    if (link_ == LinkState::sync_source) {
        return vmha::Error(vmha::errc::busy, "a resync is already running");
    }
    if (link_ != LinkState::connected || !session_) {
        return vmha::Error(vmha::errc::busy,
                           fmt::format("a resync needs the peer connected; the link is {}",
                                       to_string(link_)));
    }
    if (full) {
        if (verify_) return vmha::Error(vmha::errc::busy, "a verify is running");
        fire(LinkEvent::resync_requested, "operator: full resync");
        session_->send(peer::Message{0, peer::State{wire_role(role_), 2, meta_.gen.current}});
        start_full_resync();
        return {};
    }
    std::uint64_t dirty = 0;
    for (const auto& map : parts_->maps) dirty += map->dirty_bytes();
    if (dirty == 0) return {};
    fire(LinkEvent::resync_requested, fmt::format("operator: resync {} dirty bytes", dirty));
    session_->send(peer::Message{0, peer::State{wire_role(role_), 2, meta_.gen.current}});
    start_resync();
    return {};
}

void Replicator::pump_resync() {
    while (link_ == LinkState::sync_source && session_ && !demoting_ &&
           resync_in_flight_ < (resync_yields() ? 1 : kResyncWindow) &&
           resync_export_ < exports_.size()) {
        auto& map = *parts_->maps[resync_export_];
        const auto range = map.next_dirty_range(resync_cursor_, kResyncChunkMax);
        if (!range) {
            ++resync_export_;
            resync_cursor_ = 0;
            continue;
        }
        if (!resync_may_send(range->length)) return;  // the timer pumps again
        resync_cursor_ = range->end();
        resync_sent_ += range->length;
        ++resync_in_flight_;
        const std::size_t index = resync_export_;
        Export* e = exports_[index];
        auto ticket = e->locks().enqueue(range->offset, range->length);
        auto session = session_;
        const std::uint64_t epoch = resync_epoch_;  // a chunk counts only for its own resync
        e->locks().when_granted(ticket, [this, e, index, ticket, r = *range, session, epoch] {
            auto buffer = scan_buffer(r.length);
            e->file().read(r.offset, buffer->span(),
                           [this, e, index, ticket, r, session, buffer, epoch](vmha::Status st) {
                auto release = [this, e, ticket, epoch] {
                    e->locks().release(ticket);
                    if (epoch == resync_epoch_ && resync_in_flight_ > 0) --resync_in_flight_;
                };
                if (!st || session_ != session || session->closed()) {
                    release();
                    if (!st && session_ == session) {
                        // Not silently stalled: the link restarts and the resync resumes.
                        session->close(fmt::format("resync: reading export \"{}\" failed: {}",
                                                   e->info().name, st.error().message));
                    }
                    return;
                }
                const std::uint64_t cookie = next_cookie_++;
                auto p = std::make_shared<Pending>();
                p->sent = Clock::now();
                p->complete = [this, index, r, buffer, release](std::optional<std::uint32_t> status) {
                    if (status && *status == 0) {
                        auto& copied = *parts_->maps[index];
                        copied.clear(r.offset, r.length);
                        bytes_resynced_ += r.length;
                        // Progress survives a crash of this node: the clears are committed
                        // every 4 MiB (a restarted resync resends about that much at most).
                        if ((resync_unflushed_ += r.length) >= (4u << 20)) {
                            resync_unflushed_ = 0;
                            (void)copied.flush([](vmha::Status committed) {
                                if (!committed) {
                                    spdlog::error("committing resync progress failed: {}",
                                                  committed.error().message);
                                }
                            });
                        }
                    }
                    release();
                    if (status && *status == 0) {
                        pump_resync();
                    } else if (status && session_) {
                        session_->close(fmt::format("the peer failed to write resync data at offset "
                                                    "{} of export \"{}\": {}",
                                                    r.offset, exports_[index]->info().name,
                                                    vmha::errc_name(static_cast<vmha::errc>(*status))));
                    }
                };
                pending_.emplace(cookie, std::move(p));
                const peer::Range wire{static_cast<std::uint32_t>(index), r.offset,
                                       static_cast<std::uint32_t>(r.length)};
                if (all_zero(buffer->span())) {
                    session->send(peer::Message{cookie, peer::ResyncZeroes{wire}});
                } else {
                    peer::Message m{cookie, peer::ResyncData{wire, buffer->span()}};
                    session->send(m);
                }
            }, ImageFile::Cache::bypass);
        });
    }
    if (link_ == LinkState::sync_source && resync_in_flight_ == 0 && resync_export_ >= exports_.size()) {
        // Another pass if writes during the resync failed to replicate and were recorded dirty.
        std::uint64_t left = 0;
        for (const auto& map : parts_->maps) left += map->dirty_bytes();
        if (left > 0) {
            resync_export_ = 0;
            resync_cursor_ = 0;
            pump_resync();
            return;
        }
        finish_resync_source();
    }
}

void Replicator::finish_resync_source() {
    auto session = session_;
    // Persist the cleared dirty maps, then the generations, then tell the peer.
    auto remaining = std::make_shared<std::size_t>(parts_->maps.size());
    auto finish = [this, session, remaining](vmha::Status st) {
        if (!st) spdlog::error("persisting the cleared dirty map failed: {}", st.error().message);
        if (--*remaining != 0) return;
        if (session_ != session || link_ != LinkState::sync_source) return;
        meta_.finish_sync_source();
        if (!save_meta("resync finished (source)")) return;
        session->send(peer::Message{0, peer::State{wire_role(role_), 1, meta_.gen.current}});
        peer_data_state_ = meta::DataState::UpToDate;
        fire(LinkEvent::resync_done, fmt::format("copied {} bytes to node \"{}\"", resync_total_, peer_node_));
    };
    for (auto& map : parts_->maps) (void)map->flush(finish);  // calls `finish` exactly once
}

// ---- Online verify -------------------------------------------------------------------------------

void Replicator::answer_checksums(Session& session, std::uint64_t cookie,
                                  const peer::ChecksumRequest& request) {
    auto s = session_;
    auto reply_error = [&](vmha::errc code) {
        session.send(peer::Message{cookie, peer::ChecksumReply{request.export_index, request.offset, {},
                                                               static_cast<std::uint32_t>(code)}});
    };
    if (request.export_index >= exports_.size()) {
        reply_error(vmha::errc::invalid_argument);
        return;
    }
    Export* e = exports_[request.export_index];
    const std::uint64_t size = e->info().size;
    if (request.offset >= size) {
        reply_error(vmha::errc::invalid_argument);
        return;
    }
    const std::uint64_t want = std::uint64_t{request.count} * request.chunk_size;
    const std::uint64_t length = std::min(want, size - request.offset);
    if ((length + request.chunk_size - 1) / request.chunk_size != request.count) {
        reply_error(vmha::errc::invalid_argument);
        return;
    }
    // In arrival order after the replicated writes received before it: the same bytes the
    // primary read under its own lock.
    auto ticket = e->locks().enqueue(request.offset, length);
    e->locks().when_granted(ticket, [e, ticket, s, cookie, request, length] {
        auto buffer = scan_buffer(length);
        e->file().read(request.offset, buffer->span(),
                       [e, ticket, s, cookie, request, buffer](vmha::Status st) {
            e->locks().release(ticket);
            peer::ChecksumReply reply{request.export_index, request.offset, {}, 0};
            if (st) {
                reply.checksums = chunk_checksums(buffer->span(), request.chunk_size);
            } else {
                reply.status = static_cast<std::uint32_t>(vmha::errc::io_error);
            }
            s->send(peer::Message{cookie, std::move(reply)});
        }, ImageFile::Cache::bypass);
    });
}

void Replicator::begin_resync() {
    if (full_resync_pending_) {
        full_resync_pending_ = false;
        start_full_resync();
    } else {
        start_resync();
    }
}

bool Replicator::images_empty() const {
    for (Export* e : exports_) {
        auto map = e->file().allocation(0, e->info().size, 2);
        if (!map || map->empty() || !map->front().hole || map->front().length < e->info().size) return false;
    }
    return true;
}

void Replicator::start_full_resync() {
    // Only the handshake's fresh word counts: later full resyncs always compare.
    if (std::exchange(peer_images_empty_, false)) {
        // A new peer whose images are all holes: nothing to compare, and its holes already read
        // as zeroes. Only our data extents travel.
        std::uint64_t bytes = 0;
        for (std::size_t i = 0; i < exports_.size(); ++i) {
            Export* e = exports_[i];
            std::uint64_t offset = 0;
            while (offset < e->info().size) {
                auto map = e->file().allocation(offset, e->info().size - offset, 1024);
                if (!map || map->empty()) {  // cannot tell: copy the rest
                    (void)parts_->maps[i]->mark(offset, e->info().size - offset, [](vmha::Status) {});
                    bytes += e->info().size - offset;
                    break;
                }
                const std::uint64_t before = offset;
                for (const auto& extent : *map) {
                    if (!extent.hole && extent.length > 0) {
                        (void)parts_->maps[i]->mark(offset, extent.length, [](vmha::Status st) {
                            if (!st) spdlog::error("recording a full resync failed: {}", st.error().message);
                        });
                        bytes += extent.length;
                    }
                    offset += extent.length;
                }
                if (offset == before) {  // no progress: copy the rest rather than loop
                    (void)parts_->maps[i]->mark(offset, e->info().size - offset, [](vmha::Status) {});
                    bytes += e->info().size - offset;
                    break;
                }
            }
        }
        spdlog::info("full resync to node \"{}\": its images are empty; copying the {} bytes of "
                     "data extents only",
                     peer_node_, bytes);
        start_resync();
        return;
    }
    if (verify_) {  // an operator's verify loses to the resync
        finish_verify(vmha::Error(vmha::errc::busy, "a full resync started"));
    }
    verify_ = std::make_unique<VerifyRun>();
    verify_->id = ++verify_runs_;
    verify_->session = session_;
    verify_->mark = true;
    verify_->for_resync = true;
    verify_->done = [](vmha::Result<nlohmann::json>) {};
    verify_->differing.resize(exports_.size());
    std::uint64_t total = 0;
    for (const Export* e : exports_) total += e->info().size;
    spdlog::info("full resync to node \"{}\": comparing {} bytes by checksum first", peer_node_, total);
    pump_verify();
}

void Replicator::verify(bool mark, std::function<void(vmha::Result<nlohmann::json>)> done) {
    if (role_ != Role::primary) {
        done(vmha::Error(vmha::errc::invalid_argument, "verify runs on the primary"));
        return;
    }
    if (link_ != LinkState::connected || !session_) {
        done(vmha::Error(vmha::errc::busy,
                         fmt::format("verify needs the pair connected and in sync; the link is {}",
                                     to_string(link_))));
        return;
    }
    if (verify_) {
        done(vmha::Error(vmha::errc::busy, "a verify is already running"));
        return;
    }
    verify_ = std::make_unique<VerifyRun>();
    verify_->id = ++verify_runs_;
    verify_->session = session_;
    verify_->mark = mark;
    verify_->done = std::move(done);
    verify_->differing.resize(exports_.size());
    spdlog::info("verify started{}", mark ? " (differences will be resynced)" : "");
    pump_verify();
}

void Replicator::pump_verify() {
    VerifyRun& v = *verify_;
    while (!v.failure && !demoting_ && v.in_flight < kVerifyWindow && v.export_index < exports_.size()) {
        Export* e = exports_[v.export_index];
        const std::uint64_t size = e->info().size;
        if (v.cursor >= size) {
            ++v.export_index;
            v.cursor = 0;
            continue;
        }
        const std::uint32_t chunk = config_.chunk_size;
        const std::uint64_t offset = v.cursor;
        const std::uint64_t length = std::min<std::uint64_t>(std::uint64_t{kVerifyBatchChunks} * chunk, size - offset);
        const auto count = static_cast<std::uint32_t>((length + chunk - 1) / chunk);
        const std::size_t index = v.export_index;
        v.cursor += length;
        ++v.in_flight;
        // The range lock: writes in flight there finish (on both sides) first, new ones wait.
        auto ticket = e->locks().enqueue(offset, length);
        auto session = session_;
        VerifyRun* run = &v;  // valid while verify_ holds the run with this id
        const std::uint64_t run_id = v.id;
        e->locks().when_granted(ticket, [this, e, ticket, index, offset, length, count, chunk, session, run, run_id] {
            const bool current = verify_ && verify_->id == run_id;
            if (current && run->for_resync && session_ == session) {
                // A hole on the source: the copy sends zeroes (RESYNC_ZEROES) without reading the
                // peer; no checksum pass for sparse space.
                auto map = e->file().allocation(offset, length, 1);
                if (map && map->size() == 1 && map->front().hole && map->front().length >= length) {
                    verify_->differing[index].emplace_back(offset, length);
                    verify_->compared += length;
                    e->locks().release(ticket);
                    --verify_->in_flight;
                    pump_verify();
                    return;
                }
            }
            auto buffer = scan_buffer(length);
            e->file().read(offset, buffer->span(),
                           [this, e, ticket, index, offset, length, count, chunk, session, buffer, run, run_id](vmha::Status st) {
                auto finish_batch = [this, e, ticket, run, run_id](std::optional<vmha::Error> error) {
                    e->locks().release(ticket);
                    if (!verify_ || verify_->id != run_id) return;  // that run ended
                    (void)run;
                    if (error && !verify_->failure) verify_->failure = std::move(error);
                    --verify_->in_flight;
                    pump_verify();
                };
                if (!st) {
                    finish_batch(st.error());
                    return;
                }
                if (session_ != session || session->closed()) {
                    finish_batch(vmha::Error(vmha::errc::connection_lost, "the link to the peer broke during verify"));
                    return;
                }
                auto local = std::make_shared<std::vector<std::uint64_t>>(chunk_checksums(buffer->span(), chunk));
                const std::uint64_t cookie = next_cookie_++;
                auto p = std::make_shared<Pending>();
                p->sent = Clock::now();
                p->complete = [finish_batch](std::optional<std::uint32_t>) {
                    finish_batch(vmha::Error(vmha::errc::connection_lost, "the link to the peer broke during verify"));
                };
                p->on_checksums = [this, finish_batch, local, index, offset, length, chunk, run_id](const peer::ChecksumReply& reply) {
                    if (reply.status != 0 || reply.checksums.size() != local->size() || reply.offset != offset ||
                        reply.export_index != index) {
                        finish_batch(vmha::Error(vmha::errc::io_error,
                                                 fmt::format("the peer could not checksum export \"{}\" at "
                                                             "offset {}: {}",
                                                             exports_[index]->info().name, offset,
                                                             reply.status ? vmha::errc_name(static_cast<vmha::errc>(reply.status))
                                                                          : "malformed reply")));
                        return;
                    }
                    if (verify_ && verify_->id == run_id) {
                        for (std::size_t i = 0; i < local->size(); ++i) {
                            if ((*local)[i] == reply.checksums[i]) continue;
                            const std::uint64_t at = offset + i * chunk;
                            verify_->differing[index].emplace_back(at, std::min<std::uint64_t>(chunk, offset + length - at));
                        }
                        verify_->compared += length;
                    }
                    finish_batch(std::nullopt);
                };
                pending_.emplace(cookie, std::move(p));
                session->send(peer::Message{cookie, peer::ChecksumRequest{static_cast<std::uint32_t>(index), chunk, offset, count}});
            }, ImageFile::Cache::bypass);
        });
    }
    if (v.in_flight == 0 && (v.failure || v.export_index >= exports_.size())) {
        finish_verify(v.failure);
    }
}

void Replicator::finish_verify(std::optional<vmha::Error> error) {
    auto run = std::move(verify_);
    if (error) {
        spdlog::error("{} failed: {}", run->for_resync ? "the full resync's compare pass" : "verify",
                      error->message);
        if (run->for_resync) {
            // Whatever was not compared may differ: copy everything, over a fresh link.
            for (auto& map : parts_->maps) {
                (void)map->mark_all([](vmha::Status st) {
                    if (!st) spdlog::error("recording a full resync failed: {}", st.error().message);
                });
            }
            if (session_ && session_ == run->session) session_->close("the compare pass failed");
        }
        run->done(std::move(*error));
        return;
    }
    nlohmann::json ranges = nlohmann::json::array();
    std::uint64_t differing = 0;
    for (std::size_t i = 0; i < run->differing.size(); ++i) {
        auto& list = run->differing[i];
        std::sort(list.begin(), list.end());
        // Coalesce adjacent chunks for the report.
        std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;
        for (const auto& r : list) {
            if (!merged.empty() && merged.back().first + merged.back().second == r.first) {
                merged.back().second += r.second;
            } else {
                merged.push_back(r);
            }
            differing += r.second;
        }
        for (const auto& [offset, length] : merged) {
            ranges.push_back({{"export", exports_[i]->info().name}, {"offset", offset}, {"length", length}});
            if (run->mark) {
                (void)parts_->maps[i]->mark(offset, length, [](vmha::Status st) {
                    if (!st) spdlog::error("recording a differing range failed: {}", st.error().message);
                });
            }
        }
    }
    spdlog::info("{} finished: {} bytes compared, {} bytes differ in {} range(s)",
                 run->for_resync ? "the full resync's compare pass" : "verify", run->compared,
                 differing, ranges.size());
    if (run->for_resync) {
        // The differing chunks are marked; copy them now, or after the next handshake.
        if (link_ == LinkState::sync_source && session_ && session_ == run->session) start_resync();
        return;
    }
    nlohmann::json report = {{"compared_bytes", run->compared},
                             {"differing_bytes", differing},
                             {"ranges", ranges},
                             {"marked", run->mark && differing > 0}};
    if (run->mark && differing > 0 && link_ == LinkState::connected && session_) {
        fire(LinkEvent::resync_requested, fmt::format("verify found {} bytes that differ", differing));
        session_->send(peer::Message{0, peer::State{wire_role(role_), 2, meta_.gen.current}});
        start_resync();
    }
    run->done(std::move(report));
}

// ---- Operator commands ---------------------------------------------------------------------------

vmha::Status Replicator::promote(bool force) {
    if (force && split_brain_ && !split_brain_->kept_here) {
        // The operator keeps this copy: the peer's line of history becomes one this copy
        // supersedes, so the next handshake makes the peer the full resync target (rules 80/60)
        // and discards what it wrote alone. Durable, like every generation change.
        const std::uint64_t peer_current = peer_generations_.current;
        const meta::Generations before = meta_.gen;
        meta_.gen.push_history(peer_current);
        if (auto s = save_meta("keep this copy in a split brain"); !s) {
            meta_.gen = before;
            return s;
        }
        split_brain_->kept_here = true;
        spdlog::warn("split brain with node \"{}\": the operator keeps this copy; at the next "
                     "connection the copy on {} (generation {}, {} changed there) is discarded and "
                     "becomes a full resync target",
                     split_brain_->peer_node, split_brain_->peer_node,
                     meta::format_generation(peer_current),
                     split_brain_->peer_changed_bytes
                         ? vmha::human_bytes(*split_brain_->peer_changed_bytes)
                         : std::string("an unknown amount"));
    }
    if (role_ == Role::primary) return {};
    if (session_ && session_->handshaken()) {
        return vmha::Error(vmha::errc::busy,
                           fmt::format("node \"{}\" is connected as primary; demote it first",
                                       peer_node_));
    }
    if (meta_.data_state != meta::DataState::UpToDate) {
        if (!force) {
            return vmha::Error(vmha::errc::not_up_to_date,
                               fmt::format("the data here is {}; promoting it would lose "
                                           "acknowledged writes (use --force to discard them)",
                                           meta::to_string(meta_.data_state)));
        }
        spdlog::warn("forced promotion of {} data: the peer's newer writes will be discarded at "
                     "the next resync",
                     meta::to_string(meta_.data_state));
        meta_.data_state = meta::DataState::UpToDate;
        meta_.resync = meta::ResyncKind::none;
        meta_.gen.new_generation_when_alone(meta::fresh_generation_id());
    }
    stop_connecting();
    if (session_) session_->close("promoted to primary");
    role_ = Role::primary;
    meta_.promote();
    if (auto s = save_meta("promote"); !s) {
        role_ = Role::secondary;
        return s;
    }
    for (Export* e : exports_) e->set_read_only(false);
    spdlog::info("promoted to primary");
    link_ = LinkState::standalone;
    fire(LinkEvent::connect_command, "promoted: dialing the peer");
    start_connecting();
    return {};
}

void Replicator::demote(std::function<void(vmha::Status)> done) {
    if (role_ == Role::secondary) {
        done({});
        return;
    }
    for (Export* e : exports_) e->set_read_only(true);  // new writes get EPERM
    demoting_ = true;  // and the resync takes no new range
    // Writes whose replies wait for fencing were never acknowledged: they fail, so that nothing
    // this copy alone holds is ever reported written (the peer may take the VM over).
    fail_fenced("demoted while the write waited for the peer to be fenced");
    auto self_check = std::make_shared<std::function<void()>>();
    auto timer = std::make_shared<asio::steady_timer>(io_);
    auto started = Clock::now();
    *self_check = [this, done = std::move(done), self_check, timer, started]() mutable {
        std::size_t held = 0;
        for (Export* e : exports_) held += e->locks().size();
        const bool drained = held == 0 && std::all_of(pending_.begin(), pending_.end(),
                                                      [](const auto& kv) { return kv.second->is_ping; });
        if (!drained) {
            if (Clock::now() - started > std::chrono::seconds(60)) {
                for (Export* e : exports_) e->set_read_only(false);
                demoting_ = false;
                pump_resync();
                if (verify_) pump_verify();
                done(vmha::Error(vmha::errc::timeout, "writes in flight did not drain within 60 s; "
                                                      "still primary"));
                return;
            }
            timer->expires_after(std::chrono::milliseconds(5));
            timer->async_wait([self_check](const error_code& ec) {
                if (!ec) (*self_check)();
            });
            return;
        }
        // Flush here and, if linked, on the peer; then become secondary.
        auto remaining = std::make_shared<std::size_t>(2 * exports_.size());
        for (std::size_t i = 0; i < 2 * exports_.size(); ++i) {
            WriteOp flush{WriteOp::Kind::flush, 0, 0, {}, false};
            auto step = [this, remaining, done](vmha::Status st) mutable {
                if (!st) spdlog::error("flush while demoting failed: {}", st.error().message);
                if (--*remaining != 0) return;
                stop_connecting();
                if (session_) session_->close("demoted to secondary");
                role_ = Role::secondary;
                meta_.demote_cleanly();
                auto saved = save_meta("demote");
                spdlog::info("demoted to secondary");
                link_ = LinkState::standalone;
                fire(LinkEvent::connect_command, "demoted: waiting for a primary");
                demoting_ = false;
                start_connecting();
                done(std::move(saved));
            };
            if (i < exports_.size()) {
                exports_[i]->file().flush(std::move(step));  // the local image
            } else {
                replicate(i - exports_.size(), flush, std::move(step));  // the peer (if linked)
            }
        }
    };
    (*self_check)();
}

vmha::Status Replicator::outdate() {
    if (role_ != Role::secondary) {
        return vmha::Error(vmha::errc::busy,
                           "this node is primary; only a secondary's data can be marked Outdated");
    }
    if (session_ && session_->handshaken()) {
        return vmha::Error(vmha::errc::busy,
                           fmt::format("primary \"{}\" is connected; the handshake decides which "
                                       "copy is newer, not outdate",
                                       peer_node_));
    }
    const meta::DataState before = meta_.data_state;
    meta_.mark_outdated();
    if (meta_.data_state == before) {
        spdlog::info("outdate: the data here is {} already", meta::to_string(before));
        return {};
    }
    if (auto s = save_meta("outdate"); !s) {
        meta_.data_state = before;
        return s;
    }
    spdlog::info("data marked Outdated (was {}): the peer went on without this node",
                 meta::to_string(before));
    return {};
}

void Replicator::connect() {
    if (link_ != LinkState::standalone) return;
    fire(LinkEvent::connect_command, "operator: connect");
    stop_connecting();  // a secondary may still listen after a split brain
    start_connecting();
}

void Replicator::disconnect() {
    if (link_ == LinkState::standalone) {
        stop_connecting();  // a secondary may still listen after a split brain
        return;
    }
    fire(LinkEvent::disconnect_command, "operator: disconnect");
    stop_connecting();
    if (session_) session_->close("operator: disconnect");
}

void Replicator::stop(std::function<void()> done) {
    stopping_ = true;
    stop_connecting();
    auto finish = [this, done = std::move(done)]() mutable { clean_shutdown(std::move(done)); };
    if (!session_) {
        finish();
        return;
    }
    stop_done_ = std::move(finish);
    session_->close("imagesyncd is stopping");
}

// No write is in flight any more: the activity logs can be emptied and the shutdown recorded as
// clean, so the next start does not take this node for a crashed primary.
void Replicator::clean_shutdown(std::function<void()> done) {
    if (applying_ > 0) {  // a secondary's replicated operations must reach the disk first
        auto timer = std::make_shared<asio::steady_timer>(io_);
        timer->expires_after(std::chrono::milliseconds(5));
        timer->async_wait([this, timer, done = std::move(done)](const boost::system::error_code&) mutable {
            clean_shutdown(std::move(done));
        });
        return;
    }
    if (role_ != Role::primary) {
        done();
        return;
    }
    auto remaining = std::make_shared<std::size_t>(parts_->logs.size() + parts_->maps.size());
    auto failed = std::make_shared<bool>(false);
    auto step = [this, remaining, failed, done = std::move(done)](vmha::Status st) mutable {
        if (!st) {
            *failed = true;
            spdlog::error("clean shutdown: {}", st.error().message);
        }
        if (--*remaining != 0) return;
        if (!*failed) {
            meta_.demote_cleanly();
            (void)save_meta("clean shutdown");
        }
        done();
    };
    auto shared = std::make_shared<decltype(step)>(std::move(step));
    auto call = [shared](vmha::Status st) { (*shared)(std::move(st)); };
    // Each calls `call` exactly once, now or later.
    for (auto& map : parts_->maps) (void)map->flush(call);
    for (auto& log : parts_->logs) (void)log->reset(call);
}

nlohmann::json Replicator::status() const {
    std::uint64_t dirty = 0;
    nlohmann::json exports = nlohmann::json::array();
    for (std::size_t i = 0; i < exports_.size(); ++i) {
        const auto d = parts_->maps[i]->dirty_bytes();
        dirty += d;
        exports.push_back({{"name", exports_[i]->info().name},
                           {"size", exports_[i]->info().size},
                           {"dirty_bytes", d}});
    }
    std::size_t in_flight = 0;
    for (const auto& [cookie, p] : pending_) in_flight += p->is_ping ? 0u : 1u;
    nlohmann::json history = nlohmann::json::array();
    for (const auto h : meta_.gen.history) {
        if (h != meta::kNoGeneration) history.push_back(meta::format_generation(h));
    }
    nlohmann::json j = {
        {"module", config_.module},
        {"node", config_.node},
        {"role", std::string(role_name(role_))},
        {"connection", std::string(to_string(link_))},
        {"connection_reason", link_reason_},
        {"tcp_congestion", session_ && !session_->closed() && !session_->congestion().empty()
                               ? nlohmann::json(session_->congestion())
                               : nlohmann::json(nullptr)},
        {"data_state", std::string(meta::to_string(meta_.data_state))},
        {"peer_data_state", std::string(meta::to_string(peer_data_state_))},
        {"peer_node", peer_node_},
        {"dirty_bytes", dirty},
        {"in_flight", in_flight},
        {"bytes_replicated", bytes_replicated_},
        {"bytes_sent_zero_copy", bytes_sent_zero_copy_},
        {"bytes_resynced", bytes_resynced_},
        {"writes_recorded_dirty", writes_recorded_dirty_},
        {"crashed_primary", meta_.crashed_primary},
        {"fencing", fencing_},
        {"fenced_replies", fenced_.size()},
        {"write_lease_ms_left",
         write_deadline_ ? nlohmann::json(std::max<std::int64_t>(
                               0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                      *write_deadline_ - std::chrono::steady_clock::now())
                                      .count()))
                         : nlohmann::json(nullptr)},
        {"generations",
         {{"current", meta::format_generation(meta_.gen.current)},
          {"bitmap", meta::format_generation(meta_.gen.bitmap)},
          {"history", history}}},
        {"exports", exports},
    };
    j["split_brain_policy"] = std::string(to_string(config_.split_brain));
    if (split_brain_) {
        const auto& r = *split_brain_;
        j["split_brain"] = {{"peer_node", r.peer_node},
                            {"local_changed_bytes", r.local_changed_bytes},
                            {"peer_changed_bytes", r.peer_changed_bytes ? nlohmann::json(*r.peer_changed_bytes)
                                                                        : nlohmann::json(nullptr)},
                            {"since_generation", meta::format_generation(r.since_generation)},
                            {"kept_here", r.kept_here}};
    }
    if (verify_) {
        j["verify"] = {{"compared_bytes", verify_->compared}, {"full_resync_compare", verify_->for_resync}};
    }
    if (link_ == LinkState::sync_source) {
        const double seconds =
            std::max(1e-3, std::chrono::duration<double>(Clock::now() - resync_started_).count());
        const double rate = static_cast<double>(resync_sent_) / seconds;
        j["resync"] = {{"total_bytes", resync_total_},
                       {"left_bytes", dirty},
                       {"done_bytes", resync_total_ > dirty ? resync_total_ - dirty : 0},
                       {"rate_bytes_per_second", static_cast<std::uint64_t>(rate)},
                       {"eta_seconds", rate > 0 ? static_cast<std::uint64_t>(static_cast<double>(dirty) / rate) : 0},
                       {"rate_limit_bytes_per_second", config_.resync_rate},
                       {"yielding_to_client_writes", resync_yields()},
                       {"rate_now_bytes_per_second", resync_rate_now()}};
    }
    return j;
}

}  // namespace imagesync::replication
